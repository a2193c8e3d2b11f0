"""Checkpoint: numbered, atomically written snapshots of a VarCollection in `logdir/ckpt/`."""

import glob
import operator
import os
import warnings
from typing import List, Optional, Tuple

from objax.io._atomic import atomic_write
from objax.io._match import UnreadableFileError, check_vc
from objax.io.ops import load_var_collection, save_var_collection
from objax.varcollection import VarCollection

__all__ = ['Checkpoint']


class Checkpoint:
    """Saves `logdir/ckpt/%010d.npz` files atomically, keeping the newest `keep_ckpts`; restores the newest.

    A save goes to a hidden temporary file that is renamed once complete, so a crash never leaves a partial
    checkpoint that `restore` would pick (an interrupted save may leave a hidden `.*.tmp` file, safe to delete)."""

    DIR_NAME: str = 'ckpt'
    FILE_MATCH: str = '*.npz'
    FILE_FORMAT: str = '%010d.npz'
    LOAD_FN = staticmethod(load_var_collection)
    SAVE_FN = staticmethod(save_var_collection)

    def __init__(self, logdir: str, keep_ckpts: int, makedir: bool = True, verbose: bool = True):
        if isinstance(keep_ckpts, bool) or not isinstance(keep_ckpts, int) or keep_ckpts < 1:
            raise ValueError(f'Checkpoint(keep_ckpts): expected an int >= 1, got {keep_ckpts!r}')
        self.logdir = os.fspath(logdir)
        self.keep_ckpts = keep_ckpts
        self.verbose = verbose
        if makedir:
            os.makedirs(os.path.join(self.logdir, self.DIR_NAME), exist_ok=True)

    @staticmethod
    def checkpoint_idx(filename: str) -> int:
        """The index of a checkpoint file name, e.g. 'logdir/ckpt/0000000042.npz' -> 42."""
        stem = os.path.basename(filename).split('.')[0]
        if not stem.isdigit():
            raise ValueError(f'checkpoint_idx: {filename!r} is not a checkpoint file name (digits + extension)')
        return int(stem)

    def _path(self, idx: int) -> str:
        return os.path.join(self.logdir, self.DIR_NAME, self.FILE_FORMAT % idx)

    def _checkpoints(self) -> List[Tuple[int, str]]:
        """(index, path) of the complete checkpoints, oldest first (temporary files never match)."""
        out = []
        for path in glob.glob(os.path.join(glob.escape(self.logdir), self.DIR_NAME, self.FILE_MATCH)):
            try:
                out.append((self.checkpoint_idx(path), path))
            except ValueError:
                continue
        return sorted(out)

    def restore(self, vc: VarCollection, idx: Optional[int] = None, fallback: bool = False) -> Tuple[int, str]:
        """Loads checkpoint `idx` (default: the newest) into `vc`; returns (idx, filename), or (0, '') if none exist.

        An unreadable (truncated, corrupted) newest file raises a ValueError naming it; pass `idx` of an older one,
        or `fallback=True` to load the newest readable checkpoint instead (with a warning for each skipped file)."""
        check_vc(vc, 'Checkpoint.restore')
        if idx is not None:
            idx = _index(idx, 'Checkpoint.restore(idx)')
            path = self._path(idx)
            if not os.path.exists(path):
                raise FileNotFoundError(f'Checkpoint.restore(idx={idx}): {path} does not exist; available indices: '
                                        f'{[i for i, _ in self._checkpoints()]}')
            self._load(path, vc)
            return idx, path
        ckpts = self._checkpoints()
        if not ckpts:
            return 0, ''
        for n, (idx, path) in enumerate(reversed(ckpts)):
            try:
                self._load(path, vc)
                return idx, path
            except UnreadableFileError as e:
                older = [i for i, _ in ckpts[:len(ckpts) - n - 1]]
                if not fallback:
                    hint = (f'restore(vc, idx={older[-1]}) loads the previous one, restore(vc, fallback=True) the '
                            f'newest readable one' if older else 'no older checkpoint exists')
                    raise UnreadableFileError(f'Checkpoint {path} is unreadable ({e}); {hint}') from e
                warnings.warn(f'Checkpoint {path} is unreadable, trying an older one: {e}')
        raise UnreadableFileError(f'No readable checkpoint in {os.path.join(self.logdir, self.DIR_NAME)}: all of '
                                  f'{[i for i, _ in ckpts]} are unreadable')

    def _load(self, path: str, vc: VarCollection):
        if self.verbose:
            print('Resuming from', path)
        self.LOAD_FN(path, vc)

    def save(self, vc: VarCollection, idx: int):
        """Writes checkpoint `idx` atomically, then deletes all but the newest `keep_ckpts` checkpoints."""
        check_vc(vc, 'Checkpoint.save')
        idx = _index(idx, 'Checkpoint.save(idx)')
        atomic_write(self._path(idx), lambda f: self.SAVE_FN(f, vc))
        for _, old in self._checkpoints()[:-self.keep_ckpts]:
            try:
                os.remove(old)
            except FileNotFoundError:
                pass


def _index(idx, where: str) -> int:
    """`idx` as a non-negative Python int (numpy integers accepted), or a clear error."""
    try:
        value = operator.index(idx)
    except TypeError:
        value = -1
    if isinstance(idx, bool) or value < 0:
        raise ValueError(f'{where}: expected an int >= 0, got {idx!r}')
    return value
