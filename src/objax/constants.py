"""Enumerations shared by layers and functions."""

import enum

__all__ = ['ConvPadding', 'Interpolate']


class ConvPadding(enum.Enum):
    """Padding modes of convolutions and pooling."""
    SAME = 'SAME'
    VALID = 'VALID'


class Interpolate(enum.Enum):
    """Interpolation methods of `objax.functional.interpolate` and `upsample_2d`."""
    NEAREST = 'nearest'
    LINEAR = 'linear'
    BILINEAR = 'bilinear'
    TRILINEAR = 'trilinear'
    TRIANGLE = 'triangle'
    CUBIC = 'cubic'
    BICUBIC = 'bicubic'
    TRICUBIC = 'tricubic'
    LANCZOS3 = 'lanczos3'
    LANCZOS5 = 'lanczos5'
