"""Aliases: the other jax.Arrays that use the device buffer of a variable's value.

Donating a value deletes every jax.Array on its buffer, so a donating call copies a value that another live array
shares (see objax._core.lending). Besides arrays made by user code (`jax.device_put` to the same device,
`addressable_data`...), a value laid out on several devices has arrays of its own on its buffers: jax makes one
per device the first time its shards are asked for, and keeps them with the value. Those are not aliases unless
something else holds them (or the Shard objects that hold them).
"""

from sys import getrefcount
from typing import Dict, List, Optional, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from objax._core.refs import Ref, Tracer

__all__ = ['shared_buffers']

_FREE_COUNTS: Dict[str, Optional[Tuple[int, int, int]]] = {}  # platform -> _cache_counts of arrays nobody holds


def _addresses(x) -> list:
    """The addresses of the device buffers of jax.Array `x` (one per shard on this process's devices)."""
    try:
        if x.sharding.num_devices == 1:
            return [x.unsafe_buffer_pointer()]
        return [shard.data.unsafe_buffer_pointer() for shard in x.addressable_shards]
    except Exception:  # deleted meanwhile: no buffer
        return []


def _cache_counts(x) -> Tuple[int, int, int]:
    """Reference counts of what jax keeps with a multi-device array `x` for its shards: the list of Shards, and
    the largest among the Shard objects and among their per-device arrays."""
    shards = x.addressable_shards
    most_shard = most_data = 0
    for s in shards:
        most_shard = max(most_shard, getrefcount(s))
        most_data = max(most_data, getrefcount(s.data))
    return getrefcount(shards), most_shard, most_data


def _free_counts(platform: str) -> Optional[Tuple[int, int, int]]:
    """_cache_counts of a multi-device array of `platform` whose shards nobody else holds (None: fewer than two
    devices of this process, where no such array can be made)."""
    if platform not in _FREE_COUNTS:
        devices = jax.local_devices(backend=platform)[:2]
        counts = None
        if len(devices) == 2:
            sharding = NamedSharding(Mesh(np.array(devices), ('shards',)), PartitionSpec('shards'))
            counts = _cache_counts(jax.device_put(np.zeros(2, np.float32), sharding))
        _FREE_COUNTS[platform] = counts
    return _FREE_COUNTS[platform]


def _shards_held(x) -> bool:
    """Whether something besides `x` holds one of its shards' arrays, a Shard or their list (True when that
    cannot be told)."""
    free = _free_counts(next(iter(x.sharding.device_set)).platform)
    return free is None or any(n > m for n, m in zip(_cache_counts(x), free))


def shared_buffers(values: list, positions: List[int]) -> List[int]:
    """The positions (among `positions`) of the values whose device buffer another live jax.Array also uses.

    Args:
        values: arrays (other values at `positions` are skipped: jax.Ref, tracers).
        positions: the positions to check.

    Returns:
        The positions found, in order.
    """
    owners, shardings, own, found = {}, set(), set(), set()
    for i in positions:
        x = values[i]
        if isinstance(x, jax.Array) and not isinstance(x, Tracer) and type(x) is not Ref:
            for address in _addresses(x):
                owners.setdefault(address, []).append(i)
            shardings.add(x.sharding)
            if x.sharding.num_devices > 1:
                try:
                    if _shards_held(x):
                        found.add(i)
                    own.update(id(s.data) for s in x.addressable_shards)  # kept with x: alive while it is
                except Exception:  # deleted meanwhile: no buffer
                    continue
    for platform in sorted({d.platform for s in shardings for d in s.device_set}):  # the values' backends
        for other in jax.live_arrays(platform):
            if other.sharding.num_devices == 1:  # most arrays: their one buffer, looked up fast
                if id(other) in own:
                    continue
                try:
                    mine = owners.get(other.unsafe_buffer_pointer())
                except Exception:  # deleted meanwhile
                    continue
                if mine is not None:
                    found.update(i for i in mine if values[i] is not other)
            else:
                for address in _addresses(other):
                    found.update(i for i in owners.get(address, ()) if values[i] is not other)
    return sorted(found)
