"""Batch normalization with running statistics kept in StateVars."""

import numbers
from typing import Iterable, Tuple

import jax
import jax.numpy as jn
import numpy as np
from jax import lax

from objax.module import Module
from objax.nn._format import layer_repr
from objax.nn._precision import is_narrow_float
from objax.typing import JaxArray
from objax.variable import StateVar, TrainVar

__all__ = ['BatchNorm', 'BatchNorm0D', 'BatchNorm1D', 'BatchNorm2D']


def moments(x: JaxArray, redux: Tuple[int, ...]) -> Tuple[JaxArray, JaxArray]:
    """Mean and (biased) variance of x over the axes `redux`, kept as size-1 axes (shared with SyncedBatchNorm).

    Args:
        x: the batch.
        redux: the axes to reduce.

    Returns:
        (mean, variance), each of x's rank.
    """
    mean = x.mean(redux, keepdims=True)
    return mean, jn.square(x - mean).mean(redux, keepdims=True)


def _check_settings(owner: str, momentum: float, eps: float):
    if not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
        raise ValueError(f'{owner}: momentum must be a number in [0, 1], got {momentum!r}')
    if not isinstance(eps, numbers.Real) or eps < 0:
        raise ValueError(f'{owner}: eps must be a non-negative number, got {eps!r}')


class BatchNorm(Module):
    """Normalizes x with the mean/variance over axes `redux` (batch statistics when training, running
    statistics otherwise), then scales by gamma and shifts by beta; all variables have shape `dims`."""

    def __init__(self, dims: Iterable[int], redux: Iterable[int], momentum: float = 0.999, eps: float = 1e-6):
        """Creates zero `running_mean`/`beta` and unit `running_var`/`gamma`, all of shape `dims`.

        Args:
            dims: shape of the variables, broadcastable to the inputs: one entry per input axis, 1 on the
                reduced axes (e.g. (1, C, 1, 1) for NCHW images).
            redux: the input axes to average over in training (e.g. (0, 2, 3)); checked against each input.
            momentum: weight of the old running statistics in their update, in [0, 1].
            eps: added to the variance before its inverse square root, >= 0.

        Raises:
            ValueError: dims not positive ints, momentum outside [0, 1] or eps negative.
        """
        owner = type(self).__name__
        dims, redux = tuple(dims), tuple(redux)
        if self._channel_layout and not (isinstance(dims[1], numbers.Integral) and dims[1] > 0):
            raise ValueError(f'{owner}: nin must be a positive int, got {dims[1]!r}')
        if not all(isinstance(d, numbers.Integral) and d > 0 for d in dims):
            raise ValueError(f'{owner}: dims must be positive ints, got {dims}')
        _check_settings(owner, momentum, eps)
        self.momentum = momentum
        self.eps = eps
        # As in Objax 1.8, any redux is accepted here; the axes are checked against each input (call time).
        self.redux = redux
        # Made in numpy and put on the device: jn.zeros/ones would compile one program per shape.
        dtype = jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless 64-bit mode is on, as jn.zeros
        zeros, ones = np.zeros(dims, dtype), np.ones(dims, dtype)
        self.running_mean = StateVar(jax.device_put(zeros))
        self.running_var = StateVar(jax.device_put(ones))
        self.beta = TrainVar(jax.device_put(zeros))
        self.gamma = TrainVar(jax.device_put(ones))

    def __call__(self, x: JaxArray, training: bool) -> JaxArray:
        """Normalized x, same shape; training=True uses and records the batch statistics.

        Args:
            x: input whose shape broadcasts with `dims` (same rank, equal sizes where dims is not 1).
            training: True normalizes with the batch statistics over `redux` and updates the running ones;
                False normalizes with the running statistics and changes nothing.

        Returns:
            (x - mean) / sqrt(var + eps) * gamma + beta, shape of x. A bfloat16 or float16 x is normalized
            (and its statistics computed) in float32, and the result is given in x's dtype.

        Raises:
            ValueError: x does not match `dims`, or (training) redux names invalid or repeated axes of x, or
                a reduced axis is empty; the running statistics are then left unchanged.
        """
        return self._normalize(x, training, update=True)

    def _batch_moments(self, x: JaxArray) -> Tuple[JaxArray, JaxArray]:
        return moments(x, self.redux)

    def _normalize(self, x: JaxArray, training: bool, update: bool) -> JaxArray:
        self._check_input(x)
        narrow = is_narrow_float(x)  # bfloat16/float16: statistics and normalization in float32
        xf = x.astype(jn.float32) if narrow else x
        if training:
            self._check_batch(x)
            mean, var = self._batch_moments(xf)
            if update:
                m = self.momentum
                self.running_mean.value = m * self.running_mean.value + (1 - m) * mean
                self.running_var.value = m * self.running_var.value + (1 - m) * var
        else:
            mean, var = self.running_mean.value, self.running_var.value
        y = (xf - mean) * lax.rsqrt(var + self.eps) * self.gamma.value + self.beta.value
        return y.astype(x.dtype) if narrow else y

    def _check_input(self, x: JaxArray):
        dims, shape = self.gamma.value.shape, tuple(jn.shape(x))
        if len(shape) != len(dims):
            raise ValueError(f'{type(self).__name__} expects inputs with {len(dims)} dimensions (variables of '
                             f'shape {dims}), got an input of shape {shape}')
        for axis, (d, s) in enumerate(zip(dims, shape)):
            if d != 1 and d != s:
                what = 'channels' if axis == 1 else 'entries'
                raise ValueError(f'{type(self).__name__} expects {d} {what} on axis {axis} but the input has {s} '
                                 f'(input shape {shape}, variable shape {dims})')

    def _check_batch(self, x: JaxArray):
        """Training needs valid reduction axes and at least one entry to average over (else the statistics,
        and the running statistics they update, would be NaN)."""
        owner, shape = type(self).__name__, tuple(jn.shape(x))
        axes = []
        for a in self.redux:
            if not isinstance(a, numbers.Integral) or isinstance(a, bool) or not -len(shape) <= a < len(shape):
                raise ValueError(f'{owner}: redux must list axes of the input, in [-{len(shape)}, {len(shape)}) '
                                 f'for an input of shape {shape}; got redux={self.redux}')
            axes.append(int(a) % len(shape))
        if len(set(axes)) != len(axes):
            raise ValueError(f'{owner}: redux={self.redux} lists an axis twice (input shape {shape})')
        empty = [a for a in axes if shape[a] == 0]
        if empty:
            raise ValueError(f'{owner}: cannot compute batch statistics of an empty batch (input shape {shape}, '
                             f'axis {empty[0]} has size 0); running_mean and running_var were left unchanged')

    def __repr__(self):
        if self._channel_layout:
            return layer_repr(self, nin=self.gamma.value.shape[1], momentum=self.momentum, eps=self.eps)
        return layer_repr(self, dims=tuple(self.gamma.value.shape), redux=self.redux, momentum=self.momentum,
                          eps=self.eps)

    # The 0D/1D/2D variants are built from a channel count: their repr shows it instead of dims/redux.
    _channel_layout = False


class BatchNorm0D(BatchNorm):
    """Batch norm of (N, nin) inputs, statistics over the batch axis."""

    _channel_layout = True

    def __init__(self, nin: int, momentum: float = 0.999, eps: float = 1e-6):
        """Creates the variables, of shape (1, nin).

        Args:
            nin: number of channels (axis 1 of the input), a positive int.
            momentum: weight of the old running statistics in their update, in [0, 1].
            eps: added to the variance before its inverse square root, >= 0.

        Raises:
            ValueError: nin not a positive int, momentum outside [0, 1] or eps negative.
        """
        super().__init__((1, nin), (0,), momentum, eps)


class BatchNorm1D(BatchNorm):
    """Batch norm of (N, nin, L) sequences, statistics over axes 0 and 2."""

    _channel_layout = True

    def __init__(self, nin: int, momentum: float = 0.999, eps: float = 1e-6):
        """Creates the variables, of shape (1, nin, 1).

        Args:
            nin: number of channels (axis 1 of the input), a positive int.
            momentum: weight of the old running statistics in their update, in [0, 1].
            eps: added to the variance before its inverse square root, >= 0.

        Raises:
            ValueError: nin not a positive int, momentum outside [0, 1] or eps negative.
        """
        super().__init__((1, nin, 1), (0, 2), momentum, eps)


class BatchNorm2D(BatchNorm):
    """Batch norm of (N, nin, H, W) images, statistics over axes 0, 2 and 3."""

    _channel_layout = True

    def __init__(self, nin: int, momentum: float = 0.999, eps: float = 1e-6):
        """Creates the variables, of shape (1, nin, 1, 1).

        Args:
            nin: number of channels (axis 1 of the input), a positive int.
            momentum: weight of the old running statistics in their update, in [0, 1].
            eps: added to the variance before its inverse square root, >= 0.

        Raises:
            ValueError: nin not a positive int, momentum outside [0, 1] or eps negative.
        """
        super().__init__((1, nin, 1, 1), (0, 2, 3), momentum, eps)
