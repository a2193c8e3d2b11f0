"""Atomic file replacement: write a hidden temporary file in the target's directory, fsync it, rename it."""

import os
import secrets
from typing import BinaryIO, Callable

__all__ = ['atomic_write', 'TEMP_SUFFIX']

TEMP_SUFFIX = '.tmp'


def _open_temp(directory: str, base: str):
    """Creates a new hidden temporary file next to `base` (mode follows the umask, like a normal file)."""
    for _ in range(100):
        path = os.path.join(directory, f'.{base}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}')
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), 0o666)
        except FileExistsError:
            continue
        return path, os.fdopen(fd, 'wb')
    raise FileExistsError(f'Could not create a temporary file in {directory!r}')


def _fsync_directory(directory: str):
    """Makes the rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[BinaryIO], None]):
    """Calls `write(f)` on a temporary file and, once it is on disk, renames it to `path`.

    Readers see either the old file or the complete new one; on any error (or a kill) the target is untouched."""
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f'Cannot save {path!r}: directory {directory!r} does not exist')
    temp, f = _open_temp(directory, base)
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.remove(temp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
