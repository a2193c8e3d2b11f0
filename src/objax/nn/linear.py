"""Fully connected layer."""

from typing import Callable

import jax.numpy as jn

from objax.module import Module
from objax.nn._format import layer_repr
from objax.nn.init import xavier_normal
from objax.typing import JaxArray
from objax.variable import TrainVar

__all__ = ['Linear']


class Linear(Module):
    """y = x . w + b with w of shape (nin, nout) and b of shape (nout,). x: (..., nin) -> (..., nout).

    The bias is created before the weight, so vars() lists `(Linear).b` then `(Linear).w` (Objax 1.8's order,
    which decides gradient-list and optimizer-slot order).
    """

    def __init__(self, nin: int, nout: int, use_bias: bool = True, w_init: Callable = xavier_normal):
        """Creates the weight w with `w_init` and a zero bias b.

        Args:
            nin: number of input features (last axis of x).
            nout: number of output features.
            use_bias: whether to create and add the bias b; False sets `b` to None.
            w_init: called with the weight shape (nin, nout), returns its initial value.
        """
        self.b = TrainVar(jn.zeros(nout)) if use_bias else None
        self.w = TrainVar(w_init((nin, nout)))
        self.w_init = w_init

    def __call__(self, x: JaxArray) -> JaxArray:
        """x (..., nin) -> x . w + b (..., nout).

        Args:
            x: input of shape (..., nin).

        Returns:
            x . w + b, shape (..., nout).

        Raises:
            ValueError: the last axis of x is not nin.
        """
        nin = self.w.value.shape[0]
        if x.shape[-1] != nin:
            raise ValueError(f'Linear expects inputs with {nin} features on the last axis, '
                             f'got shape {tuple(x.shape)}')
        y = jn.dot(x, self.w.value)
        if self.b is not None:
            y = y + self.b.value
        return y

    def __repr__(self):
        nin, nout = self.w.value.shape
        return layer_repr(self, nin=nin, nout=nout, use_bias=self.b is not None, w_init=self.w_init)
