"""Random numbers from generators that keep their key in a RandomState (Objax 1.x streams).

Keys are split and sampled with JAX's classic (non-partitionable) threefry, scoped locally with
`jax.threefry_partitionable(False)`, so the same seeds give the numbers Objax 1.x gave; the user's global
JAX configuration is never changed.
"""

import functools
import warnings
from typing import Tuple, Union

import jax
import jax.numpy as jn
import numpy as np

from objax import _threefry
from objax.module import Module
from objax.typing import JaxArray
from objax.variable import RandomState

__all__ = ['Generator', 'DEFAULT_GENERATOR', 'normal', 'randint', 'truncated_normal', 'uniform']

Shape = Union[int, Tuple[int, ...]]


def _check_seed(seed: int, where: str) -> None:
    if isinstance(seed, (int, np.integer)) and seed >= 2 ** 32:
        warnings.warn(f'{where}: seed {seed} is not below 2**32; keys are made from its lowest 32 bits, so it gives '
                      f'the same numbers as seed {seed % 2 ** 32}', UserWarning, stacklevel=3)


class Generator(Module):
    """A random key generator: each call returns a fresh key and advances its RandomState.

    Args:
        seed: the seed of the stream; seeds of 2**32 and above keep their lowest 32 bits (with a warning).
    """

    def __init__(self, seed: int = 0):
        _check_seed(seed, 'objax.random.Generator')
        self._seed = seed
        # The key is made on first use: creating a generator (DEFAULT_GENERATOR at import) touches no device, so
        # jax.distributed.initialize() may run after `import objax`.
        self._key = RandomState.on_first_use(seed)

    def seed(self, seed: int = 0):
        """Restarts the stream from `seed`.

        Args:
            seed: the new seed; the same seed gives the same keys again.
        """
        _check_seed(seed, 'objax.random.Generator.seed')
        self._key.seed(seed)
        self._seed = seed

    @property
    def key(self) -> RandomState:
        """The RandomState holding this generator's key."""
        return self._key

    def __call__(self) -> JaxArray:
        """A new key of shape (2,): the second half of a classic-threefry split of the current key."""
        key = self._key.value
        placement = None if isinstance(key, jax.core.Tracer) else _threefry.key_placement(key)
        if isinstance(key, jax.core.Tracer) or placement is False or key.shape != (2,) or key.dtype != jn.uint32:
            return self._key.split(1)[0]
        # A concrete key is split in numpy, bit for bit as jax.random.split (no device program per call).
        kept, new = _threefry.split_key(np.asarray(key))
        self._key.assign(jax.device_put(kept, placement))
        return jax.device_put(new, placement)

    def __repr__(self):
        return f'objax.random.Generator(seed={self._seed})'


DEFAULT_GENERATOR = Generator(0)


def _shape(shape: Shape) -> Tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    try:
        return tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f'shape must be an int or a tuple of ints, got {shape!r}') from None


def _default_float_is_32() -> bool:
    """Whether floats default to float32 (64-bit mode off): the block-wise samplers only produce float32."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float32


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
    """Samples of N(mean, stddev^2) with the given shape.

    Args:
        shape: the output shape, an int n for (n,) or a tuple of ints.
        mean: the mean of the distribution.
        stddev: its standard deviation.
        generator: the generator whose next key is used (default DEFAULT_GENERATOR); it advances by one key.

    Returns:
        Floats of shape `shape` (float32 unless JAX's 64-bit mode is on).

    Raises:
        TypeError: `shape` is not an int or a tuple of ints.
    """
    shape = _shape(shape)
    key = generator()
    if _default_float_is_32():
        fast = _threefry.sample('normal', key, shape, mean, stddev)
        if fast is not None:
            return fast
    with jax.threefry_partitionable(False):
        return _normal(key, shape, mean, stddev)


def uniform(shape: Shape, generator: Generator = DEFAULT_GENERATOR) -> JaxArray:
    """Samples of U[0, 1) with the given shape.

    Args:
        shape: the output shape, an int n for (n,) or a tuple of ints.
        generator: the generator whose next key is used (default DEFAULT_GENERATOR); it advances by one key.

    Returns:
        Floats of shape `shape` (float32 unless JAX's 64-bit mode is on).

    Raises:
        TypeError: `shape` is not an int or a tuple of ints.
    """
    shape = _shape(shape)
    key = generator()
    if _default_float_is_32():
        fast = _threefry.sample('uniform', key, shape)
        if fast is not None:
            return fast
    with jax.threefry_partitionable(False):
        return jax.random.uniform(key, shape)


def truncated_normal(shape: Shape, *, stddev: float = 1, lower: float = -2, upper: float = 2,
                     generator: Generator = DEFAULT_GENERATOR) -> JaxArray:
    """Samples of a standard normal truncated to [lower, upper], then scaled by stddev.

    Args:
        shape: the output shape, an int n for (n,) or a tuple of ints.
        stddev: the factor applied after truncation (the bounds are in units of the standard normal).
        lower: the lower bound of the standard normal samples.
        upper: their upper bound.
        generator: the generator whose next key is used (default DEFAULT_GENERATOR); it advances by one key.

    Returns:
        Floats of shape `shape`, in [lower * stddev, upper * stddev] for a positive stddev.

    Raises:
        TypeError: `shape` is not an int or a tuple of ints.
        ValueError: `lower` is not smaller than `upper` (no key is consumed).
    """
    shape = _shape(shape)
    if not lower < upper:
        raise ValueError(f'truncated_normal: lower ({lower}) must be smaller than upper ({upper})')
    key = generator()
    if _default_float_is_32():
        fast = _threefry.sample('truncated_normal', key, shape, lower, upper, stddev)
        if fast is not None:
            return fast
    with jax.threefry_partitionable(False):
        return _truncated_normal(key, shape, lower, upper, stddev)


def randint(shape: Shape, low: int, high: int, generator: Generator = DEFAULT_GENERATOR) -> JaxArray:
    """Integers drawn uniformly from [low, high).

    Args:
        shape: the output shape, an int n for (n,) or a tuple of ints.
        low: the smallest value (inclusive).
        high: the bound (exclusive).
        generator: the generator whose next key is used (default DEFAULT_GENERATOR); it advances by one key.

    Returns:
        Integers of shape `shape` (JAX's default int dtype, int32 unless 64-bit mode is on).

    Raises:
        TypeError: `shape` is not an int or a tuple of ints.
        ValueError: `low` is not smaller than `high` (no key is consumed).
    """
    shape = _shape(shape)
    if not low < high:
        raise ValueError(f'randint: low ({low}) must be smaller than high ({high})')
    key = generator()
    with jax.threefry_partitionable(False):
        return jax.random.randint(key, shape, minval=low, maxval=high)
