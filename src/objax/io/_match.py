"""Shared by the file formats: which values to save, and checked, all-or-nothing loading into a VarCollection."""

import os
from typing import Callable, Dict, List, Optional, Tuple

import jax
import numpy as np

from objax._core.variables import BaseVar, storage_groups
from objax.varcollection import VarCollection

__all__ = ['UnreadableFileError', 'ShapeMismatchError', 'stored_values', 'assign_checked', 'check_vc', 'describe',
           'open_for_reading', 'assign_all', 'place_like_current']


class UnreadableFileError(ValueError):
    """The file is empty, truncated, corrupted or not in the expected format (it says nothing about the model)."""


class ShapeMismatchError(ValueError, AssertionError):
    """A stored array's shape differs from its variable's; catchable as AssertionError, as in Objax 1.8."""


def describe(file) -> str:
    """A short name for a path or an open file, for error messages."""
    if isinstance(file, (str, bytes)) or hasattr(file, '__fspath__'):
        return repr(str(file))
    name = getattr(file, 'name', None)
    return f'file {name!r}' if isinstance(name, str) else f'<{type(file).__name__}>'


def open_for_reading(path, source: str):
    """Opens `path` in binary mode; any failure but a missing file is an UnreadableFileError naming it."""
    try:
        return open(path, 'rb')
    except FileNotFoundError:
        raise
    except OSError as e:  # a directory, no permission, an I/O error...
        kind = 'is a directory' if os.path.isdir(path) else f'cannot be opened ({type(e).__name__}: {e})'
        raise UnreadableFileError(f'{source} {kind}') from None


def check_vc(vc, fn: str):
    if not isinstance(vc, VarCollection):
        raise TypeError(f'{fn}(vc): expected a VarCollection (e.g. model.vars()), got {type(vc).__name__}')


def stored_values(vc: VarCollection) -> Tuple[List[str], List[np.ndarray]]:
    """Names and host values of the distinct stored variables, each under its first name in `vc`."""
    groups = storage_groups(vc.items())
    return [names[0] for _, names in groups], [np.asarray(jax.device_get(target.value)) for target, _ in groups]


def _rename(renamer: Optional[Callable[[str], str]], name: str) -> str:
    if renamer is None:
        return name
    out = renamer(name)
    if not isinstance(out, str):
        raise TypeError(f'renamer({name!r}) returned a {type(out).__name__}, expected a str')
    return out


def _dtype_matches(stored: np.dtype, dtype: np.dtype) -> bool:
    """Whether a stored dtype holds values of `dtype`: the same type (any byte order), or raw bytes of an extended
    type of the same size (bfloat16 and friends are saved in .npz files as void)."""
    if stored.kind == 'V' and stored.fields is None and dtype.kind == 'V':
        return stored.itemsize == dtype.itemsize
    return stored.newbyteorder('=') == dtype.newbyteorder('=')


def _convert(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if value.dtype == dtype:
        return value
    if value.dtype.kind == 'V':
        return value.view(dtype)
    return value.astype(dtype)


def _read(entry) -> np.ndarray:
    """The array of an entry: a numpy array, or a lazily read file member (with `read()`)."""
    return entry.read() if hasattr(entry, 'read') else np.asarray(entry)


def _verify(entry):
    """Checks a lazily read entry's integrity (raises UnreadableFileError) before blaming the model for it."""
    if hasattr(entry, 'verify'):
        entry.verify()


def assign_checked(vc: VarCollection, entries: Dict[str, object], renamer: Optional[Callable[[str], str]],
                   source: str, strict: bool = False):
    """Assigns the file's `entries` (stored name -> array) to the variables of `vc`, all or nothing.

    Each stored name is passed through `renamer`; each variable then loads from the first of its names in `vc` found
    among the renamed entries (a TrainRef loads into its TrainVar). Entries matching no variable are ignored unless
    `strict`. An entry may be any object with `shape` and `dtype` and, to be read lazily, `read()` (and `verify()`).

    Raises:
        ShapeMismatchError: (a ValueError and AssertionError) a stored shape differs from its variable's.
        ValueError: variables missing from the file, wrong dtypes, or unused entries when `strict`; the message
            lists every problem, and nothing is changed.
        UnreadableFileError: an entry turns out to be corrupted.
    """
    renamed: Dict[str, str] = {}
    clashes: Dict[str, List[str]] = {}
    for stored in entries:
        new = _rename(renamer, stored)
        if new in renamed:
            clashes.setdefault(new, [renamed[new]]).append(stored)
        else:
            renamed[new] = stored
    used, plan, missing, mismatched, shape_error = set(), [], [], [], False
    for target, names in storage_groups(vc.items()):
        key = next((n for n in names if n in renamed), None)
        if key is None:
            missing.append(' = '.join(map(repr, names)))
            continue
        stored = renamed[key]
        used.add(stored)
        label = repr(stored) if stored == key else f'{stored!r} (renamed {key!r})'
        if key in clashes:
            mismatched.append(f'{key!r}: the renamer gives this name to several entries of the file: '
                              + ', '.join(map(repr, clashes[key])))
            continue
        entry, current = entries[stored], target.value
        shape, dtype = tuple(entry.shape), np.dtype(entry.dtype)
        if shape != tuple(current.shape) or not _dtype_matches(dtype, np.dtype(current.dtype)):
            _verify(entry)  # a corrupted header is the file's fault, not the model's
            if shape != tuple(current.shape):
                shape_error = True
                mismatched.append(f'{label}: shape {shape} in the file, {tuple(current.shape)} in the collection')
            else:
                mismatched.append(f'{label}: dtype {dtype} in the file, {current.dtype} in the collection')
            continue
        plan.append((target, entry, np.dtype(current.dtype)))
    unused = [k for k in entries if k not in used]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing from the file: ' + ', '.join(missing))
    if unused and (strict or missing):
        shown = ', '.join(repr(k) if _rename(renamer, k) == k else f'{k!r} (renamed {_rename(renamer, k)!r})'
                          for k in unused)
        what = 'unexpected in the file (no variable of that name)' if strict else 'unused in the file'
        problems.append(f'{len(unused)} {what}: {shown}')
    problems += mismatched
    if problems:
        error = ShapeMismatchError if shape_error else ValueError
        raise error(f'Cannot load {source} into the VarCollection, nothing was changed:\n  ' + '\n  '.join(problems))
    values = [(target, _convert(_read(entry), dtype)) for target, entry, dtype in plan]  # may raise: nothing set yet
    assign_all(values)


def place_like_current(target: BaseVar, value: np.ndarray):
    """`value` on the devices and in the layout of `target`'s current value (as it is if that is not a jax.Array)."""
    current = target.value
    return jax.device_put(value, current.sharding) if isinstance(current, jax.Array) else value


def assign_all(values: List[Tuple[BaseVar, np.ndarray]],
               place: Callable[[BaseVar, np.ndarray], object] = place_like_current):
    """Assigns every (variable, value), each as `place(variable, value)` gives it (by default placed like the
    current value); restores the old values on failure."""
    done = []
    try:
        for target, value in values:
            current = target.value
            target.assign(place(target, value), check=False)
            done.append((target, current))
    except BaseException:
        for target, old in reversed(done):
            target.assign(old, check=False)
        raise
