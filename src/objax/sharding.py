"""Sharded variables: a PartitionSpec per variable and the layout of a VarCollection on a jax.sharding.Mesh.

A variable's spec says how its value is split over the axes of a mesh (jax.sharding.PartitionSpec, one entry
per array dimension). It is given when the variable is created (`set_spec(TrainVar(...), P(None, 'model'))`),
by rules over the names of a VarCollection (`apply_rules(vc, [('*(Linear).w', P(None, 'model'))])`, or the
`fsdp(mesh)` rule that splits every floating-point variable on one of its dimensions), or not at all
(replicated). `shard(vc, mesh)` then lays each value of the collection out on the mesh. Optimizer slots
take the spec of the variable they track (rules skip them) unless `set_spec` gave them one. A slot names the
variable it tracks: the `m`/`v` of Momentum, Adam, LARS and ExponentialMovingAverage and the per-parameter
state of Optax (adam's `mu` and `nu`...) do so when created, an optimizer of one's own with `track(slot, var)`.
Slots that name nothing are still found the way Objax 1.8 optimizers keep them: entry i of a ModuleList of
StateVars beside a ModuleList of TrainRefs of the same length tracks the i-th TrainRef's variable.

Once laid out, objax.Jit compiles with those layouts: the values go in as they are, and the new values come
back with the same layout (jit out_shardings), so nothing drifts to another layout or is gathered on each
device; only the Jits whose own variables were laid out anew recompile. objax.Parallel gathers the values
inside its program and also returns the new ones in their layouts. The batch can be one global array split
over the 'data' axis (`objax.util.make_global_batch(x, 'data', mesh=mesh)`). After jax.distributed.initialize
the mesh may span the devices of every process; each process builds the same model and calls `shard` on its
(identical) values.
"""

import fnmatch
import re
import warnings
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from objax._core.layout import canonical, place
from objax._core.layout import changed as layouts_changed
from objax._core.variables import (
    layout_of,
    record_layout,
    record_spec,
    record_tracked,
    spec_of,
    storage_groups,
    tracked_of,
)
from objax.varcollection import VarCollection
from objax.variable import BaseVar, RandomState, TrainRef

__all__ = ['apply_rules', 'fsdp', 'get_spec', 'layout', 'make_mesh', 'set_spec', 'shard', 'track', 'unshard']

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


def track(slot: BaseVar, var: Optional[BaseVar]) -> BaseVar:
    """Records that the optimizer slot `slot` (a moment, an average... of `var`, of the same shape) tracks `var`:
    without a spec of its own, `shard` lays it out as `var`, and rules skip it. Returns `slot`, e.g.
    `self.m = objax.ModuleList(track(objax.StateVar(jn.zeros_like(v.value)), v) for v in self.train_vars)`.

    Args:
        slot: the variable holding the tracking value (not a TrainRef).
        var: the tracked variable (a TrainRef stands for its TrainVar), or None to forget the link.

    Returns:
        `slot`.

    Raises:
        TypeError: `slot` is not a variable or is a TrainRef, or `var` is not a variable.
        ValueError: the values of `slot` and `var` have different shapes.
    """
    if not isinstance(slot, BaseVar) or isinstance(slot, TrainRef):
        raise TypeError(f'track(slot): expected an objax variable holding its own value, got {type(slot).__name__}')
    if var is not None:
        if not isinstance(var, BaseVar):
            raise TypeError(f'track(var): expected an objax variable, got {type(var).__name__}')
        var = var._storage()
        if np.shape(slot.value) != np.shape(var.value):
            raise ValueError(f'track: {slot._label()} of shape {np.shape(slot.value)} cannot track {var._label()} '
                             f'of shape {np.shape(var.value)}')
    record_tracked(slot, var)
    return slot


def layout(var: BaseVar) -> Optional[NamedSharding]:
    """The NamedSharding `shard` laid `var` out with (None if it was not laid out, or `unshard` undid it)."""
    return layout_of(var._storage())


def _check_entries(spec: PartitionSpec, name: str):
    """Refuses a spec entry that is not None, a mesh axis name or a tuple of names (e.g. an int)."""
    for dim, entry in enumerate(spec):
        names = entry if isinstance(entry, tuple) else (entry,)
        if entry is not None and not all(isinstance(a, str) for a in names):
            raise ValueError(f'{name}: PartitionSpec {spec} entry {dim} is {entry!r}; each entry must be None, a '
                             f'mesh axis name or a tuple of axis names')


def _check_spec_rank(spec, var: BaseVar, name: str):
    if not isinstance(spec, PartitionSpec):
        raise TypeError(f'{name}: expected a jax.sharding.PartitionSpec, got {type(spec).__name__}')
    _check_entries(spec, name)
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
    if isinstance(pattern, re.Pattern):
        return bool(pattern.search(name)), spec
    # The exact name vars() prints matches itself, although fnmatch reads its `[1]` as a character class.
    return name == pattern or fnmatch.fnmatchcase(name, pattern), spec


def _check_rules(rules) -> List[Rule]:
    rules = list(rules.items()) if isinstance(rules, Mapping) else list(rules)
    for i, rule in enumerate(rules):
        if callable(rule):
            continue
        ok = isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], (str, re.Pattern))
        if not ok or not (rule[1] is None or isinstance(rule[1], PartitionSpec)):
            raise TypeError(f'sharding rules[{i}]: expected (glob or re.Pattern, PartitionSpec or None) or a '
                            f'callable(name, var) -> PartitionSpec, got {rule!r}')
        if rule[1] is not None:
            _check_entries(rule[1], f'sharding rule {_rule_label(rule)}')
    return rules


def _rule_label(rule) -> str:
    pattern = rule[0].pattern if isinstance(rule[0], re.Pattern) else rule[0]
    return f'({pattern!r}, {rule[1]})'


def apply_rules(vc: VarCollection, rules: Union[Iterable[Rule], Mapping], strict: bool = True
                ) -> Dict[str, PartitionSpec]:
    """Gives each variable of `vc` the spec of the first rule that matches one of its names.

    Args:
        vc: the collection; a TrainRef is matched under its own name but gives the spec to its TrainVar.
            Optimizer slots are skipped: they follow the variable they track (`set_spec` overrides that).
        rules: in order, (pattern, spec) pairs (or a dict pattern -> spec) where the pattern is a glob over the
            whole name (fnmatch: `*(Linear).w`) or a compiled regular expression (re.search), or callables
            `rule(name, var) -> PartitionSpec or None` (e.g. `fsdp(mesh)`). A spec of None leaves the variable
            unmatched by later rules and without a spec. The exact name `vars()` prints always matches itself.
        strict: a (pattern, spec) rule whose pattern matches no name of `vc` raises ValueError (a misspelled
            name would otherwise leave its variable replicated); False: it warns instead. Callable rules such
            as `fsdp` may match nothing.

    Returns:
        {name: spec} of the variables that a rule matched (the first name of each).

    Raises:
        TypeError, ValueError: a malformed rule (an entry of a spec that is not None, an axis name or a tuple of
            them), a rule that matches no variable, or a spec that does not fit a variable's value; nothing is
            changed then.
    """
    rules = _check_rules(rules)
    chosen, names, slots = {}, {}, _slot_owners(vc)
    used = set()
    for name, var in vc.items():
        storage = var._storage()
        for i, rule in enumerate(rules):
            if not callable(rule) and i not in used and _match(rule, name, var)[0]:
                used.add(i)
        if id(storage) in chosen or _tracked(storage, slots) is not None:
            continue
        for rule in rules:
            matched, spec = _match(rule, name, var)
            if matched:
                if spec is not None:
                    _check_spec_rank(spec, storage, f'rule for "{name}"')
                chosen[id(storage)] = (storage, spec)
                names[id(storage)] = name
                break
    unused = [_rule_label(rule) for i, rule in enumerate(rules) if not callable(rule) and i not in used]
    if unused:
        message = (f'sharding rules match no variable of the collection: {", ".join(unused)} (patterns are globs '
                   f'over whole names such as "(Sequential)[0](Linear).w", or re.compile(...) searched in them)')
        if strict:
            raise ValueError(message + '; nothing was changed')
        warnings.warn(message, UserWarning, stacklevel=2)
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
    """id(slot) -> the variable it tracks, for the slots of `vc` that name none (see `track`): in a module holding
    a ModuleList of TrainRefs (e.g. `train_vars`), entry i of every other ModuleList of the same length tracks
    entry i when shaped like it, as Objax 1.8 optimizers keep their slots."""
    lists: Dict[str, Dict[str, Dict[int, BaseVar]]] = {}
    for name, var in vc.items():
        if tracked_of(var._storage()) is not None:
            continue
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


def _tracked(var: BaseVar, owners: Dict[int, BaseVar]) -> Optional[BaseVar]:
    """The variable `var` tracks: the one it names (see `track`), else the one `owners` (`_slot_owners`) finds."""
    found = tracked_of(var)
    return owners.get(id(var)) if found is None else found


def _spec(var: BaseVar, owners: Dict[int, BaseVar]) -> Optional[PartitionSpec]:
    """The spec `var` is laid out with: its own, else that of the variable it tracks (which may itself be a slot,
    e.g. an average of a moment), else None."""
    seen = set()
    while var is not None and id(var) not in seen:
        spec = spec_of(var)
        if spec is not None:
            return spec
        seen.add(id(var))
        var = _tracked(var, owners)
    return None


def _resolve(vc: VarCollection, mesh: Mesh) -> List[Tuple[str, BaseVar, NamedSharding]]:
    """(name, storage variable, sharding) for each distinct storage variable of `vc`, checked against `mesh`."""
    owners = _slot_owners(vc)
    out, errors = [], []
    for storage, (name, *_) in storage_groups(vc.items()):
        spec = _spec(storage, owners)
        spec = PartitionSpec() if spec is None else spec
        shape = np.shape(storage.value)
        problem = _spec_problem(spec, shape, mesh)
        if problem:
            errors.append(f'"{name}" (shape {shape}, spec {spec}): {problem}')
        else:
            out.append((name, storage, canonical(NamedSharding(mesh, spec))))
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


def shard(vc: VarCollection, mesh: Mesh, rules: Optional[Union[Iterable[Rule], Mapping]] = None,
          strict: bool = True) -> Dict[str, NamedSharding]:
    """Lays every value of `vc` out on `mesh` according to its variable's spec (replicated without one).

    Args:
        vc: the variables (model, optimizer, ...); optimizer slots follow the variable they track.
        mesh: a mesh with Auto axes (see `make_mesh`), over the devices of one or of all processes.
        rules: optional rules applied first (see `apply_rules`).
        strict: with rules, whether a rule that matches no variable raises (True) or warns (see `apply_rules`).

    Returns:
        {name: NamedSharding} for each distinct variable (its first name), each spec written without trailing
        None entries, as JAX writes layouts (P('model', None) gives P('model')), so layouts compare equal.

    Raises:
        ValueError: a spec names an axis the mesh lacks or a dimension does not divide among its devices, or a
            rule is malformed or matches nothing; nothing is changed then.
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
        apply_rules(vc, rules, strict)
        try:
            resolved = _resolve(vc, mesh)
        except BaseException:
            for v, spec in saved.values():
                record_spec(v, spec)
            raise
    else:
        resolved = _resolve(vc, mesh)
    placed = [place(v.value, s) for _, v, s in resolved]  # canonical: as compiled steps will return them
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

