"""Saving and loading a VarCollection as an .npz archive in Objax 1.8's layout (`names` + '0', '1', ...)."""

import os
from typing import IO, BinaryIO, Callable, Optional, Union

import numpy as np

from objax.io._atomic import atomic_write
from objax.io._match import assign_checked, check_vc, describe, open_for_reading, stored_values
from objax.io._npz import read_npz
from objax.varcollection import VarCollection

__all__ = ['save_var_collection', 'load_var_collection']

FileOrPath = Union[str, os.PathLike, IO[BinaryIO]]


def save_var_collection(file: FileOrPath, vc: VarCollection):
    """Writes the distinct variables of `vc` to `file` (a path, replaced atomically, or a binary file object).

    Layout: an array `names` and the values under '0', '1', ...; shared variables are written once under their
    first name and a TrainRef is written as the TrainVar it refers to.

    Args:
        file: a path (written to a hidden temporary file in the same directory, then renamed over the target, so a
            crash never leaves a partial file) or a binary file object opened for writing (written in place).
        vc: the variables to save.

    Raises:
        TypeError: `vc` is not a VarCollection.
        OSError: the file or its temporary cannot be written (e.g. the directory does not exist).
    """
    check_vc(vc, 'save_var_collection')
    names, values = stored_values(vc)
    arrays = {str(i): v for i, v in enumerate(values)}

    def write(f):
        np.savez(f, names=np.array(names, dtype=str), **arrays)

    if isinstance(file, (str, os.PathLike)):
        atomic_write(file, write)
    else:
        write(file)


def load_var_collection(file: FileOrPath, vc: VarCollection, renamer: Optional[Callable[[str], str]] = None,
                        strict: bool = False):
    """Loads an Objax .npz file (a path or a binary file object) into `vc`, all or nothing; never unpickles.

    Each name stored in the file is passed through `renamer` (e.g. `Renamer({'(OldNet)': '(Net)'})`), then each
    variable of `vc` loads from the first of its names found (a TrainRef loads into its TrainVar). Stored entries
    that match no variable are ignored (so a model loads from a model + optimizer checkpoint) unless `strict`.
    Each entry's shape and dtype are read from its header and checked before its data is inflated.

    Args:
        file: a path or a binary file object.
        vc: the variables to load.
        renamer: maps each stored name to the name looked up in `vc`.
        strict: refuse files with entries that match no variable.

    Raises:
        TypeError: `vc` is not a VarCollection.
        FileNotFoundError: `file` does not exist.
        UnreadableFileError: (a ValueError) the file is empty, truncated, corrupted or not an Objax .npz file.
        ShapeMismatchError: (a ValueError and AssertionError) a stored shape differs from its variable's.
        ValueError: variables missing from the file, wrong dtypes, or unused entries when `strict`; one message lists
            them all (with the unused stored names), and `vc` is unchanged.
    """
    check_vc(vc, 'load_var_collection')
    source = describe(file)
    f = open_for_reading(file, source) if isinstance(file, (str, os.PathLike)) else file
    try:
        archive, entries = read_npz(f, source)
        with archive:
            assign_checked(vc, entries, renamer, source, strict)
    finally:
        if f is not file:
            f.close()
