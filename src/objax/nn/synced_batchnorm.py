"""Batch normalization whose batch statistics are averaged over the devices of objax.Parallel."""

from typing import Tuple

import jax
import jax.numpy as jn

from objax.functional.parallel import pmean
from objax.nn.batchnorm import BatchNorm, moments
from objax.typing import JaxArray

__all__ = ['SyncedBatchNorm', 'SyncedBatchNorm0D', 'SyncedBatchNorm1D', 'SyncedBatchNorm2D']

_AXIS = 'device'


def _axis_is_bound(axis_name: str) -> bool:
    """True when tracing inside a transform (Parallel/shard_map) that names the axis `axis_name`."""
    try:
        jax.lax.axis_index(axis_name)
    except NameError:
        return False
    return True


def _synced_moments(x: JaxArray, redux: Tuple[int, ...], axis_name: str = _AXIS) -> Tuple[JaxArray, JaxArray]:
    """Mean and variance of x over `redux` and over all devices of `axis_name` (equal shard sizes);
    exactly the local moments when the axis is not bound."""
    if not _axis_is_bound(axis_name):
        return moments(x, redux)
    mean = pmean(x.mean(redux, keepdims=True), axis_name)
    var = pmean(jn.square(x - mean).mean(redux, keepdims=True), axis_name)
    return mean, var


class SyncedBatchNorm(BatchNorm):
    """BatchNorm whose training statistics are averaged over the devices of objax.Parallel (axis 'device');
    outside such a context it computes exactly what BatchNorm computes."""

    def __call__(self, x: JaxArray, training: bool, batch_norm_update: bool = True) -> JaxArray:
        """Normalized x, same shape; batch_norm_update=False leaves the running statistics unchanged.

        Args:
            x: this device's input, whose shape broadcasts with `dims` (same rank, equal sizes where dims is
                not 1); every device must hold a shard of the same shape.
            training: True normalizes with the batch statistics (averaged over all devices inside
                objax.Parallel); False normalizes with the running statistics.
            batch_norm_update: whether training updates the running statistics.

        Returns:
            (x - mean) / sqrt(var + eps) * gamma + beta, shape of x (computed in float32 for a bfloat16 or
            float16 x, then given in x's dtype).

        Raises:
            ValueError: x does not match `dims`, or (training) redux names invalid or repeated axes of x, or
                a reduced axis is empty; the running statistics are then left unchanged.
        """
        return self._normalize(x, training, update=batch_norm_update)

    def _batch_moments(self, x: JaxArray) -> Tuple[JaxArray, JaxArray]:
        return _synced_moments(x, self.redux)


class SyncedBatchNorm0D(SyncedBatchNorm):
    """Synced batch norm of (N, nin) inputs, statistics over the batch axis of all devices."""

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


class SyncedBatchNorm1D(SyncedBatchNorm):
    """Synced batch norm of (N, nin, L) sequences, statistics over axes 0 and 2 of all devices."""

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


class SyncedBatchNorm2D(SyncedBatchNorm):
    """Synced batch norm of (N, nin, H, W) images, statistics over axes 0, 2 and 3 of all devices."""

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
