"""Differential privacy: DP-SGD training and its privacy accounting."""

from objax.privacy import dpsgd

__all__ = ['dpsgd']
