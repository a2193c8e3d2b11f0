"""Saving and loading a VarCollection as an .npz archive in Objax 1.8's layout (`names` + '0', '1', ...)."""

import os
import zipfile
import zlib
from typing import IO, BinaryIO, Callable, Dict, Optional, Union

import numpy as np

from objax.io._atomic import atomic_write
from objax.io._match import UnreadableFileError, assign_checked, check_vc, describe, stored_values
from objax.varcollection import VarCollection

__all__ = ['save_var_collection', 'load_var_collection']

FileOrPath = Union[str, os.PathLike, IO[BinaryIO]]
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, KeyError)


def save_var_collection(file: FileOrPath, vc: VarCollection):
    """Writes the distinct variables of `vc` to `file` (a path, replaced atomically, or a binary file object).

    Layout: an array `names` and the values under '0', '1', ...; shared variables are written once under their
    first name and a TrainRef is written as the TrainVar it refers to."""
    check_vc(vc, 'save_var_collection')
    names, values = stored_values(vc)
    arrays = {str(i): v for i, v in enumerate(values)}

    def write(f):
        np.savez(f, names=np.array(names, dtype=str), **arrays)

    if isinstance(file, (str, os.PathLike)):
        atomic_write(file, write)
    else:
        write(file)


def _read_entries(file: FileOrPath, source: str) -> Dict[str, np.ndarray]:
    """Reads every array of an Objax .npz (never unpickling), or raises UnreadableFileError."""
    try:
        data = np.load(file, allow_pickle=False)
    except _READ_ERRORS as e:
        if isinstance(e, ValueError) and 'pickle' in str(e):
            e = 'not an .npz archive'
        raise UnreadableFileError(f'{source} cannot be read as an .npz archive: {e}') from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UnreadableFileError(f'{source} holds a single .npy array, not an .npz archive with `names`')
    with data:
        keys = set(data.files)
        if 'names' not in keys:
            raise UnreadableFileError(f'{source} has no `names` array: not a file written by save_var_collection')
        try:
            names = data['names']
        except _READ_ERRORS as e:
            raise UnreadableFileError(f'{source}: the `names` array cannot be read: {e}') from None
        if names.ndim != 1 or (names.size and names.dtype.kind not in 'US'):
            raise UnreadableFileError(f'{source}: `names` must be a 1-D array of strings, '
                                      f'got shape {names.shape} dtype {names.dtype}')
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
        problems = []
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f'duplicate names {duplicates}')
        expected = {'names'} | {str(i) for i in range(len(names))}
        if keys != expected:
            absent, extra = sorted(expected - keys), sorted(keys - expected)
            problems.append(f'array keys do not match `names` (absent: {absent}, extra: {extra})')
        entries = {}
        for i, name in enumerate(names):
            if str(i) not in keys:
                continue
            try:
                entries[name] = data[str(i)]
            except _READ_ERRORS as e:
                reason = 'it holds pickled Python objects, which are never loaded' if 'pickle' in str(e) else e
                problems.append(f'entry {str(i)!r} ({name!r}) cannot be read: {reason}')
        if problems:
            raise UnreadableFileError(f'{source} is not a valid Objax .npz file: ' + '; '.join(problems))
    return entries


def load_var_collection(file: FileOrPath, vc: VarCollection, renamer: Optional[Callable[[str], str]] = None):
    """Loads `file` (a path or a binary file object) into `vc`, all or nothing; never unpickles.

    `renamer` maps a name of `vc` to the name to look up in the file (e.g. to load an old checkpoint into a model
    whose modules were renamed). Missing, unexpected, misshaped or wrongly typed entries raise one ValueError
    listing them all, leaving `vc` unchanged; an unreadable file raises a ValueError naming it."""
    check_vc(vc, 'load_var_collection')
    source = describe(file)
    if isinstance(file, (str, os.PathLike)):
        with open(file, 'rb') as f:
            entries = _read_entries(f, source)
    else:
        entries = _read_entries(file, source)
    assign_checked(vc, entries, renamer, source)
