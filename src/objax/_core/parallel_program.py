"""The program objax.Parallel runs, and how its arguments are laid out on the device mesh.

One program serves both of Parallel's modes. Its inputs are the variables' values and the arguments' leaves;
a value is split one row per device when it is stacked per device (inside `with vc.replicate():`) or is a
random key outside such a block (split into one key per device at each call), and replicated otherwise (a
value objax.sharding split over the devices is gathered inside the program); array arguments are split on
their leading axis. f is traced once for one device, the results provably equal on all devices are found
(objax._core.invariant) and produced once, the others stacked per device. Outputs are then merged by
Parallel's `reduce`; a changed variable keeps one row per device when it is stacked, and is otherwise merged
by its own `reduce` (the common value itself when all devices agree and the reduce is a mean or a first copy)
and laid out where the variable keeps its value between calls: in the layout objax.sharding recorded for it
(so that a Jit called next takes it as it is), else replicated on the mesh.
"""

import functools
from typing import Callable, FrozenSet, List, Optional, Sequence, Set, Tuple

import jax
import jax.numpy as jn
import numpy as np
from jax.extend import core as jax_core
from jax.sharding import NamedSharding, PartitionSpec

from objax._core import invariant, layout
from objax._core.pure import Pure
from objax._core.refs import Ref, at_top
from objax._core.transform import values_first
from objax._core.variables import reduce_first, reduce_mean
from objax.typing import JaxArray

__all__ = ['Plan', 'check_stacked', 'compile_program', 'place_args', 'place_for_trace', 'static_positions']


class Plan:
    """What a Parallel's programs are built from: its label in messages, the mesh axis, the reduce of its
    outputs and the positions of its static arguments; the mesh and its shardings follow from the axis name.

    Args:
        owner: the label of the Parallel, e.g. 'Parallel(train_op)'.
        axis_name: the name of the device axis.
        reduce: merges each output stacked per device, shape (ndev, ...).
        static_argnums: positions of the arguments compiled in.
    """

    def __init__(self, owner: str, axis_name: str, reduce: Callable[[JaxArray], JaxArray],
                 static_argnums: Tuple[int, ...]):
        self.owner, self.axis_name, self.reduce, self.static_argnums = owner, axis_name, reduce, static_argnums
        self.mesh = layout.mesh(axis_name)
        self.ndevices = self.mesh.devices.size
        self.local_ndevices = len(self.mesh.local_devices)
        self.replicated = layout.replicated(axis_name)
        self.per_device = layout.per_device(axis_name)

    def layouts(self, recorded: Optional[Sequence[Optional[NamedSharding]]], n: int) -> List[NamedSharding]:
        """Where the values of n variables are kept between calls: the layout objax.sharding recorded for a
        variable when it spans the mesh's devices in the mesh's order (a program can only take values from one
        device order), else replicated on the mesh.

        Args:
            recorded: each variable's recorded layout (None where it has none), or None when none has one.
            n: the number of variables.

        Returns:
            One NamedSharding per variable.
        """
        if recorded is None:
            return [self.replicated] * n
        devices = tuple(self.mesh.devices.flat)
        return [self.replicated if s is None or tuple(s.mesh.devices.flat) != devices else s for s in recorded]


def static_positions(plan: Plan, nargs: int) -> Set[int]:
    """The positions of the static arguments among `nargs` positional arguments.

    Args:
        plan: the Parallel's plan.
        nargs: how many positional arguments were given.

    Returns:
        The non-negative positions.

    Raises:
        ValueError: a static position is beyond the arguments given.
    """
    positions = set()
    for i in plan.static_argnums:
        if not -nargs <= i < nargs:
            raise ValueError(f'{plan.owner}: static_argnums contains {i} but only {nargs} positional '
                             f'arguments were given')
        positions.add(i % nargs)
    return positions


def _place_leaf(plan: Plan, x, label: Callable[[], str]):
    """Checks the batch size of one argument leaf and lays it out on the mesh (rows split, scalars
    replicated); `label()` names the leaf in errors."""
    tracer = isinstance(x, jax.core.Tracer)
    if not tracer and isinstance(x, jax.Array) and x.sharding == plan.per_device:
        return x  # e.g. a global batch from objax.util.make_global_batch: already laid out
    if np.ndim(x) == 0:
        return x if isinstance(x, (int, float, bool, complex)) else layout.place(x, plan.replicated, local_part=True)
    # A traced value (Parallel inside Jit) or a global array holds the whole batch.
    is_global = tracer or (isinstance(x, jax.Array) and not x.is_fully_addressable)
    ndev = plan.ndevices if is_global else plan.local_ndevices
    n = np.shape(x)[0]
    if n % ndev:
        raise ValueError(f'{plan.owner}: {label()} has a batch (leading axis) of size {n}, which does not '
                         f'divide evenly among {ndev} devices; use a multiple of {ndev}')
    return layout.place(x, plan.per_device, local_part=True)


def _path_label(i: int, path) -> str:
    return f'argument {i}{jax.tree_util.keystr(path)}'


def place_args(plan: Plan, args: Sequence, static: Set[int]) -> list:
    """Checks batch sizes and lays the arguments out on the mesh (static ones are left as they are).

    Args:
        plan: the Parallel's plan.
        args: the positional arguments of a call.
        static: the positions of the static arguments.

    Returns:
        The arguments, each array leaf laid out on the mesh: rows split over the devices, scalars replicated.

    Raises:
        ValueError: a batch (leading axis) does not divide evenly among the devices.
    """
    out = list(args)
    for i, arg in enumerate(args):
        if i in static:
            continue
        # Containers first: np.ndim of a list of arrays with different shapes raises.
        if isinstance(arg, jax.Array) or not isinstance(arg, (list, tuple, dict)) and np.ndim(arg) == 0:
            out[i] = _place_leaf(plan, arg, lambda i=i: f'argument {i}')
            continue
        paths, tree = jax.tree_util.tree_flatten_with_path(arg)
        out[i] = jax.tree_util.tree_unflatten(tree, [_place_leaf(plan, x, lambda p=p, i=i: _path_label(i, p))
                                                     for p, x in paths])
    return out


def compile_program(plan: Plan, pure: Pure, random: Sequence[int], stacked: FrozenSet[int],
                    donate: bool, layouts: Sequence[NamedSharding]) -> Callable:
    """The jitted program of one mode: `(values, *args) -> (outputs, changes)`, or with `donate`
    `(outputs, every variable's new value)` with the values' buffers donated.

    Args:
        plan: the Parallel's plan.
        pure: the pure function of f and its variables.
        random: positions (in pure.variables) of the RandomStates.
        stacked: positions of the variables stacked per device by a `replicate()` block (empty outside one).
        donate: donate the values' buffers to the call.
        layouts: where each variable's merged new value goes (see `Plan.layouts`); stacked ones are kept one row
            per device.

    Returns:
        The jax.jit of the program (compiled at its first call, once per static signature).
    """
    program = functools.partial(_traced, plan, pure, frozenset(random), stacked, donate, tuple(layouts))
    return jax.jit(program, static_argnums=values_first(plan.static_argnums), donate_argnums=(0,) if donate else ())


def _aval(x, split: int = 1, row: bool = False) -> jax.ShapeDtypeStruct:
    """Shape/dtype of what one device sees of x: its leading axis split in `split`, or one row of it."""
    aval = jax.typeof(x)
    if row:
        shape = tuple(aval.shape[1:])
    else:
        shape = (aval.shape[0] // split,) + tuple(aval.shape[1:]) if split > 1 else aval.shape
    return jax.ShapeDtypeStruct(shape, aval.dtype, weak_type=aval.weak_type)


def _traced(plan: Plan, pure: Pure, random: FrozenSet[int], stacked: FrozenSet[int], donate: bool,
            layouts: Tuple[NamedSharding, ...], values, *args):
    axis, ndev = plan.axis_name, plan.ndevices
    split = random - stacked  # random keys outside a replicate() block: one new key per device each call
    per_row = stacked | split
    static = static_positions(plan, len(args))
    dynamic = [i for i in range(len(args)) if i not in static]
    leaves, leaves_tree = jax.tree.flatten([args[i] for i in dynamic])
    batched = [jn.ndim(x) > 0 for x in leaves]
    with jax.threefry_partitionable(False):
        inputs = [jax.random.split(x, ndev) if i in split else x for i, x in enumerate(values)]

    def per_device(device_values, device_leaves):
        call_args = list(args)
        for i, x in zip(dynamic, jax.tree.unflatten(leaves_tree, device_leaves)):
            call_args[i] = x
        return pure(device_values, *call_args)

    # Trace f once for one device, find which results are provably equal on all devices (those are
    # returned once, the others stacked per device), then run that program on every device.
    closed, shapes = jax.make_jaxpr(per_device, axis_env=[(axis, ndev)], return_shape=True)(
        [_aval(x, row=i in stacked) for i, x in enumerate(values)],
        [_aval(x, ndev if b else 1) for x, b in zip(leaves, batched)])
    changed, tree = sorted(shapes[1]), jax.tree.structure(shapes[0])
    varying = invariant.varying_outputs(closed.jaxpr, [i in per_row for i in range(len(values))] + batched, axis)
    program = jax_core.jaxpr_as_fun(closed)

    def run(device_values, device_leaves):
        device_values = [x[0] if i in per_row else x for i, x in enumerate(device_values)]
        results = program(*device_values, *device_leaves)
        return [jn.expand_dims(x, 0) if v else x for x, v in zip(results, varying)]

    def spec(split_rows: bool) -> PartitionSpec:
        return PartitionSpec(axis) if split_rows else PartitionSpec()

    def stack(x, varying_: bool):  # one row per device
        return x if varying_ else jn.broadcast_to(x, (ndev,) + x.shape)

    results = jax.shard_map(run, mesh=plan.mesh, out_specs=[spec(v) for v in varying], check_vma=False,
                            in_specs=([spec(i in per_row) for i in range(len(values))], [spec(b) for b in batched])
                            )(inputs, leaves)
    nout = tree.num_leaves
    new = {}
    for i, x, v in zip(changed, results[nout:], varying[nout:]):
        if i in stacked:  # each device keeps its own copy
            new[i] = jax.lax.with_sharding_constraint(stack(x, v), plan.per_device)
        else:
            new[i] = jax.lax.with_sharding_constraint(_merge(plan, pure, i, x, v, values[i]), layouts[i])
    outputs = jax.tree.unflatten(tree, [_reduce_output(plan, stack(x, v)) for x, v in zip(results[:nout], varying)])
    return outputs, ([new.get(i, x) for i, x in enumerate(values)] if donate else new)


def _reduce_output(plan: Plan, x: JaxArray) -> JaxArray:
    try:
        return plan.reduce(x)
    except (TypeError, ValueError) as e:
        raise type(e)(f'{plan.owner}: reduce={getattr(plan.reduce, "__name__", plan.reduce)!r} failed on an '
                      f'output stacked per device with shape {tuple(x.shape)}: {e}. A per-device scalar '
                      f'needs a reduce such as `lambda x: x.mean(0)`') from e


def _merge(plan: Plan, pure: Pure, i: int, x: JaxArray, varying: bool, old: JaxArray) -> JaxArray:
    """Merges the new values of variable i: stacked per device if `varying`, else the one common value."""
    var = pure.variables[i]
    reduce = var._reduce
    if not varying:
        if reduce is None or reduce is reduce_mean or reduce is reduce_first:
            return x  # the mean or first of identical copies is the value itself
        x = jn.broadcast_to(x, (plan.ndevices,) + x.shape)
    name = pure.describe(var) or var._label()
    if reduce is None:
        raise ValueError(f'{plan.owner}: variable "{name}" was changed differently on each device but has '
                         f'reduce=None, so its per-device values cannot be merged; give it a reduce '
                         f'(e.g. objax.reduce_mean)')
    merged = reduce(x)
    if jn.shape(merged) != jn.shape(old):
        raise ValueError(f'{plan.owner}: the reduce of variable "{name}" turned per-device values of shape '
                         f'{tuple(x.shape)} into shape {tuple(jn.shape(merged))}, expected {jn.shape(old)}')
    return merged.astype(old.dtype) if merged.dtype != old.dtype else merged


def check_stacked(plan: Plan, pure: Pure, values: List, stacked: FrozenSet[int]) -> None:
    """Checks that each stacked value still has one row per device.

    Args:
        plan: the Parallel's plan.
        pure: its pure function (names the variables).
        values: the current values of pure.variables.
        stacked: the positions of the stacked variables.

    Raises:
        ValueError: a stacked variable was reassigned inside its replicate() block to another shape.
    """
    for i in stacked:
        shape = jn.shape(values[i])
        if not shape or shape[0] != plan.ndevices:
            var = pure.variables[i]
            raise ValueError(f'{plan.owner}: variable "{pure.describe(var) or var._label()}" is stacked per device '
                             f'by `replicate()` but its value has shape {tuple(shape)}, expected '
                             f'({plan.ndevices}, ...) (one row per device); it was reassigned inside the block')


def place_for_trace(plan: Plan, pure: Pure, stacked: FrozenSet[int]) -> None:
    """Lays the variables' values out on the mesh before a JAX transformation (e.g. jax.jit around a Parallel)
    makes them the JAX array references its traced program reads (see objax._core.refs): the program needs
    them where the mesh is. Stacked values (inside `with vc.replicate():`) go one row per device, the others
    replicated.

    Args:
        plan: the Parallel's plan.
        pure: its pure function.
        stacked: the positions of the stacked variables.

    Raises:
        ValueError: a variable is already kept in a reference on other devices (a program compiled by JAX
            reads it there).
    """
    placed = {}
    with at_top():
        for i, var in enumerate(pure.variables):
            sharding = plan.per_device if i in stacked else plan.replicated
            x = var._stored()
            if isinstance(x, Ref):
                if x.sharding.device_set != sharding.device_set:
                    name = (pure.describe(var) if pure.describe else None) or var._label()
                    raise ValueError(f'{plan.owner}: variable "{name}" is kept in a JAX array reference on other '
                                     f'devices (a program compiled by JAX reads it there), so it cannot be used on '
                                     f'this mesh inside a JAX transformation; call {plan.owner} outside JAX '
                                     f'transformations')
            elif not isinstance(x, jax.core.Tracer):
                y = layout.place(x, sharding, local_part=True)
                if y is not x:
                    placed[i] = y
        pure.write(placed)
