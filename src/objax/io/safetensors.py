"""Saving and loading a VarCollection as a safetensors file (readable by PyTorch and Hugging Face tools)."""

import os
from typing import IO, BinaryIO, Callable, Dict, Optional, Sequence, Union

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from objax.io._atomic import atomic_write
from objax.io._match import UnreadableFileError, assign_checked, check_vc, describe, open_for_reading, stored_values
from objax.varcollection import VarCollection

__all__ = ['save_safetensors', 'load_safetensors', 'tensors_to_bytes', 'tensors_from_bytes']

FileOrPath = Union[str, os.PathLike, IO[BinaryIO]]
# safetensors dtype names -> numpy dtypes (ml_dtypes for bfloat16 and the float8 types); also read by pretrained.py.
DTYPES = {
    'BOOL': np.bool_, 'U8': np.uint8, 'I8': np.int8, 'U16': np.uint16, 'I16': np.int16, 'U32': np.uint32,
    'I32': np.int32, 'U64': np.uint64, 'I64': np.int64, 'F16': np.float16, 'F32': np.float32, 'F64': np.float64,
    'C64': np.complex64, 'BF16': ml_dtypes.bfloat16, 'F8_E4M3': ml_dtypes.float8_e4m3fn,
    'F8_E5M2': ml_dtypes.float8_e5m2,
}
_NAMES = {np.dtype(t).name for t in DTYPES.values()}


def _contiguous(x: np.ndarray) -> np.ndarray:
    """A C-contiguous array of the same shape (np.ascontiguousarray would make scalars 1-D)."""
    return x if x.flags.c_contiguous else np.array(x, order='C')


def save_safetensors(path: FileOrPath, vc: VarCollection):
    """Writes the distinct variables of `vc` as a safetensors file (a path, replaced atomically, or a binary file).

    Tensors are named by their first name in `vc`; a TrainRef is written as the TrainVar it refers to.

    Args:
        path: a path (written to a hidden temporary file in the same directory, then renamed over the target) or a
            binary file object opened for writing.
        vc: the variables to save.

    Raises:
        TypeError: `vc` is not a VarCollection.
        ValueError: a variable's dtype has no safetensors equivalent; the message names it and nothing is written.
        OSError: the file or its temporary cannot be written.
    """
    check_vc(vc, 'save_safetensors')
    names, values = stored_values(vc)
    data = tensors_to_bytes(names, values, 'save_safetensors')
    if isinstance(path, (str, os.PathLike)):
        atomic_write(path, lambda f: f.write(data))
    else:
        path.write(data)


def tensors_to_bytes(names: Sequence[str], values: Sequence[np.ndarray], caller: str) -> bytes:
    """The safetensors file holding `values` under `names` (with metadata {'format': 'objax'}).

    Args:
        names: one name per array.
        values: the host arrays, any shapes, of dtypes safetensors has (bfloat16 and float8 included).
        caller: what is saving, named in the error message (e.g. 'save_safetensors').

    Returns:
        The bytes of the file.

    Raises:
        ValueError: a dtype has no safetensors equivalent; the message names the arrays.
    """
    try:
        return safetensors.numpy.save({n: _contiguous(v) for n, v in zip(names, values)}, metadata={'format': 'objax'})
    except Exception as e:  # the Rust serializer raises its own error types
        bad = [f'{n!r} ({v.dtype})' for n, v in zip(names, values) if v.dtype.name not in _NAMES]
        raise ValueError(f'{caller}: cannot serialize {", ".join(bad) or "the collection"}: {e}') from e


def tensors_from_bytes(data: bytes, source: str) -> Dict[str, np.ndarray]:
    """Parses a safetensors file.

    Args:
        data: the bytes of the file.
        source: the file as named in error messages (e.g. "'model.safetensors'").

    Returns:
        {name: read-only host array}, in the file's order.

    Raises:
        UnreadableFileError: the bytes are not a safetensors file, or a tensor has an unknown dtype or a data size
            that does not match its shape.
    """
    try:
        tensors = safetensors.deserialize(data)
    except Exception as e:  # SafetensorError and friends
        raise UnreadableFileError(f'{source} cannot be read as a safetensors file: {e}') from None
    entries = {}
    for name, info in tensors:
        dtype = DTYPES.get(info['dtype'])
        if dtype is None:
            raise UnreadableFileError(f'{source}: tensor {name!r} has unsupported dtype {info["dtype"]}')
        try:
            entries[name] = np.frombuffer(bytes(info['data']), dtype=dtype).reshape(tuple(info['shape']))
        except Exception as e:
            raise UnreadableFileError(f'{source}: tensor {name!r} data does not match its shape: {e}') from None
    return entries


def load_safetensors(path: FileOrPath, vc: VarCollection, renamer: Optional[Callable[[str], str]] = None,
                     strict: bool = False):
    """Loads a safetensors file (a path or a binary file object) into `vc`, all or nothing.

    Each tensor name is passed through `renamer` (e.g. to map 'layer.weight' to '(Net).layer(Linear).w'), then each
    variable loads from the first of its names found; tensors matching no variable are ignored unless `strict`.
    Shapes are not transposed: a PyTorch Linear weight (out, in) must be transposed to Objax's (in, out) separately.

    Args:
        path: a path or a binary file object.
        vc: the variables to load.
        renamer: maps each tensor name to the name looked up in `vc`.
        strict: refuse files with tensors that match no variable.

    Raises:
        TypeError: `vc` is not a VarCollection.
        FileNotFoundError: `path` does not exist.
        UnreadableFileError: (a ValueError) the file is not a readable safetensors file.
        ShapeMismatchError: (a ValueError and AssertionError) a stored shape differs from its variable's.
        ValueError: variables missing from the file, wrong dtypes, or unused tensors when `strict`; `vc` is unchanged.
    """
    check_vc(vc, 'load_safetensors')
    source = describe(path)
    try:
        if isinstance(path, (str, os.PathLike)):
            with open_for_reading(path, source) as f:
                data = f.read()
        else:
            data = path.read()
    except (FileNotFoundError, UnreadableFileError):
        raise
    except Exception as e:  # an I/O error while reading, no memory...
        raise UnreadableFileError(f'{source} cannot be read ({type(e).__name__}: {e})') from None
    assign_checked(vc, tensors_from_bytes(data, source), renamer, source, strict)
