"""Sharded variables: a PartitionSpec per variable and the layout of a VarCollection on a jax.sharding.Mesh.

A variable's spec says how its value is split over the axes of a mesh (jax.sharding.PartitionSpec, one entry
per array dimension). It is given when the variable is created (`set_spec(TrainVar(...), P(None, 'model'))`),
by rules over the names of a VarCollection (`apply_rules(vc, [('*(Linear).w', P(None, 'model'))])`, or the
`fsdp(mesh)` rule that splits every floating-point variable on one of its dimensions), or not at all
(replicated). `shard(vc, mesh)` then lays each value of the collection out on the mesh. Optimizer slots
(the `m`/`v` of Momentum, Adam, LARS, ExponentialMovingAverage: the lists of StateVars kept beside a list of
TrainRefs) take the spec of the variable they track (rules skip them) unless `set_spec` gave them one.

Once laid out, objax.Jit compiles with those layouts: the values go in as they are, and the new values come
back with the same layout (jit out_shardings), so nothing drifts to another layout or is gathered on each
device. The batch can be one global array split over the 'data' axis
(`objax.util.make_global_batch(x, 'data', mesh=mesh)`). After jax.distributed.initialize the mesh may span the
devices of every process; each process builds the same model and calls `shard` on its (identical) values.
"""

import fnmatch
import re
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from objax._core.layout import changed as layouts_changed, place
from objax._core.variables import layout_of, record_layout, record_spec, spec_of, storage_groups
from objax.varcollection import VarCollection
from objax.variable import BaseVar, RandomState, TrainRef

__all__ = ['apply_rules', 'fsdp', 'get_spec', 'layout', 'make_mesh', 'set_spec', 'shard', 'unshard']

Rule = Union[Tuple[Union[str, 're.Pattern'], PartitionSpec], Callable[[str, BaseVar], Optional[PartitionSpec]]]

_SLOT = re.compile(r'^(?P<owner>.*)\.(?P<attr>[^.()\[\]]+)\(ModuleList\)\[(?P<index>\d+)\]$')


def make_mesh(axes: Union[str, Mapping[str, int]], devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A mesh with the named axes, e.g. make_mesh('data=2,model=4') or make_mesh({'data': 8}).

    Args:
        axes: axis name -> size, as a dict or a 'name=size,name=size' string; one size may be -1 (the rest of
            the devices).
        devices: the devices to use, in order (default: jax.devices(), all devices of all processes).

    Returns:
        A jax.sharding.Mesh of shape (size, ...) whose axes are of type Auto (GSPMD partitions the program).

    Raises:
        ValueError: the sizes do not multiply to the number of devices, or `axes` is malformed.
    """
    if isinstance(axes, str):
        parsed = {}
        for part in filter(None, (p.strip() for p in axes.split(','))):
            name, sep, size = part.partition('=')
            if not sep or not name.strip() or not size.strip().lstrip('-').isdigit():
                raise ValueError(f'make_mesh: expected "name=size,name=size" (e.g. "data=2,model=4"), got {axes!r}')
            parsed[name.strip()] = int(size)
        axes = parsed
    devices = list(jax.devices() if devices is None else devices)
    if not axes:
        raise ValueError('make_mesh: at least one axis is needed')
    sizes = list(axes.values())
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f'make_mesh: sizes must be positive (one may be -1), got {dict(axes)}')
    if -1 in sizes:
        known = int(np.prod([s for s in sizes if s != -1]))
        sizes[sizes.index(-1)] = len(devices) // known if known and len(devices) % known == 0 else 0
    if int(np.prod(sizes)) != len(devices) or 0 in sizes:
        raise ValueError(f'make_mesh: axes {dict(axes)} need {int(np.prod(list(axes.values())))} devices, '
                         f'there are {len(devices)}')
    return Mesh(np.array(devices, dtype=object).reshape(sizes), tuple(axes),
                axis_types=(AxisType.Auto,) * len(sizes))


def set_spec(var: BaseVar, spec: Optional[PartitionSpec]) -> BaseVar:
    """Gives `var` a PartitionSpec (None: no spec of its own); returns `var`, e.g.
    `self.w = set_spec(objax.TrainVar(w), P(None, 'model'))`. Takes effect at the next `shard`.

    Raises:
        TypeError: `var` is not a variable or `spec` not a PartitionSpec.
        ValueError: the spec has more entries than the value has dimensions.
    """
    if not isinstance(var, BaseVar):
        raise TypeError(f'set_spec(var): expected an objax variable, got {type(var).__name__}')
    if isinstance(var, TrainRef):
        raise TypeError(f'set_spec: {var._label()} is a reference; give the spec to the TrainVar it refers to')
    if spec is not None:
        _check_spec_rank(spec, var, var._label())
    record_spec(var, spec)
    return var


def get_spec(var: BaseVar) -> Optional[PartitionSpec]:
    """The PartitionSpec given to `var` (or, for a TrainRef, to its TrainVar); None if it has none."""
    return spec_of(var._storage())


def layout(var: BaseVar) -> Optional[NamedSharding]:
    """The NamedSharding `shard` laid `var` out with (None if it was not laid out, or `unshard` undid it)."""
    return layout_of(var._storage())


def _check_spec_rank(spec, var: BaseVar, name: str):
    if not isinstance(spec, PartitionSpec):
        raise TypeError(f'{name}: expected a jax.sharding.PartitionSpec, got {type(spec).__name__}')
    shape = np.shape(var._storage().value)
    if len(spec) > len(shape):
        raise ValueError(f'{name}: PartitionSpec {spec} has {len(spec)} entries but the value has only '
                         f'{len(shape)} dimensions (shape {shape})')


def _match(rule, name: str, var: BaseVar) -> Tuple[bool, Optional[PartitionSpec]]:
    """(whether `rule` matches the variable `name`, the spec it gives)."""
    if callable(rule):
        spec = rule(name, var)
        return spec is not None, spec
    pattern, spec = rule
    found = pattern.search(name) if isinstance(pattern, re.Pattern) else fnmatch.fnmatchcase(name, pattern)
    return bool(found), spec


def _check_rules(rules) -> List[Rule]:
    rules = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    for i, rule in enumerate(rules):
        if callable(rule):
            continue
        ok = isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], (str, re.Pattern))
        if not ok or not (rule[1] is None or isinstance(rule[1], PartitionSpec)):
            raise TypeError(f'sharding rules[{i}]: expected (glob or re.Pattern, PartitionSpec or None) or a '
                            f'callable(name, var) -> PartitionSpec, got {rule!r}')
    return rules


def apply_rules(vc: VarCollection, rules: Union[Iterable[Rule], Mapping]) -> Dict[str, PartitionSpec]:
    """Gives each variable of `vc` the spec of the first rule that matches one of its names.

    Args:
        vc: the collection; a TrainRef is matched under its own name but gives the spec to its TrainVar.
            Optimizer slots are skipped: they follow the variable they track (`set_spec` overrides that).
        rules: in order, (pattern, spec) pairs (or a dict pattern -> spec) where the pattern is a glob over the
            whole name (fnmatch: `*(Linear).w`) or a compiled regular expression (re.search), or callables
            `rule(name, var) -> PartitionSpec or None` (e.g. `fsdp(mesh)`). A spec of None leaves the variable
            unmatched by later rules and without a spec.

    Returns:
        {name: spec} of the variables that a rule matched (the first name of each).

    Raises:
        TypeError, ValueError: a malformed rule, or a spec that does not fit a variable's value; nothing is
            changed then.
    """
    rules = _check_rules(rules)
    chosen, names, slots = {}, {}, _slot_owners(vc)
    for name, var in vc.items():
        storage = var._storage()
        if id(storage) in chosen or id(storage) in slots:
            continue
        for rule in rules:
            matched, spec = _match(rule, name, var)
            if matched:
                if spec is not None:
                    _check_spec_rank(spec, storage, f'rule for "{name}"')
                chosen[id(storage)] = (storage, spec)
                names[id(storage)] = name
                break
    for storage, spec in chosen.values():
        record_spec(storage, spec)
    return {names[k]: spec for k, (_, spec) in chosen.items() if spec is not None}


def fsdp(mesh: Mesh, axis: str = 'data', min_size: int = 0) -> Callable[[str, BaseVar], Optional[PartitionSpec]]:
    """A rule splitting every floating-point variable over one mesh axis (fully sharded data parallel).

    Args:
        mesh: the mesh the variables will be laid out on.
        axis: the axis to split over.
        min_size: variables of fewer elements are left whole.

    Returns:
        A rule for `apply_rules`/`shard`: the spec splitting a variable's largest dimension that the axis size
        divides (other dimensions whole), or None (next rule; replicated by default) for random keys, integer
        counters, small variables and those with no divisible dimension.

    Raises:
        ValueError: the mesh has no axis `axis`.
    """
    if axis not in mesh.shape:
        raise ValueError(f'fsdp: the mesh has no axis {axis!r} (its axes: {tuple(mesh.axis_names)})')
    n = mesh.shape[axis]

    def rule(name: str, var: BaseVar) -> Optional[PartitionSpec]:
        value = var._storage().value
        if isinstance(var, RandomState) or not jax.numpy.issubdtype(value.dtype, jax.numpy.inexact):
            return None
        shape = np.shape(value)
        if not shape or int(np.prod(shape)) < min_size:
            return None
        dims = [d for d in sorted(range(len(shape)), key=lambda d: -shape[d]) if shape[d] % n == 0]
        if not dims:
            return None
        return PartitionSpec(*[axis if d == dims[0] else None for d in range(len(shape))])

    rule.__name__ = f'fsdp({axis!r})'
    return rule


def _slot_owners(vc: VarCollection) -> Dict[int, BaseVar]:
    """id(slot) -> the variable it tracks: in a module holding a ModuleList of TrainRefs (e.g. `train_vars`,
    `refs`), entry i of every other ModuleList of the same length tracks entry i when shaped like it."""
    lists: Dict[str, Dict[str, Dict[int, BaseVar]]] = {}
    for name, var in vc.items():
        m = _SLOT.match(name)
        if m:
            lists.setdefault(m['owner'], {}).setdefault(m['attr'], {})[int(m['index'])] = var
    owners = {}
    for attrs in lists.values():
        tracked = [items for items in attrs.values() if any(isinstance(v, TrainRef) for v in items.values())]
        for items in attrs.values():
            if any(isinstance(v, TrainRef) for v in items.values()):
                continue
            for refs in tracked:
                if set(refs) != set(items):
                    continue
                for i, slot in items.items():
                    target = refs[i]._storage()
                    if np.shape(slot.value) == np.shape(target.value):
                        owners.setdefault(id(slot), target)
    return owners


def _resolve(vc: VarCollection, mesh: Mesh) -> List[Tuple[str, BaseVar, NamedSharding]]:
    """(name, storage variable, sharding) for each distinct storage variable of `vc`, checked against `mesh`."""
    owners = _slot_owners(vc)
    out, errors = [], []
    for storage, (name, *_) in storage_groups(vc.items()):
        spec = spec_of(storage)
        if spec is None and id(storage) in owners:
            spec = spec_of(owners[id(storage)])
        spec = PartitionSpec() if spec is None else spec
        shape = np.shape(storage.value)
        problem = _spec_problem(spec, shape, mesh)
        if problem:
            errors.append(f'"{name}" (shape {shape}, spec {spec}): {problem}')
        else:
            out.append((name, storage, NamedSharding(mesh, spec)))
    if errors:
        raise ValueError('shard: these variables cannot be laid out on the mesh '
                         f'{dict(mesh.shape)}; nothing was changed:\n  ' + '\n  '.join(errors))
    return out


def _spec_problem(spec: PartitionSpec, shape: Tuple[int, ...], mesh: Mesh) -> str:
    if len(spec) > len(shape):
        return f'{len(spec)} entries for {len(shape)} dimensions'
    used = []
    for dim, entry in enumerate(spec):
        axes = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        for a in axes:
            if a not in mesh.shape:
                return f'mesh has no axis {a!r} (its axes: {tuple(mesh.axis_names)})'
            if a in used:
                return f'axis {a!r} used twice'
            used.append(a)
        size = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
        if shape[dim] % size:
            return f'dimension {dim} of size {shape[dim]} does not divide among {size} devices'
    return ''


def shard(vc: VarCollection, mesh: Mesh, rules: Optional[Union[Iterable[Rule], Mapping]] = None
          ) -> Dict[str, NamedSharding]:
    """Lays every value of `vc` out on `mesh` according to its variable's spec (replicated without one).

    Args:
        vc: the variables (model, optimizer, ...); optimizer slots follow the variable they track.
        mesh: a mesh with Auto axes (see `make_mesh`), over the devices of one or of all processes.
        rules: optional rules applied first (see `apply_rules`).

    Returns:
        {name: NamedSharding} for each distinct variable (its first name).

    Raises:
        ValueError: a spec names an axis the mesh lacks or a dimension does not divide among its devices;
            nothing is changed then.
    """
    if not isinstance(vc, VarCollection):
        raise TypeError(f'shard(vc): expected a VarCollection, got {type(vc).__name__}')
    if not isinstance(mesh, Mesh):
        raise TypeError(f'shard(mesh): expected a jax.sharding.Mesh, got {type(mesh).__name__}')
    if any(t != AxisType.Auto for t in mesh.axis_types):
        raise ValueError(f'shard: the mesh axes must be of type Auto, got {mesh.axis_types}; build it with '
                         f'objax.sharding.make_mesh or jax.make_mesh(..., axis_types=(AxisType.Auto,) * n)')
    if rules is not None:
        saved = {id(v._storage()): (v._storage(), spec_of(v._storage())) for v in vc.values()}
        apply_rules(vc, rules)
        try:
            resolved = _resolve(vc, mesh)
        except ValueError:
            for v, spec in saved.values():
                record_spec(v, spec)
            raise
    else:
        resolved = _resolve(vc, mesh)
    placed = [place(v.value, s) for _, v, s in resolved]
    for (_, v, s), x in zip(resolved, placed):
        v.assign(x)  # the same value, laid out on the mesh
        record_layout(v, s)
    layouts_changed()
    return {name: s for name, _, s in resolved}


def unshard(vc: VarCollection):
    """Brings the values of `vc` back to this process's default device (whole values) and forgets their
    layouts. Single process only (a value split over processes cannot be brought to one device).

    Raises:
        ValueError: a value is split over several processes.
    """
    storage = [v._storage() for v in vc]
    for v in storage:
        if isinstance(v.value, jax.Array) and not v.value.is_fully_addressable:
            raise ValueError(f'unshard: {v._label()} is split over several processes; nothing was changed')
    for v in storage:
        v.assign(jax.device_put(np.asarray(v.value)))
        record_layout(v, None)
    layouts_changed()

