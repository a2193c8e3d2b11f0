"""Embedding: a table of learned vectors looked up by integer ids, usable as a tied output head."""

import math
from typing import Callable, Optional, Tuple

import jax.numpy as jn

from objax import random
from objax.functional._checks import positive_int
from objax.module import Module
from objax.nn._format import layer_repr
from objax.typing import JaxArray
from objax.variable import TrainVar

__all__ = ['Embedding']


class Embedding(Module):
    """A table `w` of shape (num, dim): `layer(ids)` gives row ids of w, `layer.attend(x)` the scores x . w^T of
    x against every row (the output head of a language model whose head is tied to its token embedding: one
    variable for both)."""

    def __init__(self, num: int, dim: int, w_init: Optional[Callable[[Tuple[int, int]], JaxArray]] = None):
        """Creates the table w of shape (num, dim).

        Args:
            num: number of rows (the vocabulary size), a positive int.
            dim: size of each vector, a positive int.
            w_init: called with the shape (num, dim), returns the initial table; None draws it from a normal
                distribution of standard deviation 1 / sqrt(dim) (objax.random's default generator).

        Raises:
            ValueError: num or dim not a positive int.
        """
        num = positive_int('Embedding', 'num', num)
        dim = positive_int('Embedding', 'dim', dim)
        self.w_init = w_init
        value = random.normal((num, dim), stddev=1 / math.sqrt(dim)) if w_init is None else w_init((num, dim))
        if tuple(jn.shape(value)) != (num, dim):
            raise ValueError(f'Embedding: w_init returned shape {tuple(jn.shape(value))}, expected {(num, dim)}')
        self.w = TrainVar(jn.asarray(value))

    def __call__(self, ids: JaxArray) -> JaxArray:
        """The rows of w at `ids`.

        Ids outside [0, num) are not checked (under jit they cannot be): they are clipped to the nearest row.

        Args:
            ids: integer array of any shape (...).

        Returns:
            w[ids], shape (..., dim), dtype of w.

        Raises:
            ValueError: ids is not an integer array.
        """
        if not jn.issubdtype(jn.result_type(ids), jn.integer):
            raise ValueError(f'Embedding expects integer ids, got dtype {jn.result_type(ids)}')
        return jn.take(self.w.value, ids, axis=0, mode='clip')

    def attend(self, x: JaxArray) -> JaxArray:
        """Scores of x against every row of w: x . w^T (a tied output head).

        Args:
            x: array of shape (..., dim).

        Returns:
            x . w^T, shape (..., num).

        Raises:
            ValueError: the last axis of x is not dim.
        """
        dim = self.w.value.shape[1]
        if jn.shape(x)[-1:] != (dim,):
            raise ValueError(f'Embedding.attend expects inputs with {dim} features on the last axis, '
                             f'got shape {tuple(jn.shape(x))}')
        return jn.dot(x, self.w.value.T)

    def __repr__(self):
        num, dim = self.w.value.shape
        return layer_repr(self, num=num, dim=dim, w_init=self.w_init)
