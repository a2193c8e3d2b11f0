"""Parallel: data-parallel execution of a module or function over all devices (of all processes).

One call is one compiled program: jax.jit around jax.shard_map over a 1D mesh of all devices. Array
arguments are split on their leading axis, variables are replicated, f runs once per device (collectives on
`axis_name` work, e.g. objax.functional.parallel.pmean), per-device outputs are stacked on a new leading axis
and merged by `reduce`, and each variable that f changed is stacked the same way and merged by its own
`reduce` (mean for TrainVar/StateVar, first copy for RandomState). Variables f leaves alone are not touched.
Results provably equal on all devices (e.g. anything computed from pmean'd gradients) are produced once
instead of gathered per device (see objax._invariant), so a data-parallel step moves only what f's own
collectives move.

Multi-process (after jax.distributed.initialize): the mesh spans every process's devices. Each process passes
its own part of the global batch (its local rows, same shape on every process): the global batch is the
processes' parts concatenated in process order. Scalars and variables must be equal on every process.
A global array (e.g. from objax.util.make_global_batch) is taken as the whole batch.

Outside a `replicate()` block (the recommended style) a variable keeps its shape: its value is one jax.Array
laid out replicated on the mesh (NamedSharding with PartitionSpec()), and each call merges what f changed.
Inside `with vc.replicate():` Parallel follows Objax 1.8 (decision B2): the variables of vc hold one copy per
device stacked on a new leading axis (PartitionSpec(axis_name): one row per device), each device runs f on its
own copy and keeps its own new value (nothing is merged per call), and the block's exit replaces each variable
by its own `reduce` of the copies (see objax._replicate). Variables of f's collection that are not in the block
are handled as outside it.

On CPU a call first waits for the previous call of the same Parallel to finish: XLA's in-process CPU
collectives can deadlock when a few dozen collective programs are queued at once (seen with jax 0.10.2).
"""

import functools
import threading
import weakref
from typing import Callable, Optional, Tuple, Union

import jax
import jax.numpy as jn
import numpy as np
from jax.extend import core as jax_core
from jax.sharding import NamedSharding, PartitionSpec

from objax import _invariant, _repr, _replicate, _state, _structure, _trace
from objax.module import Module, _module_and_vars, _owner_label
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import RandomState, _reduce_first, reduce_mean

__all__ = ['Parallel']

_LOCAL = _trace.LOCAL


def _aval(x, split: int = 1) -> jax.ShapeDtypeStruct:
    """Shape/dtype of what one device sees of x when its leading axis is split in `split`."""
    aval = jax.typeof(x)
    shape = (aval.shape[0] // split,) + tuple(aval.shape[1:]) if split > 1 else aval.shape
    return jax.ShapeDtypeStruct(shape, aval.dtype, weak_type=aval.weak_type)


def _path_label(i: int, path) -> str:
    return f'argument {i}{jax.tree_util.keystr(path)}'


def _first_array(values: list, outputs) -> Optional[jax.Array]:
    """One array the last call produced (an output or else a variable value), to wait for its completion."""
    leaf = next(iter(jax.tree.leaves(outputs)), None)
    if leaf is None:
        leaf = next(iter(values), None)
    return leaf if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) else None


class Parallel(Module):
    """`Parallel(f, vc, reduce, axis_name, static_argnums)(*args)` runs f on every device on a slice of the
    batch: array arguments (N, ...) are split into (N/ndev, ...) per device, scalars are broadcast. Returns
    `reduce` of each per-device output stacked as (ndev, ...) (default: concatenated back to (N, ...)).
    Works with or without `with vc.replicate():` (kept for Objax 1.8 code); after a call the variables of vc
    that f changed hold their merged values, replicated on all devices. With `donate` (the default) the
    variables' old buffers are donated to the call (reused for the new values); a value that anything else
    still references is copied for the call instead, so arrays user code holds stay valid. Calls from several
    threads run one at a time. Writing a variable outside `vc` in f raises objax.VariableOutsideCollectionError;
    reading one freezes its value with an objax.VariableOutsideCollectionWarning.
    Inside `with vc.replicate():` (Objax 1.8's semantics) each device keeps its own copy of every variable
    of the block and the block's exit merges them with each variable's `reduce`.

    Args:
        f: the module or function to run on every device.
        vc: the variables f uses (default: f.vars() when f is a Module).
        reduce: merges each output stacked per device, shape (ndev, ...) (default: concatenate on axis 0).
        axis_name: name of the device axis, for collectives such as objax.functional.parallel.pmean.
        static_argnums: positions of the arguments that are compiled in (hashable Python values).
        donate: donate the variables' old buffers to each call (copies are made of values held elsewhere).

    Raises:
        TypeError: f is not callable, reduce is not callable or axis_name is not a non-empty string.
        ValueError: f is a function and vc is missing.
    """

    def __init__(self, f: Union[Module, Callable], vc: Optional[VarCollection] = None,
                 reduce: Callable[[JaxArray], JaxArray] = jn.concatenate, axis_name: str = 'device',
                 static_argnums: Optional[Tuple[int, ...]] = None, donate: bool = True):
        follows_module = vc is None
        f, vc = _module_and_vars('Parallel', f, vc)
        if not callable(reduce):
            raise TypeError(f'Parallel(reduce=...): reduce must be callable, got {type(reduce).__name__}')
        if not isinstance(axis_name, str) or not axis_name:
            raise TypeError(f'Parallel(axis_name=...): expected a non-empty string, got {axis_name!r}')
        self.__wrapped__ = f
        self.vc = vc
        self.reduce = reduce
        self.axis_name = axis_name
        self.static_argnums = tuple(static_argnums or ())
        self.mesh = _replicate.mesh(axis_name)
        self.ndevices = self.mesh.devices.size
        self._local_ndevices = len(self.mesh.local_devices)
        self._replicated = _replicate.replicated(axis_name)
        self._batched = NamedSharding(self.mesh, PartitionSpec(axis_name))
        self._owner = _owner_label('Parallel', f)
        self._cpu = self.mesh.devices.flat[0].platform == 'cpu'
        self._inflight = None  # one result of the previous call (CPU only), waited for before the next call
        self._stacked_programs = None  # (Pure, {stacked positions: program}) for calls inside replicate()
        self._follows_module = follows_module
        self.donate = bool(donate)
        self._lock = threading.Lock()
        self._generation = _structure.GENERATION
        self._use(vc)

    def _use(self, vc: VarCollection, warned: Optional[set] = None):
        """Runs with collection `vc` from now on (a new program)."""
        self.vc = vc
        self._pure = _state.Pure(self.__wrapped__, vc, self._owner)
        if warned is not None:
            self._pure._warned = warned
        self._storage = self._pure.variables
        self._random = [i for i, v in enumerate(self._storage) if isinstance(v, RandomState)]
        self._last = None  # weak references to the values the previous call left (already laid out on the mesh)
        argnums = tuple(i + 1 if i >= 0 else i for i in self.static_argnums)
        self._call = jax.jit(self._traced, static_argnums=argnums)
        self._call_donating = jax.jit(functools.partial(self._traced, donate=True), static_argnums=argnums,
                                      donate_argnums=(0,)) if self.donate else None

    def device_reshape(self, x: JaxArray) -> JaxArray:
        """Splits the batch of x, (N, ...) -> (ndev, N/ndev, ...) over this process's devices; a scalar
        becomes (ndev,).

        Args:
            x: an array whose first axis N is a multiple of the number of local devices ndev.

        Returns:
            x reshaped to (ndev, N/ndev, ...), or a scalar repeated ndev times.

        Raises:
            TypeError: x is not an array.
            ValueError: N is not a multiple of the number of local devices.
        """
        ndev = self._local_ndevices
        if not hasattr(x, 'ndim'):
            raise TypeError(f'Parallel.device_reshape expects an array, got {type(x).__name__}')
        if x.ndim == 0:
            return jn.broadcast_to(x, (ndev,))
        if x.shape[0] % ndev:
            raise ValueError(f'Parallel.device_reshape: batch of size {x.shape[0]} (shape {tuple(x.shape)}) '
                             f'does not divide evenly among {ndev} devices')
        return x.reshape((ndev, x.shape[0] // ndev) + tuple(x.shape[1:]))

    def _static_positions(self, nargs: int) -> set:
        positions = set()
        for i in self.static_argnums:
            if not -nargs <= i < nargs:
                raise ValueError(f'{self._owner}: static_argnums contains {i} but only {nargs} positional '
                                 f'arguments were given')
            positions.add(i % nargs)
        return positions

    def _place_leaf(self, x, label: Callable[[], str]):
        """Checks the batch size of one argument leaf and lays it out on the mesh (rows split, scalars
        replicated); `label()` names the leaf in errors."""
        tracer = isinstance(x, jax.core.Tracer)
        if not tracer and isinstance(x, jax.Array) and x.sharding == self._batched:
            return x  # e.g. a global batch from objax.util.make_global_batch: already laid out
        if np.ndim(x) == 0:
            return x if isinstance(x, (int, float, bool, complex)) else _replicate.place(x, self._replicated)
        # A traced value (Parallel inside Jit) or a global array holds the whole batch.
        is_global = tracer or (isinstance(x, jax.Array) and not x.is_fully_addressable)
        ndev = self.ndevices if is_global else self._local_ndevices
        n = np.shape(x)[0]
        if n % ndev:
            raise ValueError(f'{self._owner}: {label()} has a batch (leading axis) of size {n}, which does not '
                             f'divide evenly among {ndev} devices; use a multiple of {ndev}')
        return _replicate.place(x, self._batched)

    def _place_args(self, args, static: set) -> list:
        """Checks batch sizes and lays the arguments out on the mesh."""
        out = list(args)
        for i, arg in enumerate(args):
            if i in static:
                continue
            # Containers first: np.ndim of a list of arrays with different shapes raises.
            if isinstance(arg, jax.Array) or not isinstance(arg, (list, tuple, dict)) and np.ndim(arg) == 0:
                out[i] = self._place_leaf(arg, lambda: f'argument {i}')
                continue
            paths, tree = jax.tree_util.tree_flatten_with_path(arg)
            out[i] = jax.tree_util.tree_unflatten(tree, [self._place_leaf(x, lambda p=p: _path_label(i, p))
                                                         for p, x in paths])
        return out

    def __call__(self, *args):
        """Runs f on every device and returns its reduced outputs; stores the merged variable values."""
        static = self._static_positions(len(args)) if self.static_argnums else ()
        placed_args = self._place_args(args, static)  # validates the batch before anything is touched
        with self._lock:
            if self._generation != _structure.GENERATION:
                _structure.refresh(self)
            stacked = _replicate.stacked_positions(self._pure.variables)
            if stacked:  # inside `with vc.replicate():`, Objax 1.8's per-device copies (decision B2)
                return self._call_stacked(frozenset(stacked), placed_args)
            if self._inflight is not None:
                pending, self._inflight = self._inflight, None
                pending.block_until_ready()
                del pending
            pure = self._pure
            tracing = not _LOCAL.frames and _trace.jax_tracing()
            if tracing:
                self._place_for_trace(pure)
            donating = (self._call_donating is not None and not _LOCAL.frames and not tracing
                        and not _state.has_tracer(placed_args))
            values = pure.lend() if donating else pure.values()
            try:
                outputs, values = self._run(pure, values, placed_args, donating)
            except BaseException:
                if donating:
                    pure.cancel()
                raise
            if donating:
                pure.repay(values)
            tracing = values and isinstance(values[0], jax.core.Tracer)
            self._last = None if tracing else [weakref.ref(x) for x in values]
            if self._cpu and not tracing:
                self._inflight = _first_array(values, outputs)
        return outputs

    def _place_for_trace(self, pure: _state.Pure):
        """Called inside a JAX transformation (e.g. jax.jit around this Parallel): the variables' values, which
        become JAX array references the traced program reads (see objax._trace), are laid out on the mesh first,
        where the program needs them."""
        placed = {}
        with _trace.at_top():
            for i, var in enumerate(pure.variables):
                x = var._stored()
                if isinstance(x, _trace.Ref):
                    if x.sharding.device_set != self._replicated.device_set:
                        raise ValueError(f'{self._owner}: variable "{pure._describe(var) or var._label()}" is kept '
                                         f'in a JAX array reference on other devices (a program compiled by JAX '
                                         f'reads it there), so it cannot be used on this mesh inside a JAX '
                                         f'transformation; call {self._owner} outside JAX transformations')
                elif not isinstance(x, jax.core.Tracer):
                    y = _replicate.place(x, self._replicated)
                    if y is not x:
                        placed[i] = y
            pure.write(placed)

    def _run(self, pure: _state.Pure, values: list, placed_args: list, donating: bool):
        """Lays the values out on the mesh (unless they are what the previous call left) and runs the
        compiled program; returns (outputs, every variable's new value)."""
        last = self._last
        if last is None or len(last) != len(values) or not all(r() is x for r, x in zip(last, values)):
            placed = {}
            for i, x in enumerate(values):
                values[i] = _replicate.place(x, self._replicated)
                if values[i] is not x and not isinstance(values[i], jax.core.Tracer):
                    placed[i] = values[i]  # same value, laid out on the mesh: kept for later calls
            if not donating:
                pure.write(placed)
        if donating:
            return self._call_donating(values, *placed_args)
        outputs, changes = self._call(values, *placed_args)
        pure.write(changes)
        for i, x in changes.items():
            values[i] = x
        return outputs, values

    def _traced(self, values, *args, donate: bool = False):
        axis, ndev, random = self.axis_name, self.ndevices, set(self._random)
        static = self._static_positions(len(args))
        dynamic = [i for i in range(len(args)) if i not in static]
        leaves, leaves_tree = jax.tree.flatten([args[i] for i in dynamic])
        batched = [jn.ndim(x) > 0 for x in leaves]
        with jax.threefry_partitionable(False):
            inputs = [jax.random.split(x, ndev) if i in random else x for i, x in enumerate(values)]
        pure = self._pure

        def per_device(device_values, device_leaves):
            call_args = list(args)
            for i, x in zip(dynamic, jax.tree.unflatten(leaves_tree, device_leaves)):
                call_args[i] = x
            return pure(device_values, *call_args)

        # Trace f once for one device, find which results are provably equal on all devices (those are
        # returned once, the others stacked per device), then run that program on every device.
        closed, shapes = jax.make_jaxpr(per_device, axis_env=[(axis, ndev)], return_shape=True)(
            [_aval(x) for x in values], [_aval(x, ndev if b else 1) for x, b in zip(leaves, batched)])
        changed, tree = sorted(shapes[1]), jax.tree.structure(shapes[0])
        varying = _invariant.varying_outputs(closed.jaxpr, [i in random for i in range(len(values))] + batched,
                                             axis)
        program = jax_core.jaxpr_as_fun(closed)

        def run(device_values, device_leaves):
            device_values = [x[0] if i in random else x for i, x in enumerate(device_values)]
            results = program(*device_values, *device_leaves)
            return [jn.expand_dims(x, 0) if v else x for x, v in zip(results, varying)]

        spec = lambda b: PartitionSpec(axis) if b else PartitionSpec()
        results = jax.shard_map(run, mesh=self.mesh, out_specs=[spec(v) for v in varying], check_vma=False,
                                in_specs=([spec(i in random) for i in range(len(values))], [spec(b) for b in batched])
                                )(inputs, leaves)
        nout = tree.num_leaves
        stacked = [x if v else jn.broadcast_to(x, (ndev,) + x.shape) for x, v in zip(results[:nout], varying)]
        merged = {i: jax.lax.with_sharding_constraint(self._merge(i, x, v, values[i]), self._replicated)
                  for i, x, v in zip(changed, results[nout:], varying[nout:])}
        outputs = jax.tree.unflatten(tree, [self._reduce_output(x) for x in stacked])
        return outputs, ([merged.get(i, x) for i, x in enumerate(values)] if donate else merged)

    def _reduce_output(self, x: JaxArray) -> JaxArray:
        try:
            return self.reduce(x)
        except (TypeError, ValueError) as e:
            raise type(e)(f'{self._owner}: reduce={getattr(self.reduce, "__name__", self.reduce)!r} failed on an '
                          f'output stacked per device with shape {tuple(x.shape)}: {e}. A per-device scalar '
                          f'needs a reduce such as `lambda x: x.mean(0)`') from e

    def _merge(self, i: int, x: JaxArray, varying: bool, old: JaxArray) -> JaxArray:
        """Merges the new values of variable i: stacked per device if `varying`, else the one common value."""
        var = self._storage[i]
        reduce = var._reduce
        if not varying:
            if reduce is None or reduce is reduce_mean or reduce is _reduce_first:
                return x  # the mean or first of identical copies is the value itself
            x = jn.broadcast_to(x, (self.ndevices,) + x.shape)
        name = self._pure._describe(var) or var._label()
        if reduce is None:
            raise ValueError(f'{self._owner}: variable "{name}" was changed differently on each device but has '
                             f'reduce=None, so its per-device values cannot be merged; give it a reduce '
                             f'(e.g. objax.reduce_mean)')
        merged = reduce(x)
        if jn.shape(merged) != jn.shape(old):
            raise ValueError(f'{self._owner}: the reduce of variable "{name}" turned per-device values of shape '
                             f'{tuple(x.shape)} into shape {tuple(jn.shape(merged))}, expected {jn.shape(old)}')
        return merged.astype(old.dtype) if merged.dtype != old.dtype else merged

    def _call_stacked(self, stacked: frozenset, placed_args):
        """A call inside `with vc.replicate():`: variables at positions `stacked` hold one copy per device
        (stacked on axis 0); each device runs f on its own copy and keeps its own new value. The other
        variables are handled as outside a block (replicated in, changes merged with their reduce)."""
        pure = self._pure
        values = pure.values()
        for i in stacked:
            shape = jn.shape(values[i])
            if not shape or shape[0] != self.ndevices:
                var = self._storage[i]
                raise ValueError(f'{self._owner}: variable "{self._pure._describe(var) or var._label()}" is '
                                 f'stacked per device by `replicate()` but its value has shape {tuple(shape)}, '
                                 f'expected ({self.ndevices}, ...) (one row per device); it was reassigned '
                                 f'inside the block')
        values = [_replicate.place(x, self._batched if i in stacked else self._replicated)
                  for i, x in enumerate(values)]
        cache = self._stacked_programs
        if cache is None or cache[0] is not pure:
            cache = self._stacked_programs = (pure, {})
        call = cache[1].get(stacked)
        if call is None:
            argnums = tuple(i + 1 if i >= 0 else i for i in self.static_argnums)
            call = cache[1][stacked] = jax.jit(functools.partial(self._traced_stacked, stacked),
                                               static_argnums=argnums)
        if self._inflight is not None:
            pending, self._inflight = self._inflight, None
            pending.block_until_ready()
        outputs, new_values = call(values, *placed_args)
        pure.write(new_values)
        self._last = None
        if self._cpu:
            self._inflight = _first_array(new_values, outputs)
        return outputs

    def _traced_stacked(self, stacked: frozenset, values, *args):
        axis, ndev = self.axis_name, self.ndevices
        split = {i for i in self._random if i not in stacked}  # keys outside the block: split per call
        per_row = stacked | split
        static = self._static_positions(len(args))
        dynamic = [i for i in range(len(args)) if i not in static]
        leaves, leaves_tree = jax.tree.flatten([args[i] for i in dynamic])
        batched = [jn.ndim(x) > 0 for x in leaves]
        with jax.threefry_partitionable(False):
            inputs = [jax.random.split(x, ndev) if i in split else x for i, x in enumerate(values)]
        pure = self._pure

        def run(device_values, device_leaves):
            device_values = [x[0] if i in per_row else x for i, x in enumerate(device_values)]
            call_args = list(args)
            for i, x in zip(dynamic, jax.tree.unflatten(leaves_tree, device_leaves)):
                call_args[i] = x
            results = pure(device_values, *call_args)
            return jax.tree.map(lambda x: jn.expand_dims(x, 0), results)

        spec = lambda b: PartitionSpec(axis) if b else PartitionSpec()  # noqa: E731
        outputs, changes = jax.shard_map(run, mesh=self.mesh, out_specs=PartitionSpec(axis), check_vma=False,
                                         in_specs=([spec(i in per_row) for i in range(len(values))],
                                                   [spec(b) for b in batched]))(inputs, leaves)
        new_values = {}
        for i, x in changes.items():
            if i in stacked:
                new_values[i] = jax.lax.with_sharding_constraint(x, self._batched)
            else:
                new_values[i] = jax.lax.with_sharding_constraint(self._merge(i, x, True, values[i]),
                                                                 self._replicated)
        return jax.tree.map(self._reduce_output, outputs), new_values

    # No vars() of its own (as in Objax 1.8): Module.vars names the variables `(Parallel)` + the wrapped module's.

    def __repr__(self):
        return (f'{_repr.class_path(self)}(f={_repr.module_or_function_repr(self.__wrapped__)}, '
                f'reduce={_repr.function_repr(self.reduce)}, axis_name={self.axis_name!r}, '
                f'static_argnums={tuple(sorted(self.static_argnums)) or None})')
