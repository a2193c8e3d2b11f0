"""Stateless functions: activations, losses, pooling and re-exported jax functions."""

from objax.functional.activation import relu

__all__ = ['relu']
