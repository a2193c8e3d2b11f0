"""Cross-device reductions for functions run by objax.Parallel (mapped axis named 'device' by default)."""

import jax

from objax.typing import JaxArray

__all__ = ['pmax', 'pmean', 'pmin', 'psum']


def pmax(x: JaxArray, axis_name: str = 'device'):
    """Element-wise maximum of x across the devices of axis_name."""
    return jax.lax.pmax(x, axis_name)


def pmean(x: JaxArray, axis_name: str = 'device'):
    """Element-wise mean of x across the devices of axis_name."""
    return jax.lax.pmean(x, axis_name)


def pmin(x: JaxArray, axis_name: str = 'device'):
    """Element-wise minimum of x across the devices of axis_name."""
    return jax.lax.pmin(x, axis_name)


def psum(x: JaxArray, axis_name: str = 'device'):
    """Element-wise sum of x across the devices of axis_name."""
    return jax.lax.psum(x, axis_name)
