"""Which values share their device buffer with another live jax.Array (objax._core.aliases.shared_buffers)."""

import jax
import jax.numpy as jn
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

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

