"""Utilities."""

from objax.util.renamer import Renamer
from objax.util.conversion import to_interpolate, to_padding, to_tuple
from objax.util import check

__all__ = ['Renamer']
__all__ += ['to_interpolate', 'to_padding', 'to_tuple', 'check']
