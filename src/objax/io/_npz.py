"""A careful .npz reader: member headers (shape, dtype) first, data only on demand, every failure an
UnreadableFileError naming the file, no pickle, memory bounded by what is actually loaded."""

import io
import math
import zipfile
from typing import BinaryIO, Dict, Iterator, List, Tuple

import numpy as np

from objax.io._match import UnreadableFileError

__all__ = ['NpzMember', 'read_npz']

_CHUNK = 1 << 22  # bytes read at a time when inflating
_NPY_MAGIC = b'\x93NUMPY'


def _header(f: BinaryIO) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    """Reads the .npy header of an open member: (shape, fortran_order, dtype)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    return np.lib.format._read_array_header(f, version)  # (3, 0): utf-8 header, same content


class NpzMember:
    """One array of an .npz archive: `shape` and `dtype` read from its header; `read()` inflates the data."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, label: str):
        self._archive, self._info, self._source, self._label = archive, info, source, label
        try:
            with archive.open(info) as f:
                shape, self.fortran, dtype = _header(f)
                self.offset = f.tell()
        except Exception as e:  # BadZipFile, encrypted or unsupported members, bad headers...
            raise self._error(f'its header cannot be read ({type(e).__name__}: {e})') from None
        if dtype.hasobject:
            raise self._error('it holds pickled Python objects, which are never loaded')
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize
        if self.offset + self.nbytes != info.file_size:
            raise self._error(f'its header declares shape {self.shape} dtype {self.dtype} ({self.nbytes} bytes) '
                              f'but it holds {info.file_size - self.offset} bytes of data')

    def _error(self, reason: str) -> UnreadableFileError:
        return UnreadableFileError(f'{self._source} is not a valid Objax .npz file: entry {self._label} '
                                   f'cannot be read: {reason}')

    def _chunks(self) -> Iterator[bytes]:
        """The data in chunks, then a check that the member ends there (which verifies its CRC-32)."""
        try:
            with self._archive.open(self._info) as f:
                f.read(self.offset)
                left = self.nbytes
                while left:
                    chunk = f.read(min(left, _CHUNK))
                    if not chunk:
                        raise EOFError(f'the data ends {left} bytes early')
                    left -= len(chunk)
                    yield chunk
                if f.read(1):
                    raise ValueError('data continues after the declared size')
        except UnreadableFileError:
            raise
        except Exception as e:  # BadZipFile (Bad CRC-32), zlib.error, EOFError, MemoryError...
            raise self._error(f'{type(e).__name__}: {e}') from None

    def verify(self):
        """Reads the member through without keeping it; raises UnreadableFileError if it is corrupted."""
        for _ in self._chunks():
            pass

    def read(self) -> np.ndarray:
        """The array (verified against the member's CRC-32)."""
        try:
            flat = np.empty(math.prod(self.shape), self.dtype)
        except MemoryError:
            raise self._error(f'no memory for shape {self.shape} dtype {self.dtype}') from None
        buffer, pos = flat.view(np.uint8), 0
        for chunk in self._chunks():
            buffer[pos:pos + len(chunk)] = np.frombuffer(chunk, np.uint8)
            pos += len(chunk)
        return flat.reshape(self.shape, order='F' if self.fortran else 'C')


def _names(member: NpzMember, source: str) -> List[str]:
    if len(member.shape) != 1 or (member.shape[0] and member.dtype.kind not in 'US'):
        raise UnreadableFileError(f'{source}: `names` must be a 1-D array of strings, '
                                  f'got shape {member.shape} dtype {member.dtype}')
    return [n.decode(errors='replace') if isinstance(n, bytes) else str(n) for n in member.read().tolist()]


def read_npz(f: BinaryIO, source: str) -> Tuple[zipfile.ZipFile, Dict[str, NpzMember]]:
    """Opens an Objax .npz archive: (the zip file, to close after use; {stored variable name: member}).

    Raises:
        UnreadableFileError: the file is not a valid Objax .npz archive (only headers and `names` are read here).
    """
    try:
        if not f.seekable():
            f = io.BytesIO(f.read())
        start = f.tell()
        magic = f.read(len(_NPY_MAGIC))
        f.seek(start)
    except Exception as e:
        raise UnreadableFileError(f'{source} cannot be read ({type(e).__name__}: {e})') from None
    if magic == _NPY_MAGIC:
        raise UnreadableFileError(f'{source} holds a single .npy array, not an .npz archive with `names`')
    try:
        archive = zipfile.ZipFile(f)
        infos = archive.infolist()
    except Exception as e:  # BadZipFile, OSError, NotImplementedError, ValueError, struct.error...
        raise UnreadableFileError(f'{source} cannot be read: not an .npz archive ({type(e).__name__}: {e})') from None
    try:
        return archive, _members(archive, infos, source)
    except BaseException:
        archive.close()
        raise


def _members(archive: zipfile.ZipFile, infos: List[zipfile.ZipInfo], source: str) -> Dict[str, NpzMember]:
    by_key: Dict[str, zipfile.ZipInfo] = {}
    duplicates = set()
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith('.npy') else info.filename
        if key in by_key:
            duplicates.add(key)
        by_key[key] = info
    if duplicates:
        raise UnreadableFileError(f'{source} is not a valid Objax .npz file: duplicate members {sorted(duplicates)}')
    if 'names' not in by_key:
        raise UnreadableFileError(f'{source} has no `names` array: not a file written by save_var_collection')
    names = _names(NpzMember(archive, by_key['names'], source, "'names'"), source)
    problems = []
    repeated = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if repeated:
        problems.append(f'duplicate names {repeated}')
    expected = {'names'} | {str(i) for i in range(len(names))}
    if set(by_key) != expected:
        absent, extra = sorted(expected - set(by_key)), sorted(set(by_key) - expected)
        problems.append(f'array keys do not match `names` (absent: {absent}, extra: {extra})')
    if problems:
        raise UnreadableFileError(f'{source} is not a valid Objax .npz file: ' + '; '.join(problems))
    return {name: NpzMember(archive, by_key[str(i)], source, f'{str(i)!r} ({name!r})') for i, name in enumerate(names)}
