"""Shared by the tests of the pretrained models: where the fixtures made with transformers and timm are, and the
error measure their logits are compared with."""

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / 'data' / 'pretrained'


def relative_error(got, expected) -> float:
    """max |got - expected| / max |expected|."""
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / np.abs(expected).max())
