"""Shared by the file formats: which values to save, and checked, all-or-nothing loading into a VarCollection."""

from typing import Callable, Dict, List, Optional, Tuple

import jax
import numpy as np

from objax.variable import BaseVar, TrainRef
from objax.varcollection import VarCollection

__all__ = ['UnreadableFileError', 'stored_values', 'assign_checked', 'check_vc', 'describe']


class UnreadableFileError(ValueError):
    """The file is empty, truncated, corrupted or not in the expected format (it says nothing about the model)."""


def describe(file) -> str:
    """A short name for a path or an open file, for error messages."""
    if isinstance(file, (str, bytes)) or hasattr(file, '__fspath__'):
        return repr(str(file))
    name = getattr(file, 'name', None)
    return f'file {name!r}' if isinstance(name, str) else f'<{type(file).__name__}>'


def check_vc(vc, fn: str):
    if not isinstance(vc, VarCollection):
        raise TypeError(f'{fn}(vc): expected a VarCollection (e.g. model.vars()), got {type(vc).__name__}')


def _target(var: BaseVar) -> BaseVar:
    """The variable whose value is stored: a TrainRef stands for the TrainVar it refers to."""
    return var.ref if isinstance(var, TrainRef) else var


def stored_values(vc: VarCollection) -> Tuple[List[str], List[np.ndarray]]:
    """Names and host values of the distinct stored variables, each under its first name in `vc`."""
    seen, names, values = set(), [], []
    for name, var in vc.items():
        target = _target(var)
        if id(target) not in seen:
            seen.add(id(target))
            names.append(name)
            values.append(np.asarray(jax.device_get(target.value)))
    return names, values


def _rename(renamer: Optional[Callable[[str], str]], name: str) -> str:
    if renamer is None:
        return name
    out = renamer(name)
    if not isinstance(out, str):
        raise TypeError(f'renamer({name!r}) returned a {type(out).__name__}, expected a str')
    return out


def _compatible(value: np.ndarray, dtype: np.dtype) -> Optional[np.ndarray]:
    """`value` as `dtype` when it already is, or when it holds raw bytes of an extended type (bfloat16 in .npz)."""
    if value.dtype == dtype:
        return value
    if value.dtype.kind == 'V' and value.dtype.fields is None and dtype.kind == 'V' \
            and value.dtype.itemsize == dtype.itemsize:
        return value.view(dtype)
    return None


def assign_checked(vc: VarCollection, entries: Dict[str, np.ndarray], renamer: Optional[Callable[[str], str]],
                   source: str):
    """Assigns `entries` (file name -> array) to the variables of `vc`, or raises one error listing every problem.

    A variable is looked up in the file as `renamer(name)` for each of its names in `vc` (the first found wins);
    entries matching no name are unexpected. Nothing is assigned unless everything matches in shape and dtype."""
    groups: Dict[int, Tuple[BaseVar, List[str]]] = {}
    for name, var in vc.items():
        target = _target(var)
        groups.setdefault(id(target), (target, []))[1].append(name)
    wanted, plan, missing, mismatched = set(), [], [], []
    for target, names in groups.values():
        keys = [_rename(renamer, n) for n in names]
        wanted.update(keys)
        key = next((k for k in keys if k in entries), None)
        if key is None:
            looked = '' if keys == names else f' (looked up as {", ".join(map(repr, keys))})'
            missing.append(' = '.join(map(repr, names)) + looked)
            continue
        current = target.value
        value = _compatible(entries[key], np.dtype(current.dtype))
        if tuple(entries[key].shape) != tuple(current.shape):
            mismatched.append(f'{key!r}: shape {tuple(entries[key].shape)} in the file, '
                              f'{tuple(current.shape)} in the collection')
        elif value is None:
            mismatched.append(f'{key!r}: dtype {entries[key].dtype} in the file, {current.dtype} in the collection')
        else:
            plan.append((target, value))
    unexpected = [k for k in entries if k not in wanted]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing from the file: ' + ', '.join(missing))
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected in the file (no variable of that name): '
                        + ', '.join(map(repr, unexpected)))
    problems += mismatched
    if problems:
        raise ValueError(f'Cannot load {source} into the VarCollection, nothing was changed:\n  '
                         + '\n  '.join(problems))
    for target, value in plan:
        current = target.value
        placed = jax.device_put(value, current.sharding) if isinstance(current, jax.Array) else value
        target.assign(placed)
