"""Random numbers from generators that keep their key in a RandomState (Objax 1.x streams).

Keys are split and sampled with JAX's classic (non-partitionable) threefry, scoped locally with
`jax.threefry_partitionable(False)`, so the same seeds give the numbers Objax 1.x gave; the user's global
JAX configuration is never changed.
"""

import functools
from typing import Tuple, Union

import jax
import jax.numpy as jn
import numpy as np

from objax.module import Module
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import RandomState

__all__ = ['Generator', 'DEFAULT_GENERATOR', 'normal', 'randint', 'truncated_normal', 'uniform']

Shape = Union[int, Tuple[int, ...]]


class Generator(Module):
    """A random key generator: each call returns a fresh key and advances its RandomState."""

    def __init__(self, seed: int = 0):
        self._key = RandomState(seed)

    def seed(self, seed: int = 0):
        """Restarts the stream from `seed`."""
        self._key.seed(seed)

    @property
    def key(self) -> RandomState:
        """The RandomState holding this generator's key."""
        return self._key

    def __call__(self) -> JaxArray:
        """A new key of shape (2,)."""
        return self._key.split(1)[0]

    def vars(self, scope: str = '') -> VarCollection:
        """One variable, the key, named `scope(Generator).key`."""
        vc = VarCollection()
        vc[f'{scope}({type(self).__name__}).key'] = self._key
        self._key.__dict__['_name'] = f'{scope}({type(self).__name__}).key'
        return vc

    def __repr__(self):
        return f'{type(self).__name__}(key={self._key!r})'


DEFAULT_GENERATOR = Generator(0)


def _shape(shape: Shape) -> Tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    try:
        return tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f'shape must be an int or a tuple of ints, got {shape!r}') from None


def _unit_bits_to_float(bits: JaxArray, dtype) -> JaxArray:
    """Maps random bits to floats in [0, 1) with the exponent-trick Objax 1.x's JAX used."""
    info = jn.finfo(dtype)
    uint = {16: jn.uint16, 32: jn.uint32, 64: jn.uint64}[info.bits]
    mantissa = jax.lax.shift_right_logical(bits, jn.array(info.bits - info.nmant, uint))
    one = jn.array(np.array(1, dtype).view(np.dtype(uint)), uint)
    return jax.lax.bitcast_convert_type(mantissa | one, dtype) - jn.array(1, dtype)


def _standard_normal(key: JaxArray, shape: Tuple[int, ...], dtype) -> JaxArray:
    # Objax 1.x's streams: u = 2 * U[0, 1) - 1 clipped above -1, then sqrt(2) * erfinv(u).
    bits = jax.random.bits(key, shape, {16: jn.uint16, 32: jn.uint32, 64: jn.uint64}[jn.finfo(dtype).bits])
    floats = _unit_bits_to_float(bits, dtype)
    lower = np.nextafter(np.array(-1, dtype), np.array(0, dtype))
    u = jax.lax.max(jn.asarray(lower, dtype), floats * jn.array(2, dtype) - jn.array(1, dtype))
    return jn.array(np.sqrt(2), dtype) * jax.lax.erf_inv(u)


# Each sampler below is one compiled program per shape instead of one per eager operation: building a model
# samples many new shapes, and compiling every small operation separately dominated its construction.
@functools.partial(jax.jit, static_argnums=1)
def _normal(key: JaxArray, shape: Tuple[int, ...], mean, stddev) -> JaxArray:
    return _standard_normal(key, shape, jn.zeros(0).dtype) * stddev + mean


@functools.partial(jax.jit, static_argnums=1)
def _truncated_normal(key: JaxArray, shape: Tuple[int, ...], lower, upper, stddev) -> JaxArray:
    return jax.random.truncated_normal(key, lower=lower, upper=upper, shape=shape) * stddev


def normal(shape: Shape, *, mean: float = 0, stddev: float = 1,
           generator: Generator = DEFAULT_GENERATOR) -> JaxArray:
    """Samples of N(mean, stddev^2) with the given shape."""
    shape = _shape(shape)
    key = generator()
    with jax.threefry_partitionable(False):
        return _normal(key, shape, mean, stddev)


def uniform(shape: Shape, generator: Generator = DEFAULT_GENERATOR) -> JaxArray:
    """Samples of U[0, 1) with the given shape."""
    shape = _shape(shape)
    key = generator()
    with jax.threefry_partitionable(False):
        return jax.random.uniform(key, shape)


def truncated_normal(shape: Shape, *, stddev: float = 1, lower: float = -2, upper: float = 2,
                     generator: Generator = DEFAULT_GENERATOR) -> JaxArray:
    """Samples of a standard normal truncated to [lower, upper], then scaled by stddev."""
    shape = _shape(shape)
    if not lower < upper:
        raise ValueError(f'truncated_normal: lower ({lower}) must be smaller than upper ({upper})')
    key = generator()
    with jax.threefry_partitionable(False):
        return _truncated_normal(key, shape, lower, upper, stddev)


def randint(shape: Shape, low: int, high: int, generator: Generator = DEFAULT_GENERATOR) -> JaxArray:
    """Integers drawn uniformly from [low, high)."""
    shape = _shape(shape)
    if not low < high:
        raise ValueError(f'randint: low ({low}) must be smaller than high ({high})')
    key = generator()
    with jax.threefry_partitionable(False):
        return jax.random.randint(key, shape, minval=low, maxval=high)
