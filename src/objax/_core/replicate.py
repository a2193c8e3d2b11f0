"""`VarCollection.replicate()`: Objax 1.8's per-device copies of the variables, for objax.Parallel.

Outside a `replicate()` block a variable keeps its shape; Parallel lays its value out replicated on a mesh of
all (global) devices (NamedSharding with PartitionSpec(), see objax._core.layout) and merges what f changed
after every call.

Inside `with vc.replicate():` objax follows Objax 1.8: each value of `vc` is stacked per device on a new
leading axis, laid out one row per device (PartitionSpec('device'), so each device holds one copy and nothing
more), RandomStates are split into one key per device, and Parallel hands each device its own row and keeps
each device's new value. When the block ends (normally or by an exception) each variable is replaced by its
own `reduce` of the stacked values (unchecked: the shape or dtype may change), a RandomState gets back the
key it had after the split, and a variable whose reduce is None keeps the stacked value, as in Objax 1.8.

Which variables are stacked is recorded here, per variable (the stacked value itself is the variable's
value, seen by every thread), while their block is open.
"""

import contextlib
import threading
from typing import Dict, Iterable, Set

import jax
import numpy as np
from jax.sharding import NamedSharding

from objax._core.layout import per_device, to_default_device
from objax._core.pure import Pure
from objax._core.variables import RandomState, reduce_first, reduce_mean

__all__ = ['replicate', 'stacked_positions']

_STACKED: Dict[int, object] = {}  # id(variable) -> variable, for the variables stacked by an open block
_STACKED_LOCK = threading.Lock()


def stacked_positions(variables: Iterable) -> Set[int]:
    """Positions in `variables` (variables holding data) of those stacked per device by an open block."""
    if not _STACKED:
        return set()
    return {i for i, v in enumerate(variables) if _STACKED.get(id(v)) is v}


def _stack(x, sharding: NamedSharding):
    """One copy of `x` per device of the mesh, stacked on a new leading axis, one row on each device."""
    ndev = sharding.mesh.devices.size
    x = jax.numpy.asarray(x)
    row = x[None]
    rows = [jax.device_put(row, d) for d in sharding.mesh.local_devices]
    return jax.make_array_from_single_device_arrays((ndev,) + tuple(x.shape), sharding, rows)


def _split_keys(key, sharding: NamedSharding):
    """(the key's next state, one new key per device stacked with `sharding`), as RandomState.split."""
    ndev = sharding.mesh.devices.size
    with jax.threefry_partitionable(False):
        keys = np.asarray(jax.random.split(key, ndev + 1))
    stacked = jax.make_array_from_callback(keys[1:].shape, sharding, lambda index: keys[1:][index])
    return jax.device_put(keys[0]), stacked


def _label(names: Dict[int, str], var) -> str:
    name = names.get(id(var))
    return f'"{name}" ({type(var).__name__})' if name else var._label()


@contextlib.contextmanager
def replicate(vc):
    """Context of VarCollection.replicate(), Objax 1.8's semantics (see the module docstring).

    Raises:
        ValueError: on entry, when a variable is already stacked by an enclosing block, or when called while a
            transform traces its function (nothing is changed); on exit, when a variable's reduce fails (the
            variables then keep their stacked values, nothing is lost).
    """
    pure = Pure(None, vc)
    variables = pure.variables
    names = vc.names() if hasattr(vc, 'names') else {}
    sharding = per_device('device')
    with _STACKED_LOCK:
        nested = [_label(names, v) for v in variables if _STACKED.get(id(v)) is v]
        if nested:
            raise ValueError(f'VarCollection.replicate(): {", ".join(nested)} already stacked per device by an '
                             f'enclosing replicate() block; nested blocks over the same variables are not '
                             f'supported (use the outer block only)')
        values = pure.values()
        if any(isinstance(x, jax.core.Tracer) for x in values):
            raise ValueError('VarCollection.replicate() cannot be used inside a function being traced by a '
                             'transform (Jit, Grad, Vectorize, Parallel...): open the block around the calls')
        keys, stacked = {}, {}
        for i, (v, x) in enumerate(zip(variables, values)):
            if isinstance(v, RandomState):
                keys[i], stacked[i] = _split_keys(x, sharding)
            else:
                stacked[i] = _stack(x, sharding)
        pure.write(stacked)
        _STACKED.update((id(v), v) for v in variables)
    try:
        yield
    finally:
        with _STACKED_LOCK:
            for v in variables:
                if _STACKED.get(id(v)) is v:
                    del _STACKED[id(v)]
        _unstack(variables, pure.values(), keys, names, values, stacked)


def _unstack(variables, values, keys: Dict[int, object], names: Dict[int, str], saved: list, stacked: dict):
    """Replaces each variable by its reduce of its stacked value (RandomStates: the key saved at entry). A
    floating-point variable still holding the copies made at entry, with a mean or first-copy reduce, gets its
    original array back (the reduce of identical copies, without float32 rounding of the mean)."""
    reduced, errors = {}, []
    for i, (v, x) in enumerate(zip(variables, values)):
        if i in keys:
            reduced[i] = keys[i]
            continue
        reduce = v._reduce
        if x is stacked.get(i) and (reduce is reduce_first or reduce is reduce_mean
                                    and jax.numpy.issubdtype(x.dtype, jax.numpy.inexact)):
            reduced[i] = saved[i]
            continue
        if reduce is None:
            reduced[i] = to_default_device(x)  # Objax 1.8: no reduce, the stacked value stays
            continue
        try:
            reduced[i] = to_default_device(reduce(x))
        except Exception as e:  # any failure of a user's reduce: reported for every variable at once
            errors.append(f'{_label(names, v)}: {type(e).__name__}: {e}')
    if errors:
        raise ValueError('VarCollection.replicate(): leaving the block, the reduce of these variables failed on '
                         'their per-device values (shape (devices, ...)); no variable was reduced, all keep their '
                         'stacked values:\n  ' + '\n  '.join(errors))
    for i, x in reduced.items():
        variables[i].assign(x, check=False)
