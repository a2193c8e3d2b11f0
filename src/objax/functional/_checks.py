"""Argument checks shared by the image functions (NCHW inputs, positive sizes)."""

import numbers
from typing import Tuple, Union

from objax.typing import JaxArray
from objax.util.conversion import to_tuple

__all__ = ['check_nchw', 'positive_pair']


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
