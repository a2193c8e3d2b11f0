"""ShardedCheckpoint: numbered snapshots of a VarCollection written shard by shard with orbax-checkpoint.

Every process writes the shards it holds (no value is gathered to one host), and restoring lays each value out
as the variable currently is: the layout `objax.sharding.shard` gave it on the current mesh, which may differ
from the one saved (saved on a 2x4 mesh of 2 processes, restored on 4 devices of one process or on one
device). Entries are named by the VarCollection's names, as in the npz Checkpoint. With several processes,
every process calls `save` and `restore` (the directory must be shared by them).
"""

import os
import warnings
from typing import List, Optional, Tuple

import jax
import numpy as np

from objax._core.layout import place, replicated
from objax._core.variables import storage_groups
from objax.io._match import check_vc
from objax.varcollection import VarCollection

__all__ = ['ShardedCheckpoint']


def _orbax():
    """orbax.checkpoint, imported on first use (loading it takes a while).

    Under JAX >= 0.12.1, importing orbax-checkpoint (0.12.x) reads jax.sharding.SingleDeviceSharding in one of its
    own annotations, which JAX deprecated: a DeprecationWarning that objax users can do nothing about. That one
    warning, from orbax's modules, is silenced during this first import only; every other warning is left alone.
    """
    if not _ORBAX:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message=r'jax\.sharding\.SingleDeviceSharding is deprecated',
                                    category=DeprecationWarning, module=r'orbax\.')
            import orbax.checkpoint as ocp
        _ORBAX.append(ocp)
    return _ORBAX[0]


_ORBAX = []  # [orbax.checkpoint] once imported


def _index(idx, where: str) -> int:
    if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or idx < 0:
        raise ValueError(f'{where}: expected an int >= 0, got {idx!r}')
    return int(idx)


def _sharding_of(x: jax.Array) -> jax.sharding.Sharding:
    """Where `x` is saved from and restored to. With several processes, a value each process holds whole
    (not laid out on a mesh) counts as one array replicated on all devices: written once, read by all."""
    if jax.process_count() == 1 or not x.is_fully_addressable:
        return x.sharding
    return replicated('device')


class ShardedCheckpoint:
    """Saves `logdir/sharded/<idx>/` with orbax-checkpoint, keeping the newest `keep_ckpts`; restores the newest.

    A save is written to a temporary directory that orbax renames once every process has finished, so an
    interrupted save is never picked by `restore`.

    Args:
        logdir: the run's directory; checkpoints go to `logdir/sharded/<idx>/`.
        keep_ckpts: how many of the newest checkpoints to keep (an int >= 1).
        makedir: create the directory if it does not exist (else the first use raises FileNotFoundError).
        verbose: print a line for each save and restore.

    Raises:
        ValueError: keep_ckpts is not an int >= 1.
    """

    DIR_NAME: str = 'sharded'

    def __init__(self, logdir: str, keep_ckpts: int, makedir: bool = True, verbose: bool = True):
        if isinstance(keep_ckpts, bool) or not isinstance(keep_ckpts, int) or keep_ckpts < 1:
            raise ValueError(f'ShardedCheckpoint(keep_ckpts): expected an int >= 1, got {keep_ckpts!r}')
        self.logdir = os.fspath(logdir)
        self.directory = os.path.abspath(os.path.join(self.logdir, self.DIR_NAME))
        self.keep_ckpts = keep_ckpts
        self.verbose = verbose
        self._makedir = makedir
        self._manager = None

    def _mgr(self):
        if self._manager is None:
            ocp = _orbax()
            if not self._makedir and not os.path.isdir(self.directory):
                raise FileNotFoundError(f'ShardedCheckpoint: {self.directory} does not exist (makedir=False)')
            options = ocp.CheckpointManagerOptions(max_to_keep=self.keep_ckpts, create=self._makedir,
                                                   enable_async_checkpointing=False)
            self._manager = ocp.CheckpointManager(self.directory, options=options,
                                                  item_handlers=ocp.StandardCheckpointHandler())
        return self._manager

    def indices(self) -> List[int]:
        """The indices of the complete checkpoints, oldest first."""
        manager = self._mgr()
        manager.reload()  # checkpoints another process or object wrote meanwhile
        return sorted(manager.all_steps())

    def save(self, vc: VarCollection, idx: int) -> str:
        """Writes checkpoint `idx` (every process its own shards), then deletes all but the newest `keep_ckpts`.

        Args:
            vc: the variables to save, under their names in vc (a TrainRef is saved as its TrainVar).
            idx: the checkpoint's index (an int >= 0, e.g. the epoch or step).

        Returns:
            The checkpoint's directory.

        Raises:
            ValueError: checkpoint `idx` already exists, or a name holds a '/'.
        """
        ocp = _orbax()
        check_vc(vc, 'ShardedCheckpoint.save')
        idx = _index(idx, 'ShardedCheckpoint.save(idx)')
        tree = {}
        for target, names in storage_groups(vc.items()):
            if '/' in names[0]:
                raise ValueError(f'ShardedCheckpoint.save: variable name {names[0]!r} holds a "/", which orbax '
                                 f'would read as a directory; rename it (VarCollection.rename)')
            tree[names[0]] = place(target.value, _sharding_of(target.value))
        if idx in self.indices():
            raise ValueError(f'ShardedCheckpoint.save: checkpoint {idx} already exists in {self.directory}')
        self._mgr().save(idx, args=ocp.args.StandardSave(tree))
        self._mgr().wait_until_finished()
        return os.path.join(self.directory, str(idx))

    def restore(self, vc: VarCollection, idx: Optional[int] = None) -> Tuple[int, str]:
        """Loads checkpoint `idx` (default: the newest) into `vc`, each value laid out as its variable is now.

        Args:
            vc: the variables to load, matched by name; their current layouts (mesh, PartitionSpec) are kept.
            idx: the checkpoint to load; None loads the newest.

        Returns:
            (idx, directory), or (0, '') when there is no checkpoint.

        Raises:
            FileNotFoundError: there is no checkpoint `idx`.
            ValueError: names, shapes or dtypes do not match `vc`; nothing is changed then.
        """
        ocp = _orbax()
        check_vc(vc, 'ShardedCheckpoint.restore')
        available = self.indices() if os.path.isdir(self.directory) else []
        if idx is None:
            if not available:
                return 0, ''
            idx = available[-1]
        idx = _index(idx, 'ShardedCheckpoint.restore(idx)')
        if idx not in available:
            raise FileNotFoundError(f'ShardedCheckpoint.restore(idx={idx}): no such checkpoint in '
                                    f'{self.directory}; available indices: {available}')
        path = os.path.join(self.directory, str(idx))
        saved = dict(self._mgr().item_metadata(idx).tree)
        abstract, plan, problems = {}, [], []
        wanted = set()
        for target, names in storage_groups(vc.items()):
            wanted.update(names)
            key = next((n for n in names if n in saved), None)
            if key is None:
                problems.append(f'missing from the checkpoint: {" = ".join(map(repr, names))}')
                continue
            value, meta = target.value, saved[key]
            if tuple(meta.shape) != tuple(value.shape) or np.dtype(meta.dtype) != np.dtype(value.dtype):
                problems.append(f'{key!r}: {np.dtype(meta.dtype)}{list(meta.shape)} in the checkpoint, '
                                f'{np.dtype(value.dtype)}{list(value.shape)} in the collection')
                continue
            abstract[key] = jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=_sharding_of(value))
            plan.append((target, key))
        problems += [f'unexpected in the checkpoint (no variable of that name): {k!r}' for k in saved
                     if k not in wanted]
        if problems:
            raise ValueError(f'Cannot restore {path} into the VarCollection, nothing was changed:\n  '
                             + '\n  '.join(problems))
        if self.verbose:
            print('Resuming from', path)
        restored = self._mgr().restore(idx, args=ocp.args.StandardRestore(abstract))
        for target, key in plan:
            target.assign(restored[key])
        return idx, path

    def close(self):
        """Releases orbax's resources (also done when the object is garbage collected)."""
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def __repr__(self):
        return f'{type(self).__name__}(logdir={self.logdir!r}, keep_ckpts={self.keep_ckpts})'
