"""Atomic file replacement: write a hidden temporary file in the target's directory, fsync it, rename it."""

import os
import re
import secrets
import socket
import stat
import zlib
from typing import BinaryIO, Callable

__all__ = ['atomic_write', 'remove_stale_temporaries', 'TEMP_SUFFIX']

TEMP_SUFFIX = '.tmp'
# Temporary names: '.<target name>.objax-<host hash>-<pid>-<random>.tmp', hidden from glob('*.npz').
_TEMP = re.compile(r'^\..+\.objax-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}' + re.escape(TEMP_SUFFIX) + '$')


def _host() -> str:
    """A short tag of this machine, so that a shared directory's temporaries are only judged by their own host."""
    return '%08x' % (zlib.crc32(socket.gethostname().encode()) & 0xFFFFFFFF)


def _open_temp(directory: str, base: str, mode: int):
    """Creates a new hidden temporary file next to `base`, with permission bits `mode` (before the umask)."""
    for _ in range(100):
        name = f'.{base}.objax-{_host()}-{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}'
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_BINARY', 0), mode)
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


def _alive(pid: int) -> bool:
    """Whether process `pid` of this host exists (when unsure: yes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):
        return True
    return True


def remove_stale_temporaries(directory: str):
    """Deletes the temporary files that saves of dead processes of this host left in `directory` (e.g. killed
    during a save). Temporaries of live processes and of other hosts are kept; errors are ignored."""
    host = _host()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _TEMP.match(name)
        if match and match['host'] == host and int(match['pid']) != os.getpid() and not _alive(int(match['pid'])):
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


def atomic_write(path: str, write: Callable[[BinaryIO], None]):
    """Calls `write(f)` on a temporary file and, once it is on disk, renames it to `path`.

    Readers see either the old file or the complete new one; on any error (or a kill) the target is untouched.
    A file that already exists keeps its permission bits (a private 0600 file stays private); a new file gets the
    umask's. A successful write also removes temporaries left in the directory by dead processes of this host."""
    path = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f'Cannot save {path!r}: directory {directory!r} does not exist')
    try:
        existing = os.stat(path)
    except OSError:
        existing = None
    if existing is not None and stat.S_ISDIR(existing.st_mode):
        raise IsADirectoryError(f'Cannot save {path!r}: it is a directory')
    temp, f = _open_temp(directory, base, 0o600 if existing is not None else 0o666)
    try:
        with f:
            if existing is not None:
                os.chmod(temp, stat.S_IMODE(existing.st_mode))
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
    remove_stale_temporaries(directory)
