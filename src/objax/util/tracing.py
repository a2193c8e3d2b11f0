"""Objax 1.8 module path `objax.util.tracing`: finding the variables a function uses."""

from objax._core.introspect import find_used_variables

__all__ = ['find_used_variables']
