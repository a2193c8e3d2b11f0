"""Loss functions (per example unless stated otherwise)."""

from typing import Iterable, Optional, Union

import jax.numpy as jn
import jax.scipy.special
import numpy as np

from objax.typing import JaxArray

__all__ = ['cross_entropy_logits', 'cross_entropy_logits_sparse', 'l2', 'mean_absolute_error', 'mean_squared_error',
           'mean_squared_log_error', 'sigmoid_cross_entropy_logits']


def cross_entropy_logits(logits: JaxArray, labels: JaxArray) -> JaxArray:
    """Softmax cross-entropy of logits (..., K) with dense label distributions (..., K); shape (...).

    Args:
        logits: unnormalized log-probabilities of shape (..., K).
        labels: target distributions (e.g. one-hot) broadcasting with logits, last axis K.

    Returns:
        logsumexp(logits) - sum(logits * labels) over the last axis, shape (...).

    Raises:
        ValueError: logits and labels do not broadcast together.
    """
    _pair('cross_entropy_logits', logits, labels)
    return jax.scipy.special.logsumexp(logits, axis=-1) - (logits * labels).sum(-1)


def cross_entropy_logits_sparse(logits: JaxArray, labels: Union[JaxArray, int]) -> JaxArray:
    """Softmax cross-entropy of logits (..., K) with integer labels (...) or one int label; shape (...).

    Args:
        logits: unnormalized log-probabilities of shape (..., K).
        labels: class indices in [0, K), an integer array of shape (...), or one Python/numpy int used for
            every row (negative ints count from the end).

    Returns:
        logsumexp(logits) - logits[label] over the last axis, shape (...).

    Raises:
        ValueError: an int label out of range, non-integer labels, or labels whose shape is not logits.shape[:-1].
    """
    if isinstance(labels, (int, np.integer)):
        if not -logits.shape[-1] <= labels < logits.shape[-1]:
            raise ValueError(f'cross_entropy_logits_sparse: label {labels} out of range for {logits.shape[-1]} '
                             f'classes')
        picked = logits[..., labels]
    else:
        labels = jn.asarray(labels)
        if not jn.issubdtype(labels.dtype, jn.integer):
            raise ValueError(f'cross_entropy_logits_sparse: labels must be integers, got dtype {labels.dtype}')
        if labels.shape != logits.shape[:-1]:
            raise ValueError(f'cross_entropy_logits_sparse: labels shape {labels.shape} must be logits shape '
                             f'without its last axis, {logits.shape[:-1]}')
        picked = jn.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return jax.scipy.special.logsumexp(logits, axis=-1) - picked


def sigmoid_cross_entropy_logits(logits: JaxArray, labels: Union[JaxArray, int]) -> JaxArray:
    """Element-wise binary cross-entropy of sigmoid(logits) with labels in [0, 1], computed stably.

    Args:
        logits: unnormalized log-odds, any shape.
        labels: target probabilities in [0, 1] broadcasting with logits (or one number).

    Returns:
        max(logits, 0) - logits * labels + log(1 + exp(-|logits|)), of the broadcast shape (no reduction).
    """
    return jn.maximum(logits, 0) - logits * labels + jn.log1p(jn.exp(-jn.abs(logits)))


def l2(x: JaxArray) -> JaxArray:
    """0.5 * sum(x ** 2), a scalar (weight decay).

    Args:
        x: array of any shape (e.g. a weight).

    Returns:
        A scalar array.
    """
    return 0.5 * (x ** 2).sum()


def _mean_keeping(fn: str, loss: JaxArray, keep_axis: Optional[Iterable[int]]) -> JaxArray:
    keep = set()
    for a in (keep_axis or ()):
        if not -loss.ndim <= a < loss.ndim:
            raise ValueError(f'{fn}: keep_axis {a} is out of range for inputs of {loss.ndim} dimensions')
        keep.add(a % loss.ndim)
    return loss.mean(tuple(i for i in range(loss.ndim) if i not in keep))


def _pair(fn: str, x: JaxArray, y: JaxArray):
    try:
        jn.broadcast_shapes(jn.shape(x), jn.shape(y))
    except ValueError:
        raise ValueError(f'{fn}: input shapes {jn.shape(x)} and {jn.shape(y)} do not broadcast together') from None


def mean_absolute_error(x: JaxArray, y: JaxArray, keep_axis: Optional[Iterable[int]] = (0,)) -> JaxArray:
    """Mean of |x - y| over all axes except keep_axis (None keeps none: a scalar).

    Args:
        x: predictions, any shape.
        y: targets, broadcasting with x.
        keep_axis: axes of the element-wise loss to keep (default (0,): one value per example); the mean runs
            over all the others. None or () averages everything into a scalar.

    Returns:
        The mean loss, with the kept axes of the broadcast shape of x and y (shape (N,) by default).

    Raises:
        ValueError: x and y do not broadcast together, or keep_axis names an axis they do not have.
    """
    _pair('mean_absolute_error', x, y)
    return _mean_keeping('mean_absolute_error', jn.abs(x - y), keep_axis)


def mean_squared_error(x: JaxArray, y: JaxArray, keep_axis: Optional[Iterable[int]] = (0,)) -> JaxArray:
    """Mean of (x - y) ** 2 over all axes except keep_axis (None keeps none: a scalar).

    Args:
        x: predictions, any shape.
        y: targets, broadcasting with x.
        keep_axis: axes of the element-wise loss to keep (default (0,): one value per example); the mean runs
            over all the others. None or () averages everything into a scalar.

    Returns:
        The mean loss, with the kept axes of the broadcast shape of x and y (shape (N,) by default).

    Raises:
        ValueError: x and y do not broadcast together, or keep_axis names an axis they do not have.
    """
    _pair('mean_squared_error', x, y)
    return _mean_keeping('mean_squared_error', (x - y) ** 2, keep_axis)


def mean_squared_log_error(y_true: JaxArray, y_pred: JaxArray, keep_axis: Optional[Iterable[int]] = (0,)) -> JaxArray:
    """Mean of (log(1 + y_true) - log(1 + y_pred)) ** 2 over all axes except keep_axis.

    Args:
        y_true: targets, values > -1 (NaN otherwise).
        y_pred: predictions, broadcasting with y_true, values > -1.
        keep_axis: axes of the element-wise loss to keep (default (0,): one value per example); the mean runs
            over all the others. None or () averages everything into a scalar.

    Returns:
        The mean loss, with the kept axes of the broadcast shape of y_true and y_pred (shape (N,) by default).

    Raises:
        ValueError: y_true and y_pred do not broadcast together, or keep_axis names an axis they do not have.
    """
    _pair('mean_squared_log_error', y_true, y_pred)
    return _mean_keeping('mean_squared_log_error', (jn.log1p(y_true) - jn.log1p(y_pred)) ** 2, keep_axis)
