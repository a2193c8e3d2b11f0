"""Argument checks shared by the functions and layers: NCHW inputs, positive sizes, broadcastable masks."""

import numbers
from typing import Sequence, Tuple, Union

from objax.typing import JaxArray
from objax.util.conversion import to_tuple

__all__ = ['check_broadcastable', 'check_nchw', 'positive_int', 'positive_pair']


def check_nchw(fn: str, x: JaxArray):
    """Refuses anything but a 4D (NCHW) array.

    Args:
        fn: the calling function's name, for the message.
        x: the input.

    Raises:
        ValueError: x is not 4-dimensional.
    """
    if getattr(x, 'ndim', None) != 4:
        raise ValueError(f'{fn}: x must be a 4D NCHW array, got shape {tuple(getattr(x, "shape", ()))}')


def positive_int(fn: str, name: str, v) -> int:
    """`v` as an int when it is a positive integer (not a bool).

    Args:
        fn: the calling function's or layer's name, for the message.
        name: the argument's name, for the message.
        v: the value given.

    Returns:
        int(v).

    Raises:
        ValueError: v is not a positive int.
    """
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
        raise ValueError(f'{fn}: {name} must be a positive int, got {v!r}')
    return int(v)


def positive_pair(fn: str, name: str, v: Union[Tuple[int, int], int]) -> Tuple[int, int]:
    """`v`, a positive int or a pair of them, as a pair of ints.

    Args:
        fn: the calling function's name, for the message.
        name: the argument's name, for the message.
        v: the value given.

    Returns:
        (int, int).

    Raises:
        ValueError: v is not a positive int nor a pair of positive ints.
    """
    try:
        pair = to_tuple(v, 2)
        if len(pair) != 2:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f'{fn}: {name} must be a positive int or a pair of positive ints, got {v!r}') from None
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f'{fn}: {name} must be a positive int or a pair of positive ints, got {v!r}')
    return int(pair[0]), int(pair[1])


def check_broadcastable(fn: str, name: str, shape: Sequence[int], target: Sequence[int], described: str):
    """Refuses a shape that does not broadcast to `target` (numpy rules, the result being exactly `target`).

    Args:
        fn: the calling function's or layer's name, for the message.
        name: the argument's name, for the message.
        shape: the argument's shape.
        target: the shape it must broadcast to.
        described: the target in words, e.g. '(batch, heads, T, S)'.

    Raises:
        ValueError: shape has more dimensions than target, or a size that is neither 1 nor target's.
    """
    shape, target = tuple(shape), tuple(target)
    ok = len(shape) <= len(target) and all(a in (1, b) for a, b in zip(shape[::-1], target[::-1]))
    if not ok:
        raise ValueError(f'{fn}: {name} of shape {shape} does not broadcast to {described} = {target}')
