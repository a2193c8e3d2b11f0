"""Utilities."""

from objax.util.renamer import Renamer

__all__ = ['Renamer']
