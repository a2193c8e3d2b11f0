"""Module path `objax.jit`: Jit."""

from objax._core.jit import Jit

__all__ = ['Jit']
