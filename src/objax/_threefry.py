"""JAX's classic threefry random streams, computed without compiling one program per shape.

`jax.random` with `threefry_partitionable(False)` draws the n 32-bit words of a shape as
`threefry2x32(key, iota(n))`: the counters are padded to an even length 2h (a trailing 0), and counter i is
hashed together with counter h + i; the first word of each hashed pair lands at position i, the second at
h + i. Every word is therefore a function of (key, i, h, n) only, so a program over a fixed-size block of
pairs, told where the block starts, produces any shape's words block by block: one compilation per
distribution, whatever the shapes. The blocks are assembled on the host.

The bits -> float transforms repeat, operation for operation, the ones of `objax.random` and `jax.random`
(tests check the results bit for bit against `jax.random`).
"""

import functools
from typing import Optional, Tuple

import jax
import jax.numpy as jn
import numpy as np

__all__ = []

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = 0x1BD11BDA
# Pairs per block: small blocks for the many small tensors of a model (a WRN-28-2 compiles only these);
# tensors of more than _LARGE_FROM pairs (a VGG19's fully connected layers) use large ones.
_SMALL_BLOCK = 1 << 14
_LARGE_BLOCK = 1 << 19
_LARGE_FROM = 1 << 21
_MAX_WORDS = (1 << 32) - 2  # jax.random switches to several sub-keys beyond 2**32 - 1 words


def threefry2x32(xp, k0, k1, x0, x1):
    """The 20-round Threefry-2x32 hash of the uint32 counter pairs (x0, x1) under the key (k0, k1).

    Args:
        xp: `numpy` or `jax.numpy`.
        k0, k1: uint32 arrays (broadcastable), the two words of the key.
        x0, x1: uint32 arrays of the same shape, the counters.

    Returns:
        The two hashed words (y0, y1), uint32 arrays shaped like x0.
    """
    keys = (k0, k1, k0 ^ k1 ^ xp.uint32(_KEY_PARITY))
    x0 = x0 + keys[0]
    x1 = x1 + keys[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = (x1 << xp.uint32(r)) | (x1 >> xp.uint32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + keys[(i + 1) % 3]
        x1 = x1 + keys[(i + 2) % 3] + xp.uint32(i + 1)
    return x0, x1


def split_key(key: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """`jax.random.split(key, 2)` (classic threefry) in numpy.

    Args:
        key: uint32 array of shape (2,).

    Returns:
        The two new keys, uint32 arrays of shape (2,).
    """
    k = np.asarray(key, np.uint32).reshape(2, 1)
    y0, y1 = threefry2x32(np, k[0], k[1], np.array([0, 1], np.uint32), np.array([2, 3], np.uint32))
    return y0, y1


def key_placement(key):
    """Where results drawn from `key` go, as jax.random would put them: None (the default device, uncommitted)
    for an uncommitted array or a numpy key, the key's sharding for a committed, fully replicated one, and
    False for a key split across devices (that case is left to jax.random)."""
    if not isinstance(key, jax.Array) or not key.committed:
        return None
    return key.sharding if key.sharding.is_fully_replicated else False


def _unit_floats(bits: jax.Array) -> jax.Array:
    """uint32 words -> float32 in [0, 1): 23 random mantissa bits under the exponent of 1.0, minus 1."""
    mantissa = jax.lax.shift_right_logical(bits, jn.array(32 - 23, jn.uint32))
    one = jn.array(np.array(1, np.float32).view(np.uint32), jn.uint32)
    return jax.lax.bitcast_convert_type(mantissa | one, jn.float32) - jn.array(1, jn.float32)


def _transform(bits: jax.Array, kind, a, b, c) -> jax.Array:
    """uint32 words -> samples of one of three distributions, chosen by the traced int `kind`.

    All three compute u = max(low, f * scale + offset) from f uniform in [0, 1), with scalars chosen so that
    each operation equals, bit for bit, the one of the reference sampler:

    - 0, normal (a = mean, b = stddev), as objax.random.normal: low = nextafter(-1, 0), scale 2, offset -1;
      returns sqrt(2) erfinv(u) * stddev + mean (written as the reference writes it: XLA reassociates the
      two multiplications into erfinv(u) * (sqrt(2) stddev), and must do so here as well).
    - 1, truncated normal (a = lower, b = upper, c = stddev), as jax.random.truncated_normal(...) * stddev:
      with A = erf(lower / sqrt 2) and B = erf(upper / sqrt 2), low = A, scale = B - A, offset = A; returns
      sqrt(2) erfinv(u) clipped to the open interval (lower, upper), times stddev.
    - 2, uniform, as jax.random.uniform: low 0, scale 1, offset 0; returns u.
    """
    f32 = jn.float32
    sqrt2 = np.array(np.sqrt(2), np.float32)
    a, b, c = (jax.lax.convert_element_type(v, f32) for v in (a, b, c))
    erf_lower, erf_upper = jax.lax.erf(a / sqrt2), jax.lax.erf(b / sqrt2)
    is_normal, is_truncated = kind == 0, kind == 1
    low = jn.where(is_normal, np.nextafter(np.float32(-1), np.float32(0)), jn.where(is_truncated, erf_lower, f32(0)))
    scale = jn.where(is_normal, f32(2), jn.where(is_truncated, erf_upper - erf_lower, f32(1)))
    offset = jn.where(is_normal, f32(-1), jn.where(is_truncated, erf_lower, f32(0)))
    inf = np.array(np.inf, np.float32)
    clip_low, clip_high = jax.lax.nextafter(a, inf), jax.lax.nextafter(b, -inf)
    u = jax.lax.max(low, _unit_floats(bits) * scale + offset)
    erfinv = jax.lax.erf_inv(u)
    normal = sqrt2 * erfinv * b + a
    truncated = jn.clip(sqrt2 * erfinv, clip_low, clip_high) * c
    return jn.where(is_normal, normal, jn.where(is_truncated, truncated, u))


_KINDS = {'normal': 0, 'truncated_normal': 1, 'uniform': 2}


@functools.partial(jax.jit, static_argnums=0)
def _block(size: int, key, start, half, count, kind, a, b, c) -> jax.Array:
    """Samples for counter pairs start .. start + size - 1 of a draw of `count` words: positions start + j and
    half + start + j of the draw, two arrays of shape (size,)."""
    i = start + jax.lax.iota(jn.uint32, size)
    partner = half + i
    partner = jn.where(partner < count, partner, jn.uint32(0))  # the padding counter of an odd count
    y0, y1 = threefry2x32(jn, key[0], key[1], i, partner)
    # Two outputs rather than one stacked array: XLA vectorizes two plain elementwise loops, not one that
    # interleaves a concatenation (8 times slower on CPU).
    return _transform(y0, kind, a, b, c), _transform(y1, kind, a, b, c)


def sample(kind: str, key, shape: Tuple[int, ...], *params) -> Optional[jax.Array]:
    """Draws `kind` ('normal', 'truncated_normal' or 'uniform') of float32 `shape` from `key` block by block.

    Returns the same values as the one-program-per-shape sampler, or None when this path does not apply
    (the key or a parameter is being traced, a parameter is not a scalar, the draw has one element or more
    than 2**32 - 2); the caller then samples directly.
    """
    if isinstance(key, jax.core.Tracer) or any(isinstance(p, jax.core.Tracer) or np.ndim(p) for p in params):
        return None
    placement = key_placement(key)
    if placement is False or np.shape(key) != (2,):
        return None
    count = int(np.prod(shape, dtype=np.int64))
    if count == 1 or count > _MAX_WORDS:
        # XLA compiles a one-element program differently (mean + product rounded as one operation), so its
        # numbers can differ in the last bit from any larger program's: keep drawing those per shape.
        return None
    if count == 0:
        return jax.device_put(np.zeros(shape, np.float32), placement)
    half = (count + 1) // 2
    size = _LARGE_BLOCK if half > _LARGE_FROM else _SMALL_BLOCK
    key = np.asarray(key, np.uint32)
    params = [np.float32(p) for p in params] + [np.float32(0)] * (3 - len(params))
    blocks = [_block(size, key, np.uint32(start), np.uint32(half), np.uint32(count), np.int32(_KINDS[kind]),
                     *params) for start in range(0, half, size)]
    if isinstance(blocks[0][0], jax.core.Tracer):  # called under a jax transformation with a concrete key
        return None
    out = np.empty(2 * half, np.float32)
    for start, (first, second) in zip(range(0, half, size), blocks):
        n = min(size, half - start)
        out[start:start + n] = np.asarray(first)[:n]
        out[half + start:half + start + n] = np.asarray(second)[:n]
    return jax.device_put(out[:count].reshape(shape), placement)
