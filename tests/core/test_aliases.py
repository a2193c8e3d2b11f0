"""Which values share their device buffer with another live jax.Array (objax._core.aliases.shared_buffers)."""

import jax
import jax.numpy as jn
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import objax
from objax._core.aliases import shared_buffers


def _sharded(n: int = 16):
    mesh = jax.make_mesh((8,), ('d',))
    return jax.device_put(jn.arange(float(n)), NamedSharding(mesh, P('d')))


def test_the_per_device_arrays_jax_keeps_with_a_sharded_value_are_not_aliases():
    x = _sharded()
    assert [s.data.shape for s in x.addressable_shards] == [(2,)] * 8  # jax now keeps one array per device
    assert len([a for a in jax.live_arrays() if a.sharding.num_devices == 1]) >= 8
    assert shared_buffers([x], [0]) == []


@pytest.mark.parametrize('hold', [lambda x: x.addressable_data(3),
                                  lambda x: x.addressable_shards[3].data,
                                  lambda x: x.addressable_shards[3],
                                  lambda x: x.addressable_shards,
                                  lambda x: jax.make_array_from_single_device_arrays(
                                      x.shape, x.sharding, [s.data for s in x.addressable_shards]),
                                  lambda x: jax.device_put(x.addressable_data(0), x.addressable_data(0).device)],
                         ids=['addressable_data', 'shard_data', 'shard', 'shard_list', 'same_shards', 'shard_copy'])
def test_a_held_shard_or_another_array_on_the_buffers_is_an_alias(hold):
    x, y = _sharded(), _sharded()
    held = hold(x)
    assert shared_buffers([x, y], [0, 1]) == [0]
    del held
    assert shared_buffers([x, y], [0, 1]) == []


def test_an_exposed_sharded_value_is_donated_in_place():
    counter = objax.StateVar(jn.arange(16.))
    vc = objax.VarCollection({'counter': counter})
    objax.sharding.set_spec(counter, P('data'))
    objax.sharding.shard(vc, objax.sharding.make_mesh({'data': 8}))
    step = objax.Jit(lambda: counter.assign(counter.value + 1), vc)
    step()
    pointers = [s.data.unsafe_buffer_pointer() for s in counter.value.addressable_shards]  # exposed, shards made
    step()  # nothing but the value itself uses its buffers: no copy
    assert [s.data.unsafe_buffer_pointer() for s in counter.value.addressable_shards] == pointers
    np.testing.assert_array_equal(counter.value, np.arange(16.) + 2)
