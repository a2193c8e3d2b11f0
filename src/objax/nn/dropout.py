"""Dropout: zeroes entries at random while training and rescales the kept ones."""

import math
import numbers
from typing import Optional

import jax.numpy as jn

from objax import random
from objax.module import Module
from objax.nn._format import layer_repr
from objax.typing import JaxArray

__all__ = ['Dropout']


def _check_keep(keep, name: str):
    if isinstance(keep, numbers.Real) and (math.isnan(keep) or keep < 0):
        raise ValueError(f'Dropout: {name} (probability of keeping an entry) must be a number >= 0, got {keep!r}')


class Dropout(Module):
    """While training, keeps each entry of x with probability `keep` and divides it by `keep` (others are 0);
    identity otherwise. keep >= 1 keeps everything, keep = 0 drops everything. Its random keys come from
    `generator`, whose key is one of its vars()."""

    def __init__(self, keep: float, generator: random.Generator = random.DEFAULT_GENERATOR):
        """Stores the keep probability and the random generator.

        Args:
            keep: probability of keeping an entry while training, a number >= 0 (>= 1 keeps all entries).
            generator: source of the random masks; defaults to objax.random.DEFAULT_GENERATOR.

        Raises:
            ValueError: keep is a negative number or NaN.
            TypeError: generator is not an objax.random.Generator.
        """
        _check_keep(keep, 'keep')
        if not isinstance(generator, random.Generator):
            raise TypeError(f'Dropout: generator must be an objax.random.Generator, got {type(generator).__name__}')
        self.keep = keep
        self.keygen = generator

    def __call__(self, x: JaxArray, training: bool, dropout_keep: Optional[float] = None) -> JaxArray:
        """x with dropped entries (same shape) when training.

        Args:
            x: the input, any shape.
            training: drop entries only when True.
            dropout_keep: the keep probability of this call; None or 0 uses the layer's `keep`.

        Returns:
            An array of x's shape: each entry x / keep with probability keep, else 0.
        """
        if not training:
            return x
        keep = dropout_keep if _given(dropout_keep) else self.keep
        _check_keep(keep, 'dropout_keep')
        if isinstance(keep, numbers.Real) and keep >= 1:
            return x
        kept = random.uniform(jn.shape(x), generator=self.keygen) < keep
        # keep = 0 keeps nothing; the guarded scale keeps 1 / 0 (and its NaN gradient) out of the result.
        if isinstance(keep, numbers.Real):
            scaled = x / keep if keep > 0 else jn.zeros_like(x)
        else:
            scaled = x / jn.where(keep > 0, keep, 1)
        return jn.where(kept, scaled, 0)

    def __repr__(self):
        return layer_repr(self, keep=self.keep)


def _given(keep) -> bool:
    """False for the values that mean 'use the layer's keep': None and a Python zero (Objax 1.8 tests truth)."""
    return keep is not None and not (isinstance(keep, numbers.Real) and keep == 0)
