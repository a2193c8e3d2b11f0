"""Objax 1.8 module path `objax.functional.core`: activations, ops and pooling (aliases of objax.functional)."""

from objax.functional.core import activation, ops, pooling
from objax.functional.core.activation import *  # noqa: F401,F403 (the names listed in activation.__all__)
from objax.functional.core.ops import *  # noqa: F401,F403
from objax.functional.core.pooling import *  # noqa: F401,F403

__all__ = ['activation', 'ops', 'pooling'] + activation.__all__ + ops.__all__ + pooling.__all__
