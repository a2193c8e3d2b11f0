"""Running averages of the values a module is called with, kept in StateVars."""

import numbers
from typing import Tuple

import jax.numpy as jn

from objax.module import Module
from objax.nn._format import layer_repr
from objax.typing import JaxArray
from objax.variable import StateVar

__all__ = ['MovingAverage', 'ExponentialMovingAverage']


def _shape(shape, owner: str) -> Tuple[int, ...]:
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f'{owner}: shape must be a tuple of ints, got {shape!r}') from None
    if not all(isinstance(s, numbers.Integral) and s >= 0 for s in shape):
        raise ValueError(f'{owner}: shape must be a tuple of non-negative ints, got {shape}')
    return shape


def _check_value(x: JaxArray, shape: Tuple[int, ...], owner: str):
    if tuple(jn.shape(x)) != shape:
        raise ValueError(f'{owner} was built for values of shape {shape}, got a value of shape {tuple(jn.shape(x))}')


class MovingAverage(Module):
    """Average of the last `buffer_size` values it was called with (buffer initially full of `init_value`)."""

    def __init__(self, shape: Tuple[int, ...], buffer_size: int, init_value: float = 0):
        """Creates the buffer StateVar of shape (buffer_size, *shape), filled with init_value.

        Args:
            shape: shape of the averaged values, a tuple of non-negative ints.
            buffer_size: how many of the latest values are averaged, a positive int.
            init_value: the value the buffer starts full of.

        Raises:
            TypeError: shape is not iterable.
            ValueError: shape has entries that are not non-negative ints, or buffer_size is not a positive int.
        """
        shape = _shape(shape, type(self).__name__)
        if not isinstance(buffer_size, numbers.Integral) or buffer_size <= 0:
            raise ValueError(f'{type(self).__name__}: buffer_size must be a positive int, got {buffer_size!r}')
        self.init_value = init_value
        self.buffer = StateVar(jn.zeros((buffer_size,) + shape) + init_value)

    def __call__(self, x: JaxArray) -> JaxArray:
        """Pushes x (shape `shape`) into the buffer, dropping the oldest value; returns the buffer mean.

        Args:
            x: the new value, of shape `shape`.

        Returns:
            The mean of the last buffer_size values, of shape `shape`.

        Raises:
            ValueError: x does not have shape `shape`.
        """
        _check_value(x, self.buffer.value.shape[1:], type(self).__name__)
        buffer = self.buffer.value
        self.buffer.value = jn.concatenate([buffer[1:], jn.asarray(x, buffer.dtype)[None]])
        return self.buffer.value.mean(0)

    def __repr__(self):
        buffer = self.buffer.value
        return layer_repr(self, shape=tuple(buffer.shape[1:]), buffer_size=buffer.shape[0],
                          init_value=self.init_value)


class ExponentialMovingAverage(Module):
    """avg <- momentum * avg + (1 - momentum) * x at each call; returns the new average (shape `shape`)."""

    def __init__(self, shape: Tuple[int, ...], momentum: float = 0.999, init_value: float = 0):
        """Creates the average StateVar `avg` of shape `shape`, equal to init_value.

        Args:
            shape: shape of the averaged values, a tuple of non-negative ints.
            momentum: weight of the old average at each update, in [0, 1].
            init_value: the initial average.

        Raises:
            TypeError: shape is not iterable.
            ValueError: shape has entries that are not non-negative ints, or momentum is outside [0, 1].
        """
        shape = _shape(shape, type(self).__name__)
        if not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
            raise ValueError(f'{type(self).__name__}: momentum must be a number in [0, 1], got {momentum!r}')
        self.momentum = momentum
        self.init_value = init_value
        self.avg = StateVar(jn.zeros(shape) + init_value)

    def __call__(self, x: JaxArray) -> JaxArray:
        """Folds x (shape `shape`) into the average and returns it.

        Args:
            x: the new value, of shape `shape`.

        Returns:
            The updated average momentum * avg + (1 - momentum) * x, of shape `shape`.

        Raises:
            ValueError: x does not have shape `shape`.
        """
        _check_value(x, self.avg.value.shape, type(self).__name__)
        avg = self.avg.value
        self.avg.value = (self.momentum * avg + (1 - self.momentum) * x).astype(avg.dtype)
        return self.avg.value

    def __repr__(self):
        return layer_repr(self, shape=tuple(self.avg.value.shape), momentum=self.momentum,
                          init_value=self.init_value)
