"""Reads .npy files holding a pickled object (such as tensorflow-vgg's `vgg19.npy`) without running code.

`np.load(path, allow_pickle=True)` would execute whatever the pickle asks for. Here the pickle is read by an
unpickler that resolves only the globals needed to rebuild numpy arrays and dtypes; containers (dicts,
lists, tuples) and plain values need no globals. Anything else is refused with an error naming the file and
the global it asked for, before it is called.
"""

import os
import pickle
from typing import Any, Union

import numpy as np

__all__ = []

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array reconstructor, whatever its module path


def _rebuild_array(subtype, shape, dtype):
    """numpy's array reconstructor, limited to plain ndarrays."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f'only numpy.ndarray may be rebuilt, not {subtype!r}')
    return _RECONSTRUCT(subtype, shape, dtype)


def _latin1_bytes(text: str, encoding: str = 'latin1') -> bytes:
    """What protocol-2 pickles of bytes call (`_codecs.encode(text, 'latin1')`), for that encoding only."""
    if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
        raise pickle.UnpicklingError(f'only _codecs.encode(str, "latin1") is allowed, got encoding {encoding!r}')
    return text.encode('latin1')


_ALLOWED = {
    ('_codecs', 'encode'): _latin1_bytes,
    ('numpy.core.multiarray', '_reconstruct'): _rebuild_array,
    ('numpy._core.multiarray', '_reconstruct'): _rebuild_array,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An Unpickler whose only globals are numpy's array and dtype reconstructors."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding='latin1')  # arrays pickled by Python 2 hold their data as str
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f'{self.source}: refused to load {module}.{name}; this file may hold only numpy arrays, dtypes, '
                f'lists, tuples and dicts of them') from None


def _check_plain(value: Any, source: str):
    """Raises unless value is made of dicts, lists, tuples, strings, numbers and non-object numpy arrays."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, source)
            _check_plain(v, source)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v, source)
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise pickle.UnpicklingError(f'{source}: holds an array of Python objects (dtype {value.dtype}); '
                                         f'only numeric arrays are accepted')
    elif not isinstance(value, (str, bytes, int, float, bool, type(None))):
        raise pickle.UnpicklingError(f'{source}: holds a {type(value).__name__}; only numpy arrays, lists, tuples '
                                     f'and dicts are accepted')


def load_pickled_npy(path: Union[str, os.PathLike]) -> Any:
    """The object stored in a .npy file, unpickled with only numpy arrays, dtypes, lists, tuples and dicts.

    Args:
        path: a .npy file written by `np.save(path, obj)`, e.g. a dict of lists of arrays.

    Returns:
        The stored object: `np.load(path, allow_pickle=True).item()` for a pickled 0-d object array, the
        object array itself for other shapes, or the plain array for numeric files.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a .npy file.
        pickle.UnpicklingError: the pickle asks for anything but numpy arrays, dtypes and containers.
    """
    source = os.fspath(path)
    with open(path, 'rb') as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f'unsupported .npy format version {version}')
        except ValueError as e:
            raise ValueError(f'{source} is not a readable .npy file: {e}') from None
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        try:
            value = _ArraysOnlyUnpickler(f, source).load()
        except pickle.UnpicklingError:
            raise
        except Exception as e:
            raise pickle.UnpicklingError(f'{source}: the pickled data could not be read: {e}') from e
    if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
        raise pickle.UnpicklingError(f'{source}: the pickle does not hold the array of shape {shape} its header '
                                     f'announces')
    value = value.item() if value.shape == () else value
    _check_plain(value.tolist() if isinstance(value, np.ndarray) else value, source)
    return value
