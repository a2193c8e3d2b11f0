"""Image helpers: layout changes (NCHW/NHWC), [-1, 1] float <-> uint8 mapping, PNG files and image grids."""

import io
from typing import IO, BinaryIO, Union

import numpy as np

from objax.typing import JaxArray

__all__ = ['from_file', 'image_grid', 'nchw', 'nhwc', 'normalize_to_uint8', 'normalize_to_unit_float', 'to_png']

Array = Union[np.ndarray, JaxArray]


def _check_ndim(name: str, x, minimum: int):
    if not hasattr(x, 'ndim') or x.ndim < minimum:
        raise ValueError(f'{name}(x): x must be an array with at least {minimum} dimensions, '
                         f'got shape {getattr(x, "shape", type(x).__name__)}')


def nchw(x: Array) -> Array:
    """Channels-last to channels-first: (..., H, W, C) -> (..., C, H, W), e.g. NHWC -> NCHW.

    Args:
        x: a numpy or jax array of at least 3 dimensions, channels last.

    Returns:
        The transposed array (same type), shape (..., C, H, W).

    Raises:
        ValueError: x is not an array of at least 3 dimensions.
    """
    _check_ndim('nchw', x, 3)
    lead = list(range(x.ndim - 3))
    return x.transpose(lead + [x.ndim - 1, x.ndim - 3, x.ndim - 2])


def nhwc(x: Array) -> Array:
    """Channels-first to channels-last: (..., C, H, W) -> (..., H, W, C), e.g. NCHW -> NHWC.

    Args:
        x: a numpy or jax array of at least 3 dimensions, channels first.

    Returns:
        The transposed array (same type), shape (..., H, W, C).

    Raises:
        ValueError: x is not an array of at least 3 dimensions.
    """
    _check_ndim('nhwc', x, 3)
    lead = list(range(x.ndim - 3))
    return x.transpose(lead + [x.ndim - 2, x.ndim - 1, x.ndim - 3])


def normalize_to_uint8(x: Array) -> Array:
    """Maps floats of [1/256 - 1, 1 - 1/256] to the uint8 values {0, ..., 255} (rounding and clipping).

    Args:
        x: a numpy or jax float array of any shape, nominally in [-1, 1]; values outside are clipped.

    Returns:
        A uint8 array of x's shape: round(128 * (x + 1 - 1/256)) clipped to [0, 255].
    """
    return (128 * (x + (1 - 1 / 256))).clip(0, 255).round().astype('uint8')


def normalize_to_unit_float(x: Array) -> Array:
    """Maps uint8 values {0, ..., 255} to float32 values of [1/256 - 1, 1 - 1/256] (x / 128 + 1/256 - 1).

    Args:
        x: a numpy or jax array of any shape, typically uint8 pixels.

    Returns:
        A float32 array of x's shape, the inverse of normalize_to_uint8 on its values.
    """
    return (x * (1 / 128) + (1 / 256 - 1)).astype('float32')


def from_file(file: Union[str, IO[BinaryIO]]) -> np.ndarray:
    """Reads an image file (a path or a binary file object) as RGB: a float32 array (3, H, W) in [-1, 1].

    Args:
        file: a path, or a binary file object, of any image format Pillow reads (PNG, JPEG, ...); gray,
            palette and RGBA images are converted to RGB.

    Returns:
        A float32 numpy array of shape (3, H, W), pixels mapped with normalize_to_unit_float.

    Raises:
        FileNotFoundError: the path does not exist.
        PIL.UnidentifiedImageError: the file is not an image Pillow can read.
    """
    from PIL import Image
    with Image.open(file) as image:
        pixels = np.asarray(image.convert('RGB'))
    return normalize_to_unit_float(pixels.transpose(2, 0, 1))


def to_png(x: Array) -> bytes:
    """Encodes an image as PNG bytes, as Objax 1.8 does.

    Args:
        x: a uint8 image (H, W, C), encoded as it is, or a floating point image (C, H, W) in [-1, 1], transposed to
            (H, W, C) and quantised with `normalize_to_uint8`. C is 1 (gray, stored as RGB), 3 (RGB) or 4 (RGBA).

    Returns:
        The PNG file's bytes.

    Raises:
        ValueError: x is not 3-D with 1, 3 or 4 channels, or its dtype is neither uint8 nor floating point.
    """
    x = np.asarray(x)
    is_float = np.issubdtype(x.dtype, np.floating) or x.dtype.name == 'bfloat16'
    if not is_float and x.dtype != np.uint8:
        raise ValueError(f'to_png(x): x must be uint8 (H, W, C) or floating point (C, H, W), got dtype {x.dtype}')
    layout = '(C, H, W)' if is_float else '(H, W, C)'
    if x.ndim != 3 or x.shape[0 if is_float else 2] not in (1, 3, 4):
        raise ValueError(f'to_png(x): a {x.dtype} image must be {layout} with C in (1, 3, 4), got shape {x.shape}')
    pixels = normalize_to_uint8(x.astype(np.float32)).transpose(1, 2, 0) if is_float else x
    if pixels.shape[2] == 1:
        pixels = np.broadcast_to(pixels, pixels.shape[:2] + (3,))
    return encode_png(pixels)


def encode_png(pixels: np.ndarray) -> bytes:
    """The PNG file of uint8 pixels, stored as they are (shared by to_png and objax.jaxboard's images).

    Args:
        pixels: a uint8 array (H, W) for a gray image, or (H, W, 3) RGB, or (H, W, 4) RGBA.

    Returns:
        The PNG file's bytes.
    """
    from PIL import Image
    with io.BytesIO() as buffer:
        Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format='png')
        return buffer.getvalue()


def image_grid(image: np.ndarray) -> np.ndarray:
    """Tiles a (rows, cols, C, H, W) array of images into one image of shape (C, rows * H, cols * W).

    Args:
        image: a numpy or jax array of shape (rows, cols, C, H, W); image[i, j] lands at row i, column j.

    Returns:
        An array of shape (C, rows * H, cols * W).

    Raises:
        ValueError: image is not 5-dimensional.
    """
    if getattr(image, 'ndim', None) != 5:
        raise ValueError(f'image_grid(image): image must have shape (rows, cols, C, H, W), '
                         f'got shape {getattr(image, "shape", type(image).__name__)}')
    rows, cols, c, h, w = image.shape
    return image.transpose(2, 0, 3, 1, 4).reshape(c, rows * h, cols * w)
