"""Module path `objax.vectorize`: Vectorize and its ArgumentCountError."""

from objax._core.vectorize import ArgumentCountError, Vectorize

__all__ = ['Vectorize', 'ArgumentCountError']
