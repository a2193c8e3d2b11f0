"""Helpers for running objax.Parallel over several processes (hosts) with JAX's multi-controller runtime.

Every process runs the same program and calls `jax.distributed.initialize(coordinator_address, num_processes,
process_id)` before anything else uses JAX. From then on `jax.devices()` lists the devices of all processes and
objax.Parallel spans all of them: gradients `pmean`ed inside it are averaged over every device of every
process, so all processes keep identical parameters (build the model with the same seed everywhere). Each
process feeds its own rows of the global batch (the global batch is the processes' rows in process order):

    train_op = objax.Parallel(train_op, vc, reduce=lambda x: x[0])
    for x, y in my_shard_of_the_data(process_index(), process_count()):
        loss = train_op(x, y)            # same as train_op(*make_global_batch((x, y)))
    multi_host_barrier()
    if process_index() == 0:
        objax.io.save_var_collection('model.npz', vc)

Outputs that stay split over devices (e.g. Parallel's default concatenated output) span processes: use
`gather_to_host` to read them as numpy on every process.
"""

from typing import Any, List, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from objax._core import layout

__all__ = ['gather_to_host', 'get_local_devices', 'make_global_batch', 'map_to_device', 'multi_host_barrier',
           'process_count', 'process_index']


def get_local_devices() -> List[jax.Device]:
    """The devices attached to this process (all devices when running a single process)."""
    return jax.local_devices()


def process_index() -> int:
    """Index of this process, 0 <= process_index() < process_count()."""
    return jax.process_index()


def process_count() -> int:
    """Number of processes taking part (1 unless jax.distributed.initialize started several)."""
    return jax.process_count()


def _global_leaf(x, batched: NamedSharding, replicated: NamedSharding, ndev_local: int):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x  # already a global array
    if np.ndim(x) == 0:
        return layout.place(np.asarray(x), replicated, local_part=True)
    if np.shape(x)[0] % ndev_local:
        raise ValueError(f'make_global_batch: a local batch of {np.shape(x)[0]} rows (shape {np.shape(x)}) does '
                         f'not divide evenly among the {ndev_local} devices of this process')
    return layout.place(x, batched, local_part=True)


def make_global_batch(x: Any, axis_name: str = 'device', mesh: Optional[Mesh] = None) -> Any:
    """Each leaf of the pytree `x`, this process's rows (n, ...), becomes one global jax.Array of shape
    (n * process_count(), ...) split over the devices of all processes, the processes' rows in process order
    (jax.make_array_from_process_local_data). Scalars become replicated arrays. n must be the same on every
    process and a multiple of the number of local devices.

    With `mesh` (e.g. the ('data', 'model') mesh of objax.sharding), the rows are split over its axis
    `axis_name` only and repeated over its other axes; n must then be a multiple of the number of distinct
    row blocks this process's devices hold.

    Args:
        x: a pytree of arrays (numpy or jax) of shape (n, ...) each, or scalars; leaves that already are
            global arrays are kept as they are.
        axis_name: name of the mesh axis the rows are split over ('device', objax.Parallel's).
        mesh: the mesh to lay the batch out on (default: objax.Parallel's 1-D mesh of all devices).

    Returns:
        A pytree of the same structure whose leaves are global jax.Arrays of shape (n * process_count(), ...).

    Raises:
        ValueError: the mesh has no axis `axis_name`, or a leaf's row count n is not a multiple of this
            process's number of row blocks.
    """
    if mesh is None:
        mesh = layout.mesh(axis_name)
        ndev_local = len(mesh.local_devices)
    else:
        if axis_name not in mesh.shape:
            raise ValueError(f'make_global_batch: the mesh has no axis {axis_name!r} (its axes: '
                             f'{tuple(mesh.axis_names)})')
        local = set(mesh.local_devices)
        column = list(mesh.axis_names).index(axis_name)
        ndev_local = len({i[column] for i, d in np.ndenumerate(mesh.devices) if d in local})
    batched = NamedSharding(mesh, PartitionSpec(axis_name))
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.tree.map(lambda leaf: _global_leaf(leaf, batched, replicated, ndev_local), x)


def map_to_device(x: Any) -> Any:
    """Objax 1.8's name: lays out the pytree `x` split on its leading axis over the devices, this process's
    rows going to this process's devices; the same as `make_global_batch(x)`.

    Args:
        x: a pytree of arrays of shape (n, ...), or scalars, as for make_global_batch.

    Returns:
        A pytree of the same structure of global jax.Arrays of shape (n * process_count(), ...).

    Raises:
        ValueError: a leaf's row count n is not a multiple of this process's device count.
    """
    return make_global_batch(x)


def multi_host_barrier(name: str = 'objax_barrier'):
    """Blocks until every process has reached a barrier of the same `name` (returns at once with one process).

    Args:
        name: identifies the barrier; every process must use the same name at the same point.

    Raises:
        TypeError: name is not a str.
    """
    if not isinstance(name, str):
        raise TypeError(f'multi_host_barrier(name): name must be a str, got {type(name).__name__}')
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def gather_to_host(x: Any) -> Any:
    """Each leaf of the pytree `x` as a numpy array holding its whole (global) value, on every process.
    Every process must call it (it communicates when a value is split over several processes).

    Args:
        x: a pytree of jax.Arrays (local or spanning processes), numpy arrays or numbers.

    Returns:
        A pytree of the same structure of numpy arrays, each of the leaf's global shape.
    """

    def fetch(leaf):
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return np.asarray(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(fetch, x)
