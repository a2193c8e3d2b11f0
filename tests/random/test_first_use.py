"""Generators make their key on first use: importing objax touches no device, and the numbers are unchanged."""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

import objax

SRC = Path(__file__).resolve().parents[2] / 'src'


def test_importing_objax_and_its_subpackages_touches_no_device():
    # jax_num_cpu_devices can only change before JAX initialises its backend (as jax.distributed.initialize).
    code = ('import objax, objax.nn, objax.functional, objax.optimizer, objax.io, objax.zoo, objax.privacy, '
            'objax.util, objax.jaxboard, objax.random, objax.sharding\n'
            'import jax\n'
            'jax.config.update("jax_num_cpu_devices", 3)\n'
            'print(len(jax.devices("cpu")), objax.random.normal((2,)))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                         env={'PYTHONPATH': str(SRC), 'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'})
    assert out.returncode == 0, out.stderr[-3000:]
    count, numbers = out.stdout.split(' ', 1)
    assert count == '3'
    np.testing.assert_array_equal(np.array(numbers.strip(' []\n').split(), np.float32),
                                  np.asarray(objax.random.normal((2,), generator=objax.random.Generator(0))))


def test_a_key_made_on_first_use_equals_prng_key():
    for seed in (0, 7, 2 ** 31 + 5):
        gen = objax.random.Generator(seed)
        np.testing.assert_array_equal(np.asarray(gen.key.value), np.asarray(jax.random.PRNGKey(seed)))
        assert gen.key.value.dtype == np.uint32


def test_first_use_inside_a_jax_transformation_makes_a_concrete_key():
    gen, ref = objax.random.Generator(3), objax.random.Generator(3)
    keys = jax.jit(lambda: gen())()  # first use while jax.jit traces
    np.testing.assert_array_equal(np.asarray(keys), np.asarray(ref()))
    assert not isinstance(gen.key.value, jax.core.Tracer)
    np.testing.assert_array_equal(np.asarray(gen.key.value), np.asarray(ref.key.value))
    with jax.threefry_partitionable(False):  # Objax's classic threefry split
        np.testing.assert_array_equal(np.asarray(ref.key.value), np.asarray(jax.random.split(jax.random.PRNGKey(3))[0]))


def test_first_use_inside_a_compiled_transform():
    gen = objax.random.Generator(11)
    step = objax.Jit(lambda: objax.random.uniform((3,), generator=gen), gen.vars())
    first, second = step(), step()
    ref = objax.random.Generator(11)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(objax.random.uniform((3,), generator=ref)))
    np.testing.assert_array_equal(np.asarray(second), np.asarray(objax.random.uniform((3,), generator=ref)))
    assert 'Generator' in repr(gen.vars())
