"""Parallel: data-parallel execution of a module or function over all devices (of all processes).

One call is one compiled program: jax.jit around jax.shard_map over a 1D mesh of all devices. Array
arguments are split on their leading axis, variables are replicated, f runs once per device (collectives on
`axis_name` work, e.g. objax.functional.parallel.pmean), per-device outputs are stacked on a new leading axis
and merged by `reduce`, and each variable that f changed is stacked the same way and merged by its own
`reduce` (mean for TrainVar/StateVar, first copy for RandomState). Variables f leaves alone are not touched.
Results provably equal on all devices (e.g. anything computed from pmean'd gradients) are produced once
instead of gathered per device (see objax._core.invariant), so a data-parallel step moves only what f's own
collectives move. The program is built in objax._core.parallel_program; this file holds the class.

Multi-process (after jax.distributed.initialize): the mesh spans every process's devices. Each process passes
its own part of the global batch (its local rows, same shape on every process): the global batch is the
processes' parts concatenated in process order. Scalars and variables must be equal on every process.
A global array (e.g. from objax.util.make_global_batch) is taken as the whole batch.

Outside a `replicate()` block (the recommended style) a variable keeps its shape: its value is one jax.Array
laid out replicated on the mesh (NamedSharding with PartitionSpec()), or kept in the layout objax.sharding
recorded for it when that layout spans the mesh's devices in the same order (gathered inside the program, so a
Jit called next takes it as it is); each call merges what f changed.
Inside `with vc.replicate():` Parallel follows Objax 1.8: the variables of vc hold one copy per
device stacked on a new leading axis (PartitionSpec(axis_name): one row per device), each device runs f on its
own copy and keeps its own new value (nothing is merged per call), and the block's exit replaces each variable
by its own `reduce` of the copies (see objax._core.replicate). Variables of f's collection that are not in the
block are handled as outside it.

On CPU a call first waits for the previous call of the same Parallel to finish: XLA's in-process CPU
collectives can deadlock when a few dozen collective programs are queued at once (seen with jax 0.10.2).
"""

import weakref
from typing import Callable, FrozenSet, Optional, Tuple, Union

import jax
import jax.numpy as jn

from objax._core import frames, layout, reprs, structure
from objax._core.collection import VarCollection
from objax._core.modules import Module, module_or_function_repr
from objax._core.parallel_program import (
    Plan,
    check_stacked,
    compile_program,
    place_args,
    place_for_trace,
    static_positions,
)
from objax._core.pure import has_tracer
from objax._core.refs import jax_tracing
from objax._core.replicate import stacked_positions
from objax._core.transform import CompiledTransform, lost_values_error
from objax._core.variables import RandomState
from objax.typing import JaxArray

__all__ = ['Parallel']

_LOCAL = frames.LOCAL


def _first_array(values: list, outputs) -> Optional[jax.Array]:
    """One array the last call produced (an output or else a variable value), to wait for its completion."""
    leaf = next(iter(jax.tree.leaves(outputs)), None)
    if leaf is None:
        leaf = next(iter(values), None)
    return leaf if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) else None


class Parallel(CompiledTransform):
    """`Parallel(f, vc, reduce, axis_name, static_argnums)(*args)` runs f on every device on a slice of the
    batch: array arguments (N, ...) are split into (N/ndev, ...) per device, scalars are broadcast. Returns
    `reduce` of each per-device output stacked as (ndev, ...) (default: concatenated back to (N, ...)).
    Works with or without `with vc.replicate():` (kept for Objax 1.8 code); after a call the variables of vc
    that f changed hold their merged values, replicated on all devices, or in the layout objax.sharding gave
    them (each device runs f with the whole value; the value stays split between calls). With `donate` (the
    default) the variables' old buffers are donated to the call (reused for the new values); a value that
    anything else still references or that shares its buffer with another array user code holds (see Jit) is
    copied for the call instead, so arrays user code holds stay valid. Calls
    from several threads run one at a time. Writing a variable outside `vc` in f raises
    objax.VariableOutsideCollectionError; reading one freezes its value with an objax.VariableOutsideCollectionWarning.
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
        super().__init__('Parallel', f, vc, donate)
        if not callable(reduce):
            raise TypeError(f'Parallel(reduce=...): reduce must be callable, got {type(reduce).__name__}')
        if not isinstance(axis_name, str) or not axis_name:
            raise TypeError(f'Parallel(axis_name=...): expected a non-empty string, got {axis_name!r}')
        self.reduce = reduce
        self.axis_name = axis_name
        self.static_argnums = tuple(static_argnums or ())
        self._plan = Plan(self._owner, axis_name, reduce, self.static_argnums)
        self.mesh = self._plan.mesh
        self.ndevices = self._plan.ndevices
        self._cpu = self.mesh.devices.flat[0].platform == 'cpu'
        self._inflight = None  # one result of the previous call (CPU only), waited for before the next call
        self._use(self.vc)

    def _compile(self):
        """Forgets the programs of the previous pure function: one program per set of stacked variables and
        donation, built at its first use, for calls inside and outside `replicate()` alike."""
        self._random = [i for i, v in enumerate(self._pure.variables) if isinstance(v, RandomState)]
        self._places = self._plan.layouts(self._layouts, len(self._pure.variables))
        self._programs = {}
        self._last = None  # weak references to the values the previous call left (already laid out on the mesh)

    def _program(self, stacked: FrozenSet[int], donate: bool) -> Callable:
        call = self._programs.get((stacked, donate))
        if call is None:
            call = self._programs[stacked, donate] = compile_program(self._plan, self._pure, self._random, stacked,
                                                                     donate, self._places)
        return call

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
        ndev = self._plan.local_ndevices
        if not hasattr(x, 'ndim'):
            raise TypeError(f'Parallel.device_reshape expects an array, got {type(x).__name__}')
        if x.ndim == 0:
            return jn.broadcast_to(x, (ndev,))
        if x.shape[0] % ndev:
            raise ValueError(f'Parallel.device_reshape: batch of size {x.shape[0]} (shape {tuple(x.shape)}) '
                             f'does not divide evenly among {ndev} devices')
        return x.reshape((ndev, x.shape[0] // ndev) + tuple(x.shape[1:]))

    def __call__(self, *args):
        """Runs f on every device and returns its reduced outputs; stores the merged variable values."""
        static = static_positions(self._plan, len(args)) if self.static_argnums else set()
        placed_args = place_args(self._plan, args, static)  # validates the batch before anything is touched
        with self._lock:
            if self._generation != structure.GENERATION:
                self._refresh()
            if self._layout_version != layout.VERSION and self._layouts_changed():
                self._use(self.vc, self._pure.warned)  # objax.sharding laid some of these variables out anew
            stacked = frozenset(stacked_positions(self._pure.variables))
            if self._inflight is not None:
                pending, self._inflight = self._inflight, None
                pending.block_until_ready()
                del pending
            tracing = not _LOCAL.frames and jax_tracing()
            if tracing:  # inside a JAX transformation: the values become references, laid out on the mesh first
                place_for_trace(self._plan, self._pure, stacked)
            if stacked:  # inside `with vc.replicate():`, Objax 1.8's per-device copies
                outputs, values = self._call_stacked(stacked, placed_args)
            else:
                outputs, values = self._call_replicated(placed_args, tracing)
            if self._cpu and not (values and isinstance(values[0], jax.core.Tracer)):
                self._inflight = _first_array(values, outputs)
        return outputs

    def _call_replicated(self, placed_args: list, tracing: bool):
        """A call outside `replicate()`: values replicated in, changes merged; returns (outputs, new values).
        `tracing`: a JAX transformation traces the call (outside any objax transform): nothing is donated."""
        pure, lending = self._pure, self._lending
        donating = self.donate and not _LOCAL.frames and not tracing and not has_tracer(placed_args)
        values = lending.lend() if donating else pure.values()
        lent = list(values)
        try:
            outputs, values = self._run(values, placed_args, donating)
        except BaseException as e:
            if donating:
                lending.cancel()
                lost = lost_values_error(self._owner, pure, lent, e)
                if lost is not None:
                    raise lost from e
            raise
        if donating:
            lending.repay(values)
        tracing = values and isinstance(values[0], jax.core.Tracer)
        self._last = None if tracing else [weakref.ref(x) for x in values]
        return outputs, values

    def _run(self, values: list, placed_args: list, donating: bool):
        """Lays the values out on the mesh (unless they are what the previous call left) and runs the
        compiled program; returns (outputs, every variable's new value)."""
        pure, last = self._pure, self._last
        if last is None or len(last) != len(values) or not all(r() is x for r, x in zip(last, values)):
            placed = {}
            for i, x in enumerate(values):
                values[i] = self._place(x, self._places[i])
                if values[i] is not x and not isinstance(values[i], jax.core.Tracer):
                    placed[i] = values[i]  # same value, laid out on the mesh: kept for later calls
            if not donating:
                pure.write(placed)
        if donating:
            return self._program(frozenset(), True)(values, *placed_args)
        outputs, changes = self._program(frozenset(), False)(values, *placed_args)
        pure.write(changes)
        for i, x in changes.items():
            values[i] = x
        return outputs, values

    def _place(self, x, sharding):
        """A variable's value laid out with `sharding`: a layout objax.sharding recorded holds the whole value, as
        does a value replicated on the mesh; a value stacked per device holds this process's rows."""
        return layout.place(x, sharding, local_part=sharding is self._plan.replicated or sharding is
                            self._plan.per_device)

    def _call_stacked(self, stacked: FrozenSet[int], placed_args: list):
        """A call inside `with vc.replicate():`: variables at positions `stacked` hold one copy per device
        (stacked on axis 0); each device runs f on its own copy and keeps its own new value. The other
        variables are handled as outside a block (replicated in, changes merged with their reduce)."""
        pure, plan = self._pure, self._plan
        values = pure.values()
        check_stacked(plan, pure, values, stacked)
        values = [self._place(x, plan.per_device if i in stacked else self._places[i]) for i, x in enumerate(values)]
        outputs, changes = self._program(stacked, False)(values, *placed_args)
        pure.write(changes)
        self._last = None
        for i, x in changes.items():
            values[i] = x
        return outputs, values

    # No vars() of its own (as in Objax 1.8): Module.vars names the variables `(Parallel)` + the wrapped module's.

    def __repr__(self):
        return (f'{reprs.class_path(self)}(f={module_or_function_repr(self.__wrapped__)}, '
                f'reduce={reprs.function_repr(self.reduce)}, axis_name={self.axis_name!r}, '
                f'static_argnums={tuple(sorted(self.static_argnums)) or None})')
