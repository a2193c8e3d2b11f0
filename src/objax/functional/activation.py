"""Activation functions."""

import jax

from objax.typing import JaxArray

__all__ = ['relu']


def relu(x: JaxArray) -> JaxArray:
    """max(x, 0), element-wise."""
    return jax.nn.relu(x)
