"""A user's scorer, loaded by import path in the tests, that refuses rows it cannot score."""

from mssr.errors import DataError


def whole_numbers(prediction: str, reference: str) -> float:
    """1 when the prediction is the reference whole number; a reference that is not one is the
    user's data error, reported as such."""
    if not reference.strip().lstrip("-").isdigit():
        raise DataError(f"whole_numbers: the reference answer {reference!r} is not a whole number")
    return float(prediction.strip() == reference.strip())
