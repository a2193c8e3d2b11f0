"""Where variable values live for objax.Parallel: replicated on a mesh of all (global) devices.

`VarCollection.replicate()` (Objax 1.8 stacked one copy per device there) now places every value of the
collection replicated on that mesh when the block starts, so Parallel calls inside the block move nothing,
and brings the values back to the default device when it ends. Values are never changed by placement:
Parallel merges per-device results with each variable's `reduce` at every call, so leaving the block has
nothing left to merge.
"""

import contextlib
import functools
import weakref

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from objax import _state

__all__ = []

@functools.lru_cache(maxsize=None)
def mesh(axis_name: str = 'device') -> Mesh:
    """The 1D mesh of all devices of all processes (jax.devices() order) with axis `axis_name`."""
    return Mesh(np.array(jax.devices()), (axis_name,))


@functools.lru_cache(maxsize=None)
def replicated(axis_name: str = 'device') -> NamedSharding:
    """The sharding that keeps a full copy of a value on every device of `mesh(axis_name)`."""
    return NamedSharding(mesh(axis_name), PartitionSpec())


def is_multiprocess(m: Mesh) -> bool:
    return m.devices.size != len(m.local_devices)


def place(x, sharding: NamedSharding):
    """`x` laid out with `sharding`. A process-local value (numpy, or an array on this process's devices) is
    taken as this process's part of the global value: all of it when replicated, its rows when sharded."""
    if isinstance(x, jax.core.Tracer):
        return x
    if isinstance(x, jax.Array):
        if x.sharding == sharding or (sharding.is_fully_replicated and x.is_fully_replicated
                                      and x.sharding.device_set == sharding.device_set):
            return x  # already there (a replicated value may sit on a mesh with another axis name)
        if not is_multiprocess(sharding.mesh) or not x.is_fully_addressable:
            return jax.device_put(x, sharding)
    elif not is_multiprocess(sharding.mesh):
        return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))


def to_default_device(x):
    """`x` as an uncommitted array on this process's default device, like a freshly created value (so it mixes
    with arrays on any device); a replicated value keeps its contents, a value split over processes stays."""
    if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array):
        return x
    if x.is_fully_replicated:
        return jax.device_put(np.asarray(x.addressable_data(0)))
    if x.is_fully_addressable:
        return jax.device_put(np.asarray(x))
    return x


@contextlib.contextmanager
def replicate(vc):
    """Context of VarCollection.replicate(): the values of `vc` sit replicated on the mesh of all devices
    (axis 'device') inside the block. On exit a variable the block did not change gets back its original
    array; a changed one becomes an uncommitted array on the default device (same value). Optional for
    objax.Parallel, which places values itself; the block saves placing values before the first call and
    leaves the variables where they were before it. Nothing is stacked per device any more: each variable
    keeps its shape."""
    values = _state.Pure(None, vc)
    sharding = replicated('device')
    saved = values.values()
    placed = [place(x, sharding) for x in saved]
    values.write(dict(enumerate(placed)))
    # Keep no strong reference to the values in the variables (Jit/Parallel donate unshared values only).
    saved = [None if old is new else old for old, new in zip(saved, placed)]
    placed = [weakref.ref(x) for x in placed]
    try:
        yield
    finally:
        values.write({i: (now if old is None else old) if now is new() else to_default_device(now)
                      for i, (old, new, now) in enumerate(zip(saved, placed, values.values()))})
