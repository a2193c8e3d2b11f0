"""2D average and max pooling over NCHW images."""

from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jn
import numpy as np

from objax.constants import ConvPadding
from objax.functional._checks import check_nchw, positive_pair
from objax.typing import JaxArray
from objax.util.conversion import to_padding

__all__ = ['average_pool_2d', 'max_pool_2d']

Padding = Union[ConvPadding, str, Sequence[Tuple[int, int]], Tuple[int, int], int]


def _pool_args(fn: str, x: JaxArray, size, strides, padding):
    check_nchw(fn, x)
    size = positive_pair(fn, 'size', size)
    strides = size if strides is None else positive_pair(fn, 'strides', strides)
    try:
        pad = to_padding(padding, 2)
    except (TypeError, ValueError) as e:
        raise ValueError(f'{fn}: {e}') from None
    if isinstance(pad, str):
        if pad == ConvPadding.VALID.value and (size[0] > x.shape[2] or size[1] > x.shape[3]):
            raise ValueError(f'{fn}: window size {size} is larger than the image (H, W) = {tuple(x.shape[2:])} '
                             f'with VALID padding')
    else:
        padded = (x.shape[2] + sum(pad[0]), x.shape[3] + sum(pad[1]))
        if size[0] > padded[0] or size[1] > padded[1]:
            raise ValueError(f'{fn}: window size {size} is larger than the padded image (H, W) = {padded}')
        pad = ((0, 0), (0, 0)) + pad
    return (1, 1) + size, (1, 1) + strides, pad


def average_pool_2d(x: JaxArray, size: Union[Tuple[int, int], int] = 2,
                    strides: Union[Tuple[int, int], int, None] = None,
                    padding: Padding = ConvPadding.VALID) -> JaxArray:
    """Mean over size windows of x (N, C, H, W); strides default to size. Padded zeros count in the mean.

    Args:
        x: images of shape (N, C, H, W).
        size: window (h, w), or one int for both.
        strides: step between windows, an int or a pair; None uses size (non-overlapping windows).
        padding: ConvPadding.VALID / 'valid' (no padding, the default), ConvPadding.SAME / 'same', an int (both
            sides of H and W), a (low, high) pair or ((low, high), (low, high)).

    Returns:
        Shape (N, C, H', W'), with H' = (H + padding - h) // stride + 1 (ceil(H / stride) for SAME).

    Raises:
        ValueError: x is not 4D, size or strides not positive, a malformed padding, or a window larger than
            the (padded) image.
    """
    window, strides, pad = _pool_args('average_pool_2d', x, size, strides, padding)
    # numpy init values (not jnp): under jit a jnp constant is traced and the differentiable
    # monoid reducers are not recognised, which breaks grad.
    total = jax.lax.reduce_window(x, np.zeros((), x.dtype), jax.lax.add, window, strides, pad)
    return total / np.prod(window)


def max_pool_2d(x: JaxArray, size: Union[Tuple[int, int], int] = 2,
                strides: Union[Tuple[int, int], int, None] = None,
                padding: Padding = ConvPadding.VALID) -> JaxArray:
    """Maximum over size windows of x (N, C, H, W); strides default to size. Padding never wins the max.

    Args:
        x: images of shape (N, C, H, W).
        size: window (h, w), or one int for both.
        strides: step between windows, an int or a pair; None uses size (non-overlapping windows).
        padding: ConvPadding.VALID / 'valid' (no padding, the default), ConvPadding.SAME / 'same', an int (both
            sides of H and W), a (low, high) pair or ((low, high), (low, high)).

    Returns:
        Shape (N, C, H', W'), with H' = (H + padding - h) // stride + 1 (ceil(H / stride) for SAME).

    Raises:
        ValueError: x is not 4D, size or strides not positive, a malformed padding, or a window larger than
            the (padded) image.
    """
    window, strides, pad = _pool_args('max_pool_2d', x, size, strides, padding)
    x = jn.asarray(x)
    init = -jn.inf if jn.issubdtype(x.dtype, jn.floating) else jn.iinfo(x.dtype).min
    return jax.lax.reduce_window(x, np.array(init, x.dtype), jax.lax.max, window, strides, pad)
