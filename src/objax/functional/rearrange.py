"""Rearrangements of NCHW images between space, batch and channels, and flatten."""

from typing import Tuple, Union

from objax.functional._checks import check_nchw, positive_pair
from objax.typing import JaxArray

__all__ = ['batch_to_space2d', 'channel_to_space2d', 'flatten', 'space_to_batch2d', 'space_to_channel2d']


def _spatial_blocks(fn: str, x: JaxArray, size) -> Tuple[int, int]:
    check_nchw(fn, x)
    size = positive_pair(fn, 'size', size)
    if x.shape[2] % size[0] or x.shape[3] % size[1]:
        raise ValueError(f'{fn}: image (H, W) = {tuple(x.shape[2:])} is not divisible by size {size}')
    return size


def _block_count(fn: str, x: JaxArray, size, axis: int, axis_name: str) -> Tuple[int, int]:
    check_nchw(fn, x)
    size = positive_pair(fn, 'size', size)
    if x.shape[axis] % (size[0] * size[1]):
        raise ValueError(f'{fn}: {axis_name} dimension {x.shape[axis]} is not divisible by '
                         f'size[0] * size[1] = {size[0] * size[1]}')
    return size


def space_to_batch2d(x: JaxArray, size: Union[Tuple[int, int], int] = 2) -> JaxArray:
    """Moves each (sh, sw) block of pixels into the batch axis, image-major.

    Args:
        x: images (N, C, H, W), H and W divisible by size.
        size: (sh, sw), or one int for both.

    Returns:
        (N * sh * sw, C, H / sh, W / sw): output image n * sh * sw + i * sw + j holds the pixels at offset (i, j)
        of every block of image n.
    """
    sh, sw = _spatial_blocks('space_to_batch2d', x, size)
    n, c, h, w = x.shape
    y = x.reshape((n, c, h // sh, sh, w // sw, sw)).transpose((0, 3, 5, 1, 2, 4))
    return y.reshape((n * sh * sw, c, h // sh, w // sw))


def batch_to_space2d(x: JaxArray, size: Union[Tuple[int, int], int] = 2) -> JaxArray:
    """The inverse of space_to_batch2d: (N, C, H, W) -> (N / (sh * sw), C, H * sh, W * sw).

    Args:
        x: images (N, C, H, W), N divisible by sh * sw.
        size: (sh, sw), or one int for both.

    Returns:
        Images whose pixel (h * sh + i, w * sw + j) of image n is pixel (h, w) of input image n * sh * sw + i * sw + j.
    """
    sh, sw = _block_count('batch_to_space2d', x, size, 0, 'batch')
    n, c, h, w = x.shape
    y = x.reshape((n // (sh * sw), sh, sw, c, h, w)).transpose((0, 3, 4, 1, 5, 2))
    return y.reshape((n // (sh * sw), c, h * sh, w * sw))


def space_to_channel2d(x: JaxArray, size: Union[Tuple[int, int], int] = 2) -> JaxArray:
    """Moves each (sh, sw) block of pixels into the channel axis, channel-major.

    Args:
        x: images (N, C, H, W), H and W divisible by size.
        size: (sh, sw), or one int for both.

    Returns:
        (N, C * sh * sw, H / sh, W / sw): output channel c * sh * sw + i * sw + j holds the pixels at offset (i, j)
        of every block of channel c.
    """
    sh, sw = _spatial_blocks('space_to_channel2d', x, size)
    n, c, h, w = x.shape
    y = x.reshape((n, c, h // sh, sh, w // sw, sw)).transpose((0, 1, 3, 5, 2, 4))
    return y.reshape((n, c * sh * sw, h // sh, w // sw))


def channel_to_space2d(x: JaxArray, size: Union[Tuple[int, int], int] = 2) -> JaxArray:
    """The inverse of space_to_channel2d: (N, C, H, W) -> (N, C / (sh * sw), H * sh, W * sw).

    Args:
        x: images (N, C, H, W), C divisible by sh * sw.
        size: (sh, sw), or one int for both.

    Returns:
        Images whose pixel (h * sh + i, w * sw + j) of channel c is pixel (h, w) of input channel
        c * sh * sw + i * sw + j.
    """
    sh, sw = _block_count('channel_to_space2d', x, size, 1, 'channel')
    n, c, h, w = x.shape
    y = x.reshape((n, c // (sh * sw), sh, sw, h, w)).transpose((0, 1, 4, 2, 5, 3))
    return y.reshape((n, c // (sh * sw), h * sh, w * sw))


def flatten(x: JaxArray) -> JaxArray:
    """(N, ...) -> (N, prod(...)): flattens all axes but the first.

    Args:
        x: array of shape (N, ...), at least one axis.

    Returns:
        Array of shape (N, prod(...)); (N, 1) for a 1D x.

    Raises:
        ValueError: x has no axis (a scalar).
    """
    if getattr(x, 'ndim', 0) < 1:
        raise ValueError(f'flatten: x must have a batch axis, got shape {tuple(getattr(x, "shape", ()))}')
    return x.reshape((x.shape[0], -1))
