"""Normalization of user-facing arguments: paddings, tuples of sizes and interpolation methods."""

import numbers
from typing import Iterable, Sequence, Tuple, Union

from objax.constants import ConvPadding, Interpolate

__all__ = ['to_interpolate', 'to_padding', 'to_tuple']

_PADDING_NAMES = ', '.join(repr(p.value) for p in ConvPadding)
_INTERPOLATE_NAMES = ', '.join(repr(m.value) for m in Interpolate)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def to_padding(padding: Union[ConvPadding, str, Sequence[Tuple[int, int]], Tuple[int, int], int],
               ndim: int) -> Union[str, Tuple[Tuple[int, int], ...]]:
    """Padding as 'SAME'/'VALID' or as `ndim` (low, high) pairs, from a ConvPadding, a string, an int
    (same on both sides of every axis), a (low, high) pair (every axis) or a sequence of `ndim` pairs.

    Args:
        padding: a ConvPadding, 'same'/'valid' in any case, a non-negative int, a (low, high) pair of ints, or
            a sequence of `ndim` (low, high) pairs.
        ndim: number of spatial axes (2 for images).

    Returns:
        The string 'SAME' or 'VALID', or a tuple of `ndim` (low, high) int pairs.

    Raises:
        ValueError: an unknown padding name, negative values, or a sequence of the wrong length or not made
            of int pairs.
        TypeError: padding is of none of the accepted types.
    """
    if isinstance(padding, ConvPadding):
        return padding.value
    if isinstance(padding, str):
        name = padding.upper()
        if name not in ConvPadding.__members__:
            raise ValueError(f'padding must be one of {_PADDING_NAMES} (any case), got {padding!r}')
        return ConvPadding[name].value
    if _is_int(padding):
        if padding < 0:
            raise ValueError(f'padding must be non-negative, got {padding}')
        return ((int(padding), int(padding)),) * ndim
    try:
        items = tuple(padding)
    except TypeError:
        raise TypeError(f'padding must be a ConvPadding, a string, an int, a (low, high) pair or a sequence of '
                        f'{ndim} pairs, got {type(padding).__name__}') from None
    if len(items) == 2 and all(_is_int(p) for p in items):
        pairs = ((int(items[0]), int(items[1])),) * ndim
    else:
        if len(items) != ndim:
            raise ValueError(f'padding must have one (low, high) pair per spatial axis ({ndim}), got {padding!r}')
        try:
            pairs = tuple((int(lo), int(hi)) for lo, hi in items)
        except (TypeError, ValueError):
            raise ValueError(f'padding must be a sequence of {ndim} (low, high) int pairs, got {padding!r}') from None
        if not all(_is_int(v) for pair in items for v in pair):
            raise ValueError(f'padding must be a sequence of {ndim} (low, high) int pairs, got {padding!r}')
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f'padding must be non-negative, got {padding!r}')
    return pairs


def to_tuple(v: Union[Tuple[numbers.Number, ...], numbers.Number, Iterable], n: int):
    """`v` as a tuple: a tuple unchanged (any length), a number repeated `n` times, another iterable as `tuple(v)`.

    Args:
        v: a tuple, a number or an iterable.
        n: how many times a number is repeated.

    Returns:
        A tuple; its length is not checked (callers that need `n` entries check it themselves).

    Raises:
        TypeError: `v` is neither a number nor iterable.
    """
    if isinstance(v, tuple):
        return v
    if isinstance(v, numbers.Number):
        return (v,) * n
    try:
        return tuple(v)
    except TypeError:
        raise TypeError(f'expected a number or a sequence of {n} numbers, got {type(v).__name__}') from None


def to_interpolate(interpolate: Union[Interpolate, str]) -> str:
    """The jax.image.resize method name of an Interpolate member or of its (case-insensitive) string.

    Args:
        interpolate: an objax.constants.Interpolate, or the name of one of its values (e.g. 'bilinear').

    Returns:
        The method name as jax.image.resize takes it, e.g. 'bilinear'.

    Raises:
        ValueError: an unknown method name, or a value that is neither an Interpolate nor a str.
    """
    if isinstance(interpolate, Interpolate):
        return interpolate.value
    if isinstance(interpolate, str):
        try:
            return Interpolate(interpolate.lower()).value
        except ValueError:
            pass
    raise ValueError(f'interpolation method must be an objax.constants.Interpolate or one of '
                     f'{_INTERPOLATE_NAMES}, got {interpolate!r}')
