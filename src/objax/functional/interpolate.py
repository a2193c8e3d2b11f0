"""Resizing: interpolate (jax.image.resize), upsample_2d and nearest-neighbour upscale_nn."""

import numbers
from typing import Tuple, Union

import jax
import jax.numpy as jn

from objax.constants import Interpolate
from objax.functional._checks import check_nchw, positive_pair
from objax.typing import JaxArray
from objax.util.conversion import to_interpolate

__all__ = ['interpolate', 'upsample_2d', 'upscale_nn']


def _positive(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0


def interpolate(input: JaxArray, size: Union[int, Tuple[int, ...]] = None,
                scale_factor: Union[int, Tuple[int, ...]] = None,
                mode: Union[Interpolate, str] = Interpolate.BILINEAR) -> JaxArray:
    """Resizes input with jax.image.resize to a `size` or by a `scale_factor` (give exactly one of them).

    Which axes change (as in Objax 1.8):
    - a single number `scale_factor` multiplies every axis except axis 0; a tuple of k factors multiplies the
      last k axes (new length floor(length * factor));
    - an int `size` replaces the last axis; a tuple of k sizes replaces the last k axes.

    Args:
        input: array of any rank >= 1 (>= 2 for a single-number scale_factor).
        size: new length(s) of the trailing axes.
        scale_factor: factor(s) for the axes listed above.
        mode: interpolation method (objax.Interpolate or its name).

    Returns:
        The resized array, e.g. shape (1, 6, 4, 6, 20, 60) for an input (1, 3, 2, 3, 10, 30) and scale_factor 2.

    Raises:
        ValueError: for both or neither of size and scale_factor, non-positive sizes or factors, more sizes or
            factors than axes, or factors that shrink an axis to zero.
    """
    method = to_interpolate(mode)
    if (size is None) == (scale_factor is None):
        raise ValueError('interpolate: give exactly one of size and scale_factor')
    shape = tuple(input.shape)
    if size is not None:
        new = (size,) if isinstance(size, numbers.Number) else tuple(size)
        if not new or not all(_positive(s) and isinstance(s, numbers.Integral) for s in new):
            raise ValueError(f'interpolate: size must be a positive int or a non-empty tuple of them, got {size!r}')
    else:
        if isinstance(scale_factor, numbers.Number):
            factors = (scale_factor,) * (len(shape) - 1)
            if not factors:
                raise ValueError(f'interpolate: a single scale_factor scales every axis but the first; the input '
                                 f'of shape {shape} has no other axis')
        else:
            factors = tuple(scale_factor)
        if not factors or not all(_positive(f) for f in factors):
            raise ValueError(f'interpolate: scale_factor must be a positive number or a non-empty tuple of them, '
                             f'got {scale_factor!r}')
        if len(factors) > len(shape):
            raise ValueError(f'interpolate: {len(factors)} scale factors given for an input of shape {shape}')
        old = shape[len(shape) - len(factors):]
        new = tuple(int(s * f) for s, f in zip(old, factors))
        if min(new) < 1:
            raise ValueError(f'interpolate: scale_factor {scale_factor!r} shrinks axes {old} to zero')
    if len(new) > len(shape):
        raise ValueError(f'interpolate: {len(new)} sizes given for an input of shape {shape}')
    return jax.image.resize(input, shape[:len(shape) - len(new)] + tuple(int(s) for s in new), method=method)


def upsample_2d(x: JaxArray, scale: Union[Tuple[int, int], int],
                method: Union[Interpolate, str] = Interpolate.BILINEAR) -> JaxArray:
    """(N, C, H, W) -> (N, C, H * scale[0], W * scale[1]) with jax.image.resize's `method`.

    Args:
        x: images of shape (N, C, H, W).
        scale: upsampling factors (sh, sw), or one int for both.
        method: interpolation method, an objax.constants.Interpolate or its name (any case).

    Returns:
        Images of shape (N, C, H * sh, W * sw).

    Raises:
        ValueError: x is not 4D, scale not positive ints, or an unknown method.
    """
    method = to_interpolate(method)
    check_nchw('upsample_2d', x)
    sh, sw = positive_pair('upsample_2d', 'scale', scale)
    n, c, h, w = x.shape
    return jax.image.resize(x, (n, c, h * sh, w * sw), method=method)


def upscale_nn(x: JaxArray, scale: int = 2) -> JaxArray:
    """(N, C, H, W) -> (N, C, H * scale, W * scale), each pixel repeated in a scale x scale block.

    Args:
        x: images of shape (N, C, H, W).
        scale: upscaling factor of H and W, a positive int.

    Returns:
        Images of shape (N, C, H * scale, W * scale).

    Raises:
        ValueError: x is not 4D or scale is not a positive int.
    """
    check_nchw('upscale_nn', x)
    if not isinstance(scale, numbers.Integral) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f'upscale_nn: scale must be a positive int, got {scale!r}')
    return jn.repeat(jn.repeat(x, scale, axis=2), scale, axis=3)
