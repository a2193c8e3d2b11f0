"""Weight initializers. Fans follow Objax: fan_in = prod(shape[:-1]), fan_out = shape[-1] (HWIO kernels)."""

from typing import Tuple

import jax.numpy as jn
import numpy as np

from objax import random
from objax.typing import JaxArray

__all__ = ['gain_leaky_relu', 'identity', 'kaiming_normal', 'kaiming_normal_gain', 'kaiming_truncated_normal',
           'orthogonal', 'truncated_normal', 'xavier_normal', 'xavier_normal_gain', 'xavier_truncated_normal']

# Standard deviation of a unit normal truncated to [-2, 2].
_TRUNCATED_STD = 0.87962566103423978


def _fans(shape: Tuple[int, ...]) -> Tuple[int, int]:
    shape = tuple(shape)
    if len(shape) < 1:
        raise ValueError(f'initializers need a shape with at least one dimension, got {shape}')
    return int(np.prod(shape[:-1])), int(shape[-1])


def gain_leaky_relu(relu_slope: float = 0.1):
    """Gain for a leaky ReLU of the given negative slope: sqrt(2 / (1 + slope^2))."""
    return float(np.sqrt(2 / (1 + relu_slope ** 2)))


def identity(shape: Tuple[int, ...], gain: float = 1) -> JaxArray:
    """gain * identity matrix of a 2D shape."""
    if len(shape) != 2:
        raise ValueError(f'identity initializer needs a 2D shape, got {tuple(shape)}')
    return gain * jn.eye(*shape)


def kaiming_normal_gain(shape: Tuple[int, ...]) -> float:
    """Kaiming He's standard deviation sqrt(1 / fan_in)."""
    return float(np.sqrt(1 / _fans(shape)[0]))


def kaiming_normal(shape: Tuple[int, ...], gain: float = 1) -> JaxArray:
    """Normal samples of standard deviation gain * sqrt(1 / fan_in)."""
    return random.normal(shape, stddev=gain * kaiming_normal_gain(shape))


def kaiming_truncated_normal(shape: Tuple[int, ...], lower: float = -2, upper: float = 2,
                             gain: float = 1) -> JaxArray:
    """Truncated normal samples whose standard deviation is gain * sqrt(1 / fan_in)."""
    return truncated_normal(shape, lower=lower, upper=upper, stddev=gain * kaiming_normal_gain(shape))


def xavier_normal_gain(shape: Tuple[int, ...]) -> float:
    """Xavier Glorot's standard deviation sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return float(np.sqrt(2 / (fan_in + fan_out)))


def xavier_normal(shape: Tuple[int, ...], gain: float = 1) -> JaxArray:
    """Normal samples of standard deviation gain * sqrt(2 / (fan_in + fan_out))."""
    return random.normal(shape, stddev=gain * xavier_normal_gain(shape))


def xavier_truncated_normal(shape: Tuple[int, ...], lower: float = -2, upper: float = 2,
                            gain: float = 1) -> JaxArray:
    """Truncated normal samples whose standard deviation is gain * sqrt(2 / (fan_in + fan_out))."""
    return truncated_normal(shape, lower=lower, upper=upper, stddev=gain * xavier_normal_gain(shape))


def truncated_normal(shape: Tuple[int, ...], lower: float = -2, upper: float = 2, stddev: float = 1) -> JaxArray:
    """Normal samples truncated to [lower, upper] standard deviations, rescaled to have `stddev`
    (the rescaling constant is the one of [-2, 2] truncation, as in Objax)."""
    return random.truncated_normal(shape, stddev=stddev / _TRUNCATED_STD, lower=lower, upper=upper)


def orthogonal(shape: Tuple[int, ...], gain: float = 1, axis: int = -1) -> JaxArray:
    """gain * a random (semi-)orthogonal tensor: viewed as a (shape[axis], rest) matrix, its rows (or columns,
    whichever are fewer) are orthonormal."""
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f'orthogonal initializer needs at least 2 dimensions, got {shape}')
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f'orthogonal initializer: axis {axis} is out of range for shape {shape}')
    n_rows = shape[axis]
    n_cols = int(np.prod(shape)) // n_rows
    q, r = jn.linalg.qr(random.normal((max(n_rows, n_cols), min(n_rows, n_cols))))
    q = q * jn.sign(jn.diag(r))  # Haar-distributed: fix the sign ambiguity of the QR decomposition.
    if n_rows < n_cols:
        q = q.T
    others = tuple(s for i, s in enumerate(shape) if i != axis % len(shape))
    return gain * jn.moveaxis(q.reshape((n_rows,) + others), 0, axis)
