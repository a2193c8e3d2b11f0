"""The 8x8 handwritten digits of scikit-learn (shipped with it, no download), split for the digits examples."""

from typing import Tuple

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

__all__ = ['digits_split', 'batches']


def digits_split(test_size: float = 0.2, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y): images (N, 1, 8, 8) float32 in [0, 1], labels (N,) int32 in 0..9.

    A stratified split (same class proportions in both parts) fixed by `seed`: 1437 train / 360 test images
    for test_size=0.2."""
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16)[:, None]  # pixel values 0..16 -> [0, 1], NCHW
    labels = digits.target.astype(np.int32)
    train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=test_size, random_state=seed,
                                                        stratify=labels)
    return train_x, train_y, test_x, test_y


def batches(n: int, batch: int, rng: np.random.Generator):
    """Index arrays of one epoch: a random permutation of range(n) cut into full batches (the rest is dropped)."""
    order = rng.permutation(n)
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]
