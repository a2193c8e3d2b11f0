"""Checkpoint: numbered, atomically written snapshots of a VarCollection in `logdir/ckpt/`."""

import glob
import operator
import os
import warnings
from typing import List, Optional, Tuple

from objax.io._atomic import remove_stale_temporaries
from objax.io._match import UnreadableFileError, check_vc
from objax.io.ops import load_var_collection, save_var_collection
from objax.varcollection import VarCollection

__all__ = ['Checkpoint']


class Checkpoint:
    """Saves `logdir/ckpt/%010d.npz` files, keeping the newest `keep_ckpts`; restores the newest.

    Only names that FILE_FORMAT produces are checkpoints (a '0000000099.backup.npz' beside them is neither restored nor
    deleted). `SAVE_FN(path, vc)` and `LOAD_FN(path, vc)` get the checkpoint's path; the default SAVE_FN,
    save_var_collection, writes a hidden temporary file renamed once complete, so a crash never leaves a partial
    checkpoint that `restore` would pick. Temporaries left by killed saves are removed by the next save.

    Args:
        logdir: the directory holding the `ckpt` directory.
        keep_ckpts: how many checkpoints to keep (the newest, by index).
        makedir: create `logdir/ckpt` if needed.
        verbose: print the path of each restored checkpoint.

    Raises:
        ValueError: `keep_ckpts` is not an int >= 1.
    """

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
        """The index of a checkpoint file name, e.g. 'logdir/ckpt/0000000042.npz' -> 42.

        Args:
            filename: a checkpoint's path or base name; the part of the base name before its first '.' is the index.

        Returns:
            The index, an int.

        Raises:
            ValueError: that part of the name is not all digits.
        """
        stem = os.path.basename(filename).split('.')[0]
        if not stem.isdigit():
            raise ValueError(f'checkpoint_idx: {filename!r} is not a checkpoint file name (digits + extension)')
        return int(stem)

    def _path(self, idx: int) -> str:
        return os.path.join(self.logdir, self.DIR_NAME, self.FILE_FORMAT % idx)

    def _checkpoints(self) -> List[Tuple[int, str]]:
        """(index, path) of the checkpoints, oldest first: the names FILE_FORMAT produces (never temporaries)."""
        out = []
        for path in glob.glob(os.path.join(glob.escape(self.logdir), self.DIR_NAME, self.FILE_MATCH)):
            try:
                idx = self.checkpoint_idx(path)
            except ValueError:
                continue
            if os.path.basename(path) == self.FILE_FORMAT % idx:
                out.append((idx, path))
        return sorted(out)

    def indices(self) -> List[int]:
        """The indices of the checkpoints in `logdir/ckpt`, oldest first."""
        return [i for i, _ in self._checkpoints()]

    def restore(self, vc: VarCollection, idx: Optional[int] = None, fallback: bool = False) -> Tuple[int, str]:
        """Loads checkpoint `idx` (default: the newest) into `vc`.

        Args:
            vc: the variables to load (entries of the file matching no variable are ignored).
            idx: the index to load; None for the newest.
            fallback: when the newest file is unreadable (truncated, corrupted), load the newest readable one
                instead, with a warning for each skipped file.

        Returns:
            (idx, filename) of the loaded checkpoint, or (0, '') if there is none. Checkpoints deleted by another
            process while this one looks for them are skipped.

        Raises:
            TypeError: `vc` is not a VarCollection.
            UnreadableFileError: the newest checkpoint is unreadable (without `fallback`), or all of them are.
            FileNotFoundError: checkpoint `idx` does not exist.
            ValueError: `idx` is not an int >= 0, or the checkpoint does not fit `vc` (see load_var_collection); `vc`
                is unchanged.
        """
        check_vc(vc, 'Checkpoint.restore')
        if idx is not None:
            idx = _index(idx, 'Checkpoint.restore(idx)')
            path = self._path(idx)
            if not os.path.exists(path):
                raise FileNotFoundError(f'Checkpoint.restore(idx={idx}): {path} does not exist; available indices: '
                                        f'{self.indices()}')
            self._load(path, vc)
            return idx, path
        tried, unreadable = set(), []
        while True:
            ckpts = self._checkpoints()  # listed again after each failure: saves and deletions may have happened
            remaining = [(i, p) for i, p in ckpts if p not in tried]
            if not remaining:
                break
            idx, path = remaining[-1]
            tried.add(path)
            try:
                self._load(path, vc)
                return idx, path
            except FileNotFoundError:
                if os.path.exists(path):
                    raise  # not the checkpoint vanishing: LOAD_FN's own error
            except UnreadableFileError as e:
                if not fallback:
                    older = [i for i, _ in remaining[:-1]]
                    hint = (f'restore(vc, idx={older[-1]}) loads the previous one, restore(vc, fallback=True) the '
                            f'newest readable one' if older else 'no older checkpoint exists')
                    raise UnreadableFileError(f'Checkpoint {path} is unreadable ({e}); {hint}') from e
                warnings.warn(f'Checkpoint {path} is unreadable, trying an older one: {e}', stacklevel=2)
                unreadable.append(idx)
        if unreadable:
            raise UnreadableFileError(f'No readable checkpoint in {os.path.join(self.logdir, self.DIR_NAME)}: all of '
                                      f'{sorted(unreadable)} are unreadable')
        return 0, ''

    def _load(self, path: str, vc: VarCollection):
        self.LOAD_FN(path, vc)
        if self.verbose:
            print('Resuming from', path)

    def save(self, vc: VarCollection, idx: int):
        """Writes checkpoint `idx` with `SAVE_FN(path, vc)`, then deletes older checkpoints beyond `keep_ckpts`.

        The file just written is never deleted, nor are checkpoints with a higher index: saving below the newest
        existing index (e.g. a run restarted from 0 in an old logdir) warns, as `restore()` would not load it.

        Args:
            vc: the variables to save.
            idx: the checkpoint's index (an int >= 0), usually the epoch or step.

        Raises:
            TypeError: `vc` is not a VarCollection.
            ValueError: `idx` is not an int >= 0.
        """
        check_vc(vc, 'Checkpoint.save')
        idx = _index(idx, 'Checkpoint.save(idx)')
        path = self._path(idx)
        self.SAVE_FN(path, vc)
        ckpts = self._checkpoints()
        newer = [i for i, _ in ckpts if i > idx]
        if newer:
            warnings.warn(f'Checkpoint.save(idx={idx}): {os.path.dirname(path)} already holds checkpoint '
                          f'{max(newer)}, newer than this one, so restore() will not load this save. Continue '
                          f'from the restored index (idx, _ = ckpt.restore(vc)) or use a new logdir. '
                          f'Checkpoints newer than {idx} are never deleted by this save.', stacklevel=2)
        for old_idx, old in ckpts[:-self.keep_ckpts]:
            if old_idx < idx:
                try:
                    os.remove(old)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    warnings.warn(f'Checkpoint.save: could not delete the old checkpoint {old}: {e}', stacklevel=2)
        remove_stale_temporaries(os.path.dirname(path))


def _index(idx, where: str) -> int:
    """`idx` as a non-negative Python int (numpy integers accepted), or a clear error."""
    try:
        value = operator.index(idx)
    except TypeError:
        value = -1
    if isinstance(idx, bool) or value < 0:
        raise ValueError(f'{where}: expected an int >= 0, got {idx!r}')
    return value
