"""Dropout: zeroes entries at random while training and rescales the kept ones."""

import numbers
from typing import Optional

import jax.numpy as jn

from objax import random
from objax.module import Module
from objax.typing import JaxArray

__all__ = ['Dropout']


def _check_keep(keep, name: str):
    if isinstance(keep, numbers.Real) and not 0 < keep <= 1:
        raise ValueError(f'Dropout: {name} (probability of keeping an entry) must be in (0, 1], got {keep!r}')


class Dropout(Module):
    """While training, keeps each entry of x with probability `keep` and divides it by `keep` (others are 0);
    identity otherwise. Its random keys come from `generator`, whose key is one of its vars()."""

    def __init__(self, keep: float, generator: random.Generator = random.DEFAULT_GENERATOR):
        _check_keep(keep, 'keep')
        if not isinstance(generator, random.Generator):
            raise TypeError(f'Dropout: generator must be an objax.random.Generator, got {type(generator).__name__}')
        self.keep = keep
        self.keygen = generator

    def __call__(self, x: JaxArray, training: bool, dropout_keep: Optional[float] = None) -> JaxArray:
        """x with dropped entries (same shape) when training; `dropout_keep` overrides `keep` for this call."""
        if not training:
            return x
        keep = self.keep if dropout_keep is None else dropout_keep
        _check_keep(keep, 'dropout_keep')
        if isinstance(keep, numbers.Real) and keep == 1:
            return x
        kept = random.uniform(jn.shape(x), generator=self.keygen) < keep
        return jn.where(kept, x / keep, 0)

    def __repr__(self):
        return f'{type(self).__name__}(keep={self.keep})'
