"""Resizing: interpolate (trailing axes, jax.image.resize), upsample_2d and nearest-neighbour upscale_nn."""

import numbers
from typing import Tuple, Union

import jax
import jax.numpy as jn

from objax.constants import Interpolate
from objax.functional._checks import _check_nchw, _positive_pair
from objax.typing import JaxArray
from objax.util.conversion import to_interpolate

__all__ = ['interpolate', 'upsample_2d', 'upscale_nn']


def _as_tuple(name: str, v) -> tuple:
    t = (v,) if isinstance(v, numbers.Number) else tuple(v)
    if not t or not all(isinstance(s, numbers.Number) and not isinstance(s, bool) and s > 0 for s in t):
        raise ValueError(f'interpolate: {name} must be a positive number or a non-empty tuple of them, got {v!r}')
    return t


def interpolate(input: JaxArray, size: Union[int, Tuple[int, ...]] = None,
                scale_factor: Union[int, Tuple[int, ...]] = None,
                mode: Union[Interpolate, str] = Interpolate.BILINEAR) -> JaxArray:
    """Resizes the last len(size) (or len(scale_factor)) axes of input to `size` or to
    floor(shape * scale_factor); give exactly one of them."""
    method = to_interpolate(mode)
    if (size is None) == (scale_factor is None):
        raise ValueError('interpolate: give exactly one of size and scale_factor')
    if size is not None:
        new = _as_tuple('size', size)
        if not all(isinstance(s, numbers.Integral) for s in new):
            raise ValueError(f'interpolate: size must be a positive int or a tuple of them, got {size!r}')
    else:
        new = _as_tuple('scale_factor', scale_factor)
    if len(new) > input.ndim:
        raise ValueError(f'interpolate: {len(new)} sizes given for an input of shape {tuple(input.shape)}')
    old = tuple(input.shape[input.ndim - len(new):])
    if scale_factor is not None:
        new = tuple(int(s * f) for s, f in zip(old, new))
        if min(new) < 1:
            raise ValueError(f'interpolate: scale_factor {scale_factor!r} shrinks axes {old} to zero')
    shape = tuple(input.shape[:input.ndim - len(new)]) + tuple(int(s) for s in new)
    return jax.image.resize(input, shape, method=method)


def upsample_2d(x: JaxArray, scale: Union[Tuple[int, int], int],
                method: Union[Interpolate, str] = Interpolate.BILINEAR) -> JaxArray:
    """(N, C, H, W) -> (N, C, H * scale[0], W * scale[1]) with jax.image.resize's `method`."""
    method = to_interpolate(method)
    _check_nchw('upsample_2d', x)
    sh, sw = _positive_pair('upsample_2d', 'scale', scale)
    n, c, h, w = x.shape
    return jax.image.resize(x, (n, c, h * sh, w * sw), method=method)


def upscale_nn(x: JaxArray, scale: int = 2) -> JaxArray:
    """(N, C, H, W) -> (N, C, H * scale, W * scale), each pixel repeated in a scale x scale block."""
    _check_nchw('upscale_nn', x)
    if not isinstance(scale, numbers.Integral) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f'upscale_nn: scale must be a positive int, got {scale!r}')
    return jn.repeat(jn.repeat(x, scale, axis=2), scale, axis=3)
