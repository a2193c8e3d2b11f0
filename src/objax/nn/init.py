"""Weight initializers. Fans follow Objax: fan_in = prod(shape[:-1]), fan_out = shape[-1] (HWIO kernels)."""

import math
from typing import Tuple

import jax.numpy as jn
import numpy as np

from objax import random
from objax.typing import JaxArray

__all__ = ['gain_leaky_relu', 'identity', 'kaiming_normal', 'kaiming_normal_gain', 'kaiming_truncated_normal',
           'orthogonal', 'truncated_normal', 'xavier_normal', 'xavier_normal_gain', 'xavier_truncated_normal']

def _fans(shape: Tuple[int, ...]) -> Tuple[int, int]:
    shape = tuple(shape)
    if len(shape) < 1:
        raise ValueError(f'initializers need a shape with at least one dimension, got {shape}')
    return int(np.prod(shape[:-1])), int(shape[-1])


def gain_leaky_relu(relu_slope: float = 0.1):
    """Gain for a leaky ReLU of the given negative slope: sqrt(2 / (1 + slope^2)).

    Args:
        relu_slope: slope of the leaky ReLU for negative inputs (0 gives plain ReLU's sqrt(2)).

    Returns:
        The gain, a Python float, to pass as `gain` to the initializers.
    """
    return float(np.sqrt(2 / (1 + relu_slope ** 2)))


def identity(shape: Tuple[int, ...], gain: float = 1) -> JaxArray:
    """gain * identity matrix of a 2D shape.

    Args:
        shape: a (rows, columns) pair; a non-square shape gives ones on the main diagonal only.
        gain: the value on the diagonal.

    Returns:
        An array of the given shape.

    Raises:
        ValueError: shape is not 2D.
    """
    if len(shape) != 2:
        raise ValueError(f'identity initializer needs a 2D shape, got {tuple(shape)}')
    return gain * jn.eye(*shape)


def kaiming_normal_gain(shape: Tuple[int, ...]) -> float:
    """Kaiming He's standard deviation sqrt(1 / fan_in).

    Args:
        shape: shape of the weight; its last axis is fan_out, the product of the others fan_in (HWIO).

    Returns:
        The standard deviation, a Python float.

    Raises:
        ValueError: shape has no dimension.
    """
    return float(np.sqrt(1 / _fans(shape)[0]))


def kaiming_normal(shape: Tuple[int, ...], gain: float = 1) -> JaxArray:
    """Normal samples of standard deviation gain * sqrt(1 / fan_in).

    Args:
        shape: shape of the weight; its last axis is fan_out, the product of the others fan_in (HWIO).
        gain: multiplies the standard deviation (see gain_leaky_relu).

    Returns:
        An array of the given shape, drawn from objax.random's default generator.

    Raises:
        ValueError: shape has no dimension.
    """
    return random.normal(shape, stddev=gain * kaiming_normal_gain(shape))


def kaiming_truncated_normal(shape: Tuple[int, ...], lower: float = -2, upper: float = 2,
                             gain: float = 1) -> JaxArray:
    """Truncated normal samples whose standard deviation is gain * sqrt(1 / fan_in).

    Args:
        shape: shape of the weight; its last axis is fan_out, the product of the others fan_in (HWIO).
        lower: lower bound, in standard deviations of the unit normal (see truncated_normal).
        upper: upper bound (> lower), in standard deviations of the unit normal.
        gain: multiplies the standard deviation.

    Returns:
        An array of the given shape, drawn from objax.random's default generator.

    Raises:
        ValueError: shape has no dimension, or lower >= upper.
    """
    return truncated_normal(shape, lower=lower, upper=upper, stddev=gain * kaiming_normal_gain(shape))


def xavier_normal_gain(shape: Tuple[int, ...]) -> float:
    """Xavier Glorot's standard deviation sqrt(2 / (fan_in + fan_out)).

    Args:
        shape: shape of the weight; its last axis is fan_out, the product of the others fan_in (HWIO).

    Returns:
        The standard deviation, a Python float.

    Raises:
        ValueError: shape has no dimension.
    """
    fan_in, fan_out = _fans(shape)
    return float(np.sqrt(2 / (fan_in + fan_out)))


def xavier_normal(shape: Tuple[int, ...], gain: float = 1) -> JaxArray:
    """Normal samples of standard deviation gain * sqrt(2 / (fan_in + fan_out)).

    Args:
        shape: shape of the weight; its last axis is fan_out, the product of the others fan_in (HWIO).
        gain: multiplies the standard deviation.

    Returns:
        An array of the given shape, drawn from objax.random's default generator.

    Raises:
        ValueError: shape has no dimension.
    """
    return random.normal(shape, stddev=gain * xavier_normal_gain(shape))


def xavier_truncated_normal(shape: Tuple[int, ...], lower: float = -2, upper: float = 2,
                            gain: float = 1) -> JaxArray:
    """Truncated normal samples whose standard deviation is gain * sqrt(2 / (fan_in + fan_out)).

    Args:
        shape: shape of the weight; its last axis is fan_out, the product of the others fan_in (HWIO).
        lower: lower bound, in standard deviations of the unit normal (see truncated_normal).
        upper: upper bound (> lower), in standard deviations of the unit normal.
        gain: multiplies the standard deviation.

    Returns:
        An array of the given shape, drawn from objax.random's default generator.

    Raises:
        ValueError: shape has no dimension, or lower >= upper.
    """
    return truncated_normal(shape, lower=lower, upper=upper, stddev=gain * xavier_normal_gain(shape))


def truncated_normal(shape: Tuple[int, ...], lower: float = -2, upper: float = 2, stddev: float = 1) -> JaxArray:
    """Samples of a unit normal truncated to [lower, upper], multiplied by stddev / s(lower, upper).

    s(lower, upper) is the standard deviation of the truncated unit normal (0.87963 for [-2, 2]), so the
    samples have standard deviation `stddev` whatever the bounds, and lie in
    [lower, upper] * stddev / s(lower, upper).

    Args:
        shape: shape of the result.
        lower: lower bound, in standard deviations of the unit normal.
        upper: upper bound (> lower), in standard deviations of the unit normal.
        stddev: standard deviation of the result.

    Returns:
        An array of the given shape.

    Raises:
        ValueError: if lower >= upper.
    """
    if not lower < upper:
        raise ValueError(f'truncated_normal: lower ({lower}) must be smaller than upper ({upper})')
    return random.truncated_normal(shape, stddev=stddev / _truncated_std(lower, upper), lower=lower, upper=upper)


def _truncated_std(a: float, b: float) -> float:
    """Standard deviation of a unit normal truncated to [a, b] (a < b), from the closed form."""
    if a >= 0:  # both bounds in the upper tail: use the complementary CDF, which keeps its precision there
        mass = 0.5 * (math.erfc(a / math.sqrt(2)) - math.erfc(b / math.sqrt(2)))
    elif b <= 0:
        mass = 0.5 * (math.erfc(-b / math.sqrt(2)) - math.erfc(-a / math.sqrt(2)))
    else:
        mass = 0.5 * (math.erf(b / math.sqrt(2)) - math.erf(a / math.sqrt(2)))
    pdf_a, pdf_b = _normal_pdf(a), _normal_pdf(b)
    mean = (pdf_a - pdf_b) / mass
    second = 1 + (_times(a, pdf_a) - _times(b, pdf_b)) / mass  # E[x^2]
    return math.sqrt(max(second - mean ** 2, 0.))


def _normal_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) if math.isfinite(x) else 0.


def _times(x: float, pdf: float) -> float:
    """x * pdf(x), 0 at infinite x."""
    return x * pdf if math.isfinite(x) else 0.


def orthogonal(shape: Tuple[int, ...], gain: float = 1, axis: int = -1) -> JaxArray:
    """gain * a random (semi-)orthogonal tensor: viewed as a (shape[axis], rest) matrix, its rows (or columns,
    whichever are fewer) are orthonormal.

    Args:
        shape: shape of the result, at least 2 dimensions.
        gain: multiplies the orthogonal tensor.
        axis: the axis that indexes the matrix rows; the other axes, flattened, index its columns.

    Returns:
        An array of the given shape, drawn from objax.random's default generator.

    Raises:
        ValueError: shape has fewer than 2 dimensions, or axis is out of range.
    """
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
