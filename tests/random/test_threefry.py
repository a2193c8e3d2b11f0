"""objax.random draws concrete keys block by block (objax/_threefry.py): bit for bit the numbers of jax.random's
classic threefry, without compiling a program per shape. Also the Generator's key name, repr and seed check."""

import logging
import warnings

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax import _threefry

# One element, odd and even counts, a block boundary and one past it, several blocks with an odd count.
SHAPES = [(1,), (5, 7), (3, 3, 16, 32), (2 * _threefry._SMALL_BLOCK + 1,), (301, 300)]


def classic(fn):
    """fn run with jax.random's classic (non-partitionable) threefry, compiled as one program per shape.

    Parameters are passed as arguments (not constants XLA would fold), as objax.random always passed them."""
    def run(*args):
        with jax.threefry_partitionable(False):
            return np.asarray(jax.jit(fn)(*args))
    return run


def objax1_normal(key, shape, mean, stddev):
    """Objax 1.x's normal: sqrt(2) erfinv(max(2U - 1, nextafter(-1, 0))) * stddev + mean, U from 23 bits."""
    bits = jax.random.bits(key, shape, jn.uint32)
    u = jax.lax.bitcast_convert_type((bits >> 9) | jn.uint32(0x3F800000), jn.float32) - 1
    u = jax.lax.max(np.nextafter(np.float32(-1), np.float32(0)), u * 2 - 1)
    return jn.float32(np.sqrt(2)) * jax.lax.erf_inv(u) * stddev + mean


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def test_split_key_is_jax_split():
    for seed in (0, 1, 42, 1337, 2 ** 31 + 5):
        key = jax.random.PRNGKey(seed)
        with jax.threefry_partitionable(False):
            expected = np.asarray(jax.random.split(key, 2))
        kept, new = _threefry.split_key(np.asarray(key))
        np.testing.assert_array_equal(np.stack([kept, new]), expected)


def key_of(seed):
    """The key that the first draw of objax.random.Generator(seed) uses."""
    with jax.threefry_partitionable(False):
        return jax.random.split(jax.random.PRNGKey(seed))[1]


@pytest.mark.parametrize('shape', SHAPES)
def test_samplers_equal_jax_random_bit_for_bit(shape):
    key = key_of(shape[0])
    for mean, stddev in ((0.0, 0.05892557), (-1.5, 3.0)):
        same_bits(objax.random.normal(shape, mean=mean, stddev=stddev, generator=objax.random.Generator(shape[0])),
                  classic(lambda k, m, s: objax1_normal(k, shape, m, s))(key, mean, stddev))
    for lower, upper, stddev in ((-2.0, 2.0, 0.3), (-0.1, 0.1, 1.0)):
        same_bits(objax.random.truncated_normal(shape, stddev=stddev, lower=lower, upper=upper,
                                                generator=objax.random.Generator(shape[0])),
                  classic(lambda k, lo, up, s: jax.random.truncated_normal(k, lo, up, shape) * s)(
                      key, lower, upper, stddev))
    same_bits(objax.random.uniform(shape, generator=objax.random.Generator(shape[0])),
              classic(lambda k: jax.random.uniform(k, shape))(key))


def test_large_blocks_equal_jax_random():
    shape = (2 * _threefry._LARGE_FROM + 3,)
    key = jax.random.PRNGKey(7)
    same_bits(_threefry.sample('normal', key, shape, 0.0, 0.01),
              classic(lambda k, m, s: objax1_normal(k, shape, m, s))(key, 0.0, 0.01))


def test_empty_shape():
    assert objax.random.normal((0, 3)).shape == (0, 3)
    assert objax.random.truncated_normal((2, 0)).shape == (2, 0)


def test_public_functions_use_the_generator_stream():
    gen = objax.random.Generator(5)
    ref = objax.random.Generator(5)
    for draw, expect, params in (
            (lambda: objax.random.normal((4, 3), mean=1, stddev=2, generator=gen),
             lambda k, m, s: objax1_normal(k, (4, 3), m, s), (1.0, 2.0)),
            (lambda: objax.random.truncated_normal((9,), stddev=0.5, lower=-1, upper=1, generator=gen),
             lambda k, lo, up, s: jax.random.truncated_normal(k, lo, up, (9,)) * s, (-1.0, 1.0, 0.5)),
            (lambda: objax.random.uniform((2, 5), generator=gen), lambda k: jax.random.uniform(k, (2, 5)), ())):
        with jax.threefry_partitionable(False):
            key = ref.key.split(1)[0]
        same_bits(draw(), classic(expect)(key, *params))
    np.testing.assert_array_equal(gen.key.value, ref.key.value)


def test_generator_split_in_numpy_matches_random_state_split():
    gen, state = objax.random.Generator(1337), objax.RandomState(1337)
    for _ in range(3):
        np.testing.assert_array_equal(gen(), state.split(1)[0])
        np.testing.assert_array_equal(gen.key.value, state.value)
    assert isinstance(gen(), jax.Array)


def test_traced_keys_fall_back_to_jax_random():
    gen = objax.random.Generator(3)
    ref = objax.random.Generator(3)
    f = objax.Jit(lambda: objax.random.normal((3, 4), stddev=0.5, generator=gen), gen.vars())
    got = f()
    with jax.threefry_partitionable(False):
        key = ref.key.split(1)[0]
    same_bits(got, classic(lambda k, s: objax1_normal(k, (3, 4), 0.0, s))(key, 0.5))
    np.testing.assert_array_equal(gen.key.value, ref.key.value)
    # jax.jit straight on a function drawing from a concrete key: the block path steps aside.
    out = jax.jit(lambda x: x + objax.random.normal((2,), generator=objax.random.Generator(0)))(jn.zeros(2))
    same_bits(out, objax.random.normal((2,), generator=objax.random.Generator(0)))


def test_new_shapes_compile_nothing(caplog):
    objax.random.normal((3,))
    objax.random.truncated_normal((3,))
    objax.random.uniform((3,))
    objax.random.Generator(0)()
    with caplog.at_level(logging.WARNING, logger='jax'), jax.log_compiles(True):
        for shape in ((17, 5), (3, 3, 7, 11), (1000,), (2, 3, 4, 5, 6)):
            objax.random.normal(shape, stddev=0.1)
            objax.random.truncated_normal(shape, stddev=0.2)
            objax.random.uniform(shape)
        objax.random.Generator(9)()
    compiled = [r.getMessage() for r in caplog.records if 'Compiling' in r.getMessage()]
    assert compiled == []
    with caplog.at_level(logging.WARNING, logger='jax'), jax.log_compiles(True):  # the log does show compiles
        jax.jit(lambda x: x * 3)(jn.ones(7))
    assert any('Compiling' in r.getMessage() for r in caplog.records)


def test_wide_resnet_weights_unchanged_by_block_sampling():
    """Weights of a model built with block sampling equal those drawn per shape with jax.random."""
    objax.random.DEFAULT_GENERATOR.seed(11)
    model = objax.zoo.wide_resnet.WideResNet(3, 10, depth=10, width=1)
    ref = objax.random.Generator(11)
    conv = model[0].w.value
    with jax.threefry_partitionable(False):
        key = ref.key.split(1)[0]
    stddev = float(np.sqrt(2 / (3 * 3 * 16)))
    same_bits(conv, classic(lambda k, m, s: objax1_normal(k, (3, 3, 3, 16), m, s))(key, 0.0, stddev))


def test_generator_names_repr_and_seed_warning():
    gen = objax.random.Generator(123)
    assert repr(gen) == 'objax.random.Generator(seed=123)'
    gen.seed(7)
    assert repr(gen) == 'objax.random.Generator(seed=7)'
    assert repr(objax.random.Generator()) == 'objax.random.Generator(seed=0)'
    assert list(gen.vars().keys()) == ['(Generator)._key']
    assert list(objax.nn.Dropout(0.5).vars().keys()) == ['(Dropout).keygen(Generator)._key']
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        objax.random.Generator(2 ** 32 - 1)
    with pytest.warns(UserWarning, match=r'seed 4294967301 .*same numbers as seed 5'):
        big = objax.random.Generator(2 ** 32 + 5)
    np.testing.assert_array_equal(big(), objax.random.Generator(5)())
    with pytest.warns(UserWarning, match='2\\*\\*32'):
        gen.seed(2 ** 40)


def test_placement_follows_the_key():
    """Draws land where jax.random would put them: committed to the key's device(s) when the key is."""
    dev = jax.devices()[-1]
    gen = objax.random.Generator(4)
    gen.key.assign(jax.device_put(gen.key.value, dev))
    key = gen()
    assert key.committed and key.devices() == {dev} and gen.key.value.devices() == {dev}
    x = objax.random.normal((3, 5), generator=gen)
    assert x.committed and x.devices() == {dev}
    free = objax.random.normal((3, 5), generator=objax.random.Generator(4))
    assert not free.committed
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ('d',))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    gen.key.assign(jax.device_put(gen.key.value, replicated))
    x = objax.random.truncated_normal((4, 2), generator=gen)
    assert x.sharding.is_fully_replicated and x.devices() == set(jax.devices())
    ref = objax.random.Generator(4)
    ref(), ref()
    same_bits(x, objax.random.truncated_normal((4, 2), generator=ref))
