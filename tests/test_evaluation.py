"""Forced and generated exact match: the same verdict on constructed cases.

The model is a one-layer Llama whose attention and MLP write nothing, so its next token
depends only on the current one (a bigram table we set): what greedy decoding outputs is
known exactly, and both scoring modes run on a real transformers model (``generate`` included).
"""

import pytest
import torch

from mssr.evaluation import EvalResult, eval_mode_for, evaluate_examples, forced_pass
from mssr.tasks import Example
from mssr.tokenize import PromptEncoder

WORDS = ["<pad>", "<eos>", "[UNK]", "Question", ":", "Answer", "what", "P", "Q", "R", "p", "x"]


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>", unk_token="[UNK]")


def _bigram_model(chain: dict[str, str]):
    """Greedy decoding follows ``chain`` (token -> next token) from the prompt's last token ":"."""
    from transformers import LlamaConfig, LlamaForCausalLM

    v = len(WORDS)
    cfg = LlamaConfig(
        vocab_size=v,
        hidden_size=v,
        intermediate_size=4,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=v,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # attention and MLP output nothing: the residual stream is the token's embedding
        model.model.embed_tokens.weight.copy_(torch.eye(v) * 10)
        for norm in (
            model.model.norm,
            model.model.layers[0].input_layernorm,
            model.model.layers[0].post_attention_layernorm,
        ):
            norm.weight.fill_(1.0)
        for a, b in chain.items():
            model.lm_head.weight[WORDS.index(b), WORDS.index(a)] = 10.0
    return model.eval()


def _both(chain, reference, prompts=("what",)):
    tok = _tokenizer()
    encoder = PromptEncoder(tok, prompt_format="plain")
    model = _bigram_model(chain)
    examples = [Example(p, reference) for p in prompts]
    forced = evaluate_examples(model, encoder, examples, "exact_match", "forced", max_new_tokens=6, batch_size=4)
    generated = evaluate_examples(model, encoder, examples, "exact_match", "generate", max_new_tokens=6, batch_size=4)
    return forced, generated


@pytest.mark.parametrize(
    "chain,reference,expected",
    [
        ({":": "P", "P": "Q", "Q": "<eos>"}, "P Q", 1.0),  # the answer, then the end marker
        ({":": "P", "P": "Q", "Q": "R", "R": "<eos>"}, "P Q", 0.0),  # the answer, then other text
        ({":": "P", "P": "<eos>"}, "P Q", 0.0),  # a shorter prefix of the answer
        ({":": "P", "P": "Q", "Q": "x"}, "P Q", 0.0),  # the answer, never ending (cut at max_new_tokens)
        ({":": "Q", "Q": "<eos>"}, "P Q", 0.0),  # a wrong first token
    ],
)
def test_forced_and_generated_exact_match_agree(chain, reference, expected):
    forced, generated = _both(chain, reference, prompts=("what", "what what", "x"))
    assert forced.scores == generated.scores == [expected] * 3


def test_case_is_a_documented_disagreement():
    """Generation is scored after normalisation (case, punctuation, articles); forced scoring
    wants the reference's own tokens: the model answering "p" to the reference "P" counts
    for generation only."""
    forced, generated = _both({":": "p", "p": "<eos>"}, "P")
    assert generated.scores == [1.0] and forced.scores == [0.0]


def test_the_answer_loss_is_that_of_the_forced_pass_in_both_modes():
    forced, generated = _both({":": "P", "P": "Q", "Q": "<eos>"}, "P Q")
    assert forced.losses == pytest.approx(generated.losses)
    assert forced.losses[0] < 0.01  # the bigram puts nearly all its mass on the answer's tokens
    wrong, _ = _both({":": "Q", "Q": "<eos>"}, "P Q")
    assert wrong.losses[0] > 5.0
    assert generated.tokens > forced.tokens  # generation also pays for its decoding


def test_rows_come_back_in_their_order_whatever_the_length_batches():
    tok = _tokenizer()
    encoder = PromptEncoder(tok, prompt_format="plain")
    model = _bigram_model({":": "P", "P": "<eos>"})
    prompts = ["what", "what what what what", "x", "what x what", "what what"]
    refs = ["P", "Q", "P", "R", "P"]
    examples = [Example(p, r) for p, r in zip(prompts, refs)]
    for batch_size in (1, 2, 5):
        correct, losses, tokens = forced_pass(model, encoder, examples, batch_size)
        assert correct == [True, False, True, False, True]
        generated = evaluate_examples(model, encoder, examples, "exact_match", "generate", 4, batch_size)
        assert generated.scores == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_mode_follows_the_scorer():
    assert eval_mode_for("exact_match", "forced") == "forced"
    assert eval_mode_for("token_f1", "forced") == "generate"  # a free-text scorer needs the text
    assert eval_mode_for("exact_match", "generate") == "generate"
    assert evaluate_examples(None, None, [], "exact_match", "forced", 4, 4) == EvalResult([], [], 0)


def test_forced_pass_equals_a_full_forward_over_every_position():
    """The pass keeps logits from the shortest prompt's last token on; every row's loss and
    verdict must equal those of a full forward of the row alone."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from mssr.losses import answer_reproduced, per_sample_loss
    from mssr.tokenize import collate

    torch.manual_seed(0)
    v = len(WORDS)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=v,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=0,
            eos_token_id=1,
        )
    ).eval()
    encoder = PromptEncoder(_tokenizer(), prompt_format="plain")
    examples = [
        Example("what", "P Q"),
        Example("what what what x", "R"),
        Example("x x", "P"),
        Example("what x what x what x", "Q R P"),
    ]
    correct, losses, _ = forced_pass(model, encoder, examples, batch_size=4)
    for i, e in enumerate(examples):
        enc = encoder.encode_many([e.prompt], [e.answer])
        b = collate(enc["input_ids"], enc["prompt_len"], 0)
        with torch.no_grad():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        assert losses[i] == pytest.approx(per_sample_loss(logits, b["labels"]).item(), rel=1e-5)
        assert correct[i] == bool(answer_reproduced(logits, b["labels"]).item())
