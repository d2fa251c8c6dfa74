import pytest

from mssr.errors import ConfigError
from mssr.scoring import exact_match, get_scorer, multiple_choice, rouge_l, token_f1


def test_exact_match_normalises_case_punctuation_articles():
    assert exact_match("The Answer.", "answer") == 1.0
    assert exact_match("42", "43") == 0.0


def test_exact_match_keeps_a_numbers_sign_and_decimal_point():
    assert exact_match("-2", "2") == 0.0
    assert exact_match("x = -2.", "x -2") == 1.0
    assert exact_match("3.5", "35") == 0.0
    assert exact_match("3.5.", "3.5") == 1.0
    assert exact_match("5-3", "5 3") == 1.0  # a hyphen between words is punctuation


def test_multiple_choice_compares_option_letters():
    assert multiple_choice("(B) because...", "B") == 1.0
    assert multiple_choice("A", "B") == 0.0


def test_token_f1_partial_overlap():
    assert token_f1("red green blue", "red blue") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert token_f1("x", "y") == 0.0


def test_rouge_l_uses_longest_common_subsequence():
    # LCS("a b c d", "a c d") = 3 -> P=3/4 R=1; articles dropped by normalise: use other words
    assert rouge_l("w x y z", "w y z") == pytest.approx(2 * 0.75 * 1 / 1.75)
    assert rouge_l("same words", "same words") == 1.0


def test_unknown_scorer_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'exact_match'"):
        get_scorer("exact_mach")
