"""Where values live on devices: the meshes of objax.Parallel, laying a value out on a sharding, and the
layouts objax.sharding records on variables, which objax.Jit compiles with.

objax.sharding (above the core) records a variable's layout with variables.record_layout and calls `changed()`;
a Jit compares `VERSION` with the one it saw when it compiled (one integer comparison per call) and reads the
layouts again with `layouts()` when it differs. This is the only way the core learns about sharding.
"""

import functools
import itertools
from typing import List, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from objax._core.variables import BaseVar, layout_of

__all__ = ['VERSION', 'changed', 'constrain', 'layouts', 'mesh', 'per_device', 'place', 'replicated',
           'to_default_device']

_COUNTER = itertools.count(1)
VERSION = 0  # changes whenever a variable's recorded layout changes (see `changed`)


def changed() -> None:
    """Marks that the recorded layout of some variables changed (each change gets a number never used before)."""
    global VERSION
    VERSION = next(_COUNTER)


def layouts(variables: Sequence[BaseVar]) -> Optional[List[Optional[NamedSharding]]]:
    """The layout recorded for each of `variables` (None where there is none), or None when none has one.

    Args:
        variables: variables holding data (not TrainRefs).

    Returns:
        A list of NamedSharding or None, one per variable; or None.
    """
    found = [layout_of(v) for v in variables]
    return found if any(s is not None for s in found) else None


def constrain(x, sharding: Optional[NamedSharding]):
    """Inside a compiled step: `x` kept in `sharding` (no drift to another layout, no gather), if any.

    Args:
        x: a traced value.
        sharding: the layout to keep, or None (x is returned as it is).

    Returns:
        x, constrained to `sharding`.
    """
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


@functools.lru_cache(maxsize=None)
def mesh(axis_name: str = 'device') -> Mesh:
    """The 1D mesh of all devices of all processes (jax.devices() order) with axis `axis_name`.

    Args:
        axis_name: the name of the axis.

    Returns:
        The mesh (the same object for the same name).
    """
    return Mesh(np.array(jax.devices()), (axis_name,))


@functools.lru_cache(maxsize=None)
def replicated(axis_name: str = 'device') -> NamedSharding:
    """The sharding that keeps a full copy of a value on every device of `mesh(axis_name)`.

    Args:
        axis_name: the name of the mesh axis.

    Returns:
        NamedSharding(mesh(axis_name), PartitionSpec()).
    """
    return NamedSharding(mesh(axis_name), PartitionSpec())


@functools.lru_cache(maxsize=None)
def per_device(axis_name: str = 'device') -> NamedSharding:
    """The sharding of a value stacked per device: row i of the leading axis lives on device i.

    Args:
        axis_name: the name of the mesh axis.

    Returns:
        NamedSharding(mesh(axis_name), PartitionSpec(axis_name)).
    """
    return NamedSharding(mesh(axis_name), PartitionSpec(axis_name))


def place(x, sharding: NamedSharding, local_part: bool = False):
    """`x` laid out with `sharding` (a traced value, or one already laid out so, is returned as it is).

    Args:
        x: a jax or numpy array (or anything numpy converts).
        sharding: where the value goes, possibly over the devices of several processes.
        local_part: how a value that only this process holds is read when `sharding` spans several processes:
            False, it is the whole value, the same on every process (objax.sharding, checkpoints); True, it is
            this process's part of the global value (objax.Parallel's batches): all of it when `sharding`
            replicates, its rows when it splits them. With `local_part`, a replicated value already on the
            same devices is kept even if its mesh differs.

    Returns:
        A jax.Array laid out with `sharding`.
    """
    if isinstance(x, jax.core.Tracer):
        return x
    if isinstance(x, jax.Array):
        if x.sharding == sharding:
            return x
        if local_part and (sharding.is_fully_replicated and x.is_fully_replicated
                           and x.sharding.device_set == sharding.device_set):
            return x  # already there (a replicated value may sit on a mesh with another axis name)
        if not x.is_fully_addressable or sharding.is_fully_addressable:
            return jax.device_put(x, sharding)
        if not local_part and x.is_fully_replicated:
            x = x.addressable_data(0)
    elif sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    if local_part:
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_default_device(x):
    """`x` as an uncommitted array on this process's default device, like a freshly created value (so it mixes
    with arrays on any device); a replicated value keeps its contents, a value split over processes stays.

    Args:
        x: any value.

    Returns:
        The array on the default device; x itself for a tracer, a non-array or a value split over processes.
    """
    if isinstance(x, jax.core.Tracer) or not isinstance(x, jax.Array):
        return x
    if x.is_fully_replicated:
        return jax.device_put(np.asarray(x.addressable_data(0)))
    if x.is_fully_addressable:
        return jax.device_put(np.asarray(x))
    return x
