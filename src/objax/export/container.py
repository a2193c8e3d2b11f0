"""The file written by objax.export.save: one zip archive (stored, not compressed) of three members.

    manifest.json            {"format": "objax.export", "version": 1, ...}: what the file holds, in JSON
    program.jax_export       the serialized jax.export.Exported (StableHLO and its calling convention)
    variables.safetensors    the values of the variables, named as in vars()

Nothing in it is ever unpickled. Reading checks every member's CRC-32, so a corrupted or truncated file is refused
with an UnreadableFileError naming it before anything is run.
"""

import json
import zipfile
from typing import BinaryIO, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from objax.io._atomic import atomic_write
from objax.io._match import UnreadableFileError, describe, open_for_reading
from objax.io.safetensors import tensors_from_bytes, tensors_to_bytes

__all__ = ['FORMAT', 'VERSION', 'MANIFEST', 'PROGRAM', 'VARIABLES', 'Contents', 'write_container', 'read_container']

FORMAT = 'objax.export'
VERSION = 1  # the newest version of the format this objax writes and reads
MANIFEST, PROGRAM, VARIABLES = 'manifest.json', 'program.jax_export', 'variables.safetensors'
_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so that saving the same program twice writes the same bytes


class Contents(NamedTuple):
    """What a file holds: its manifest, the serialized program and the variables' values."""
    manifest: dict
    program: bytes
    tensors: Dict[str, np.ndarray]


def _write_members(f: BinaryIO, members: Sequence[tuple]):
    with zipfile.ZipFile(f, 'w', compression=zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(zipfile.ZipInfo(name, date_time=_DATE), data)


def write_container(path, manifest: dict, program: bytes, names: List[str], values: List[np.ndarray]):
    """Writes the file atomically: readers see the old file or the whole new one, never a part.

    Args:
        path: the file to write (str or path-like); its directory must exist.
        manifest: the JSON-serializable description of the program; 'format' and 'version' are set here.
        program: the serialized jax.export.Exported.
        names: the name of each variable.
        values: the host value of each variable, in the order of `names`.

    Raises:
        ValueError: a value's dtype has no safetensors equivalent.
        OSError: the file cannot be written (nothing is changed).
    """
    manifest = {'format': FORMAT, 'version': VERSION, **manifest}
    text = json.dumps(manifest, indent=1).encode()
    tensors = tensors_to_bytes(names, values, 'objax.export.save')
    atomic_write(path, lambda f: _write_members(f, [(MANIFEST, text), (PROGRAM, program), (VARIABLES, tensors)]))


def _read_member(archive: zipfile.ZipFile, name: str, source: str) -> bytes:
    """One member of the archive, checked against its CRC-32."""
    if name not in archive.namelist():
        raise UnreadableFileError(f'{source} is not a complete objax.export file: {name} is missing')
    try:
        return archive.read(name)
    except Exception as e:  # Bad CRC-32, a truncated member, a header that does not match...
        raise UnreadableFileError(f'{source} is corrupted: its member {name} cannot be read '
                                  f'({type(e).__name__}: {e})') from None


def _read_members(path, source: str) -> Tuple[dict, Dict[str, bytes]]:
    """(manifest, {name: bytes} of the other members), the manifest checked first."""
    with open_for_reading(path, source) as f:
        try:
            archive = zipfile.ZipFile(f)
        except Exception as e:  # BadZipFile, struct.error, OSError...: a truncated file or another format
            raise UnreadableFileError(f'{source} is not an objax.export file: it is not a zip archive '
                                      f'({type(e).__name__}: {e})') from None
        with archive:
            if MANIFEST not in archive.namelist():
                held = ', '.join(sorted(archive.namelist())[:5]) or 'nothing'
                raise UnreadableFileError(f'{source} is not an objax.export file: the zip archive has no {MANIFEST} '
                                          f'(it holds {held})')
            manifest = _manifest(_read_member(archive, MANIFEST, source), source)
            return manifest, {name: _read_member(archive, name, source) for name in (PROGRAM, VARIABLES)}


def _manifest(data: bytes, source: str) -> dict:
    try:
        manifest = json.loads(data.decode())
    except Exception as e:  # UnicodeDecodeError, JSONDecodeError
        raise UnreadableFileError(f'{source}: its {MANIFEST} is not valid JSON ({type(e).__name__}: {e})') from None
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        found = manifest.get('format') if isinstance(manifest, dict) else type(manifest).__name__
        raise UnreadableFileError(f'{source} is not an objax.export file: its {MANIFEST} gives format {found!r}, '
                                  f'expected {FORMAT!r}')
    version = manifest.get('version')
    if not isinstance(version, int) or version < 1:
        raise UnreadableFileError(f'{source}: its {MANIFEST} gives no valid format version ({version!r})')
    if version > VERSION:
        raise UnreadableFileError(f'{source} was written in version {version} of the {FORMAT} format; this objax '
                                  f'reads versions up to {VERSION}: install a newer objax')
    return manifest


def read_container(path) -> Contents:
    """Reads and checks a file written by write_container.

    Args:
        path: the file (str or path-like).

    Returns:
        Its Contents.

    Raises:
        FileNotFoundError: `path` does not exist.
        UnreadableFileError: (a ValueError) the file is not a zip archive, is truncated or corrupted (a CRC-32
            differs), lacks a member, or has a manifest of another format or of a newer version; the message names
            the file.
    """
    source = describe(path)
    manifest, members = _read_members(path, source)
    tensors = tensors_from_bytes(members[VARIABLES], f'{source} ({VARIABLES})')
    return Contents(manifest, members[PROGRAM], tensors)
