"""Module path `objax.parallel`: Parallel."""

from objax._core.parallel import Parallel

__all__ = ['Parallel']
