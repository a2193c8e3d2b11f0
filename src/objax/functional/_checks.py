"""Argument checks shared by the image functions (NCHW inputs, positive sizes)."""

import numbers
from typing import Tuple, Union

from objax.typing import JaxArray
from objax.util.conversion import to_tuple

__all__ = []


def _check_nchw(fn: str, x: JaxArray):
    if getattr(x, 'ndim', None) != 4:
        raise ValueError(f'{fn}: x must be a 4D NCHW array, got shape {tuple(getattr(x, "shape", ()))}')


def _positive_pair(fn: str, name: str, v: Union[Tuple[int, int], int]) -> Tuple[int, int]:
    try:
        pair = to_tuple(v, 2)
        if len(pair) != 2:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f'{fn}: {name} must be a positive int or a pair of positive ints, got {v!r}') from None
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in pair):
        raise ValueError(f'{fn}: {name} must be a positive int or a pair of positive ints, got {v!r}')
    return int(pair[0]), int(pair[1])
