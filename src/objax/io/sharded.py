"""ShardedCheckpoint: numbered snapshots of a VarCollection written shard by shard with orbax-checkpoint.

Every process writes the shards it holds (no value is gathered to one host), and restoring lays each value out
as the variable currently is: the layout `objax.sharding.shard` gave it on the current mesh, which may differ
from the one saved (saved on a 2x4 mesh of 2 processes, restored on 4 devices of one process or on one
device). Entries are named by the VarCollection's names, as in the npz Checkpoint. With several processes,
every process calls `save` and `restore` (the directory must be shared by them).
"""

import os
import re
import shutil
import warnings
from typing import List, Optional, Tuple

import jax
import jax.numpy as jn
import numpy as np

from objax._core.layout import place, replicated
from objax._core.variables import storage_groups
from objax.io._background import python_threads, to_idle
from objax.io._match import UnreadableFileError, check_vc
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


_FINGERPRINTS = '__objax_fingerprints__'  # the checkpoint entry holding one fingerprint per saved value


def _fingerprint(x: jax.Array) -> jax.Array:
    """Two uint32 sums over the bits of `x`, each element weighted by an odd function of its row-major position:
    the same for every layout of the value (integer sums do not depend on the order of addition), different after
    any change of one element. Computed where the value lies: the positions come from iotas shaped like `x`, so
    a value split over devices is summed block by block, never gathered or laid out anew."""
    if x.dtype == jn.bool_:
        x = x.astype(jn.uint8)
    size = x.dtype.itemsize
    bits = jax.lax.bitcast_convert_type(x, jn.uint32 if size == 8 else {1: jn.uint8, 2: jn.uint16, 4: jn.uint32}[size])
    bits = bits.astype(jn.uint32)  # an 8-byte value gives 2 words: a trailing dimension of 2
    i, stride = jn.zeros(bits.shape, jn.uint32), 1
    for axis in reversed(range(bits.ndim)):
        i = i + jax.lax.broadcasted_iota(jn.uint32, bits.shape, axis) * jn.uint32(stride % 2 ** 32)
        stride *= bits.shape[axis]
    first = jn.sum(bits * (2 * i + 1), dtype=jn.uint32)
    second = jn.sum((bits ^ jn.uint32(0x9E3779B9)) * (2 * (i * jn.uint32(2654435761)) + 1), dtype=jn.uint32)
    return jn.stack([first, second])


@jax.jit
def _fingerprint_all(values: list) -> jax.Array:
    return jn.stack([_fingerprint(x) for x in values])


def _fingerprints(tree: dict) -> np.ndarray:
    """Fingerprints of the values of `tree`, in the order of its sorted names, shape (n, 2) uint32 (one program
    for all the values that lie on the same devices)."""
    keys = sorted(tree)
    groups = {}
    for i, k in enumerate(keys):
        groups.setdefault(frozenset(d.id for d in tree[k].sharding.device_set), []).append(i)
    out = np.zeros((max(len(keys), 1), 2), np.uint32)
    for rows in groups.values():
        out[rows] = np.asarray(_fingerprint_all([tree[keys[i]] for i in rows]))
    return out


def _sharding_of(x: jax.Array) -> jax.sharding.Sharding:
    """Where `x` is saved from and restored to. With several processes, a value each process holds whole
    (not laid out on a mesh) counts as one array replicated on all devices: written once, read by all."""
    if jax.process_count() == 1 or not x.is_fully_addressable:
        return x.sharding
    return replicated('device')


def _tree_to_save(vc: VarCollection) -> dict:
    """{name: value} of the distinct variables of `vc`, each as it is saved (see _sharding_of)."""
    tree = {}
    for target, names in storage_groups(vc.items()):
        if '/' in names[0]:
            raise ValueError(f'ShardedCheckpoint.save: variable name {names[0]!r} holds a "/", which orbax '
                             f'would read as a directory; rename it (VarCollection.rename)')
        tree[names[0]] = place(target.value, _sharding_of(target.value))
    return tree


def _own_copies(tree: dict) -> dict:
    """`tree` with a copy of each value that lies on CPU devices. orbax's copy to host memory of such a value is
    a view of its buffers, which the next donating training step would then have to copy before using them."""
    return {k: jn.array(x, copy=True) if next(iter(x.sharding.device_set)).platform == 'cpu' else x
            for k, x in tree.items()}


def _write(manager, directory: str, failed: set, idx: int, tree: dict, idle: bool) -> None:
    """Hands `tree` to orbax's `manager` as checkpoint `idx` of `directory` (written in the background with an
    asynchronous manager); with `idle`, the threads that write it move to idle priority. A failed save joins
    `failed` and its leftovers are removed."""
    threads = python_threads()
    try:
        written = manager.save(idx, args=_orbax().args.PyTreeSave(tree), force=True)
    except Exception as e:  # tensorstore raises ValueErrors for failed writes
        failed.add(idx)
        _discard(directory, failed)
        raise _save_error(directory, idx, e) from e
    if not written:
        raise RuntimeError(f'ShardedCheckpoint.save: orbax did not write checkpoint {idx} in {directory}')
    if idle:
        to_idle(threads)


def _save_error(directory: str, idx: int, e: Exception) -> Exception:
    """The error raised for a failed save of checkpoint `idx`, naming it: an OSError when the cause is one
    (tensorstore reports those as ValueErrors that carry the error code: a full disk is errno ENOSPC), else a
    RuntimeError."""
    message = (f'ShardedCheckpoint: saving checkpoint {idx} to {os.path.join(directory, str(idx))} failed; it was '
               f'not written and the previous checkpoints are kept: {type(e).__name__}: {e}')
    code = e.errno if isinstance(e, OSError) else None
    found = re.search(r"os_error_code='?(\d+)", str(e))
    if code is None and found:
        code = int(found.group(1))
    return RuntimeError(message) if code is None else OSError(code, message)


def _discard(directory: str, failed: set):
    """Removes what the failed saves `failed` (indices) left, orbax's temporary directories, so that they free the
    disk: at once, and again at the next save and close (tensorstore may still be finishing a file of a save that
    failed when the error is raised)."""
    if jax.process_index() == 0 and os.path.isdir(directory):
        prefixes = tuple(f'{i}.orbax-checkpoint-tmp' for i in failed)
        for name in os.listdir(directory):
            if prefixes and name.startswith(prefixes):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _saved_entries(manager, idx: int, path: str) -> dict:
    """{name: metadata} of the entries of checkpoint `idx`, or a clear error when its metadata is damaged."""
    metadata = os.path.join(path, 'default', '_METADATA')
    if not os.path.isfile(metadata):
        raise FileNotFoundError(f'ShardedCheckpoint: {path} is damaged: its metadata file {metadata} is missing')
    try:
        found = manager.item_metadata(idx)
        tree = getattr(found, 'tree', None)
        if tree is None:
            raise ValueError('no entries could be read')
        return dict(tree)
    except Exception as e:  # orbax raises json, tensorstore and attribute errors for damaged metadata
        raise UnreadableFileError(f'ShardedCheckpoint: cannot read the metadata of {path} ({metadata} may be '
                                  f'truncated or corrupted): {type(e).__name__}: {e}') from e


def _restore_plan(vc: VarCollection, saved: dict, path: str) -> Tuple[dict, list]:
    """({name: abstract value to read}, [(variable, name)]) to restore the entries `saved` (name: metadata) of
    checkpoint `path` into `vc`; a ValueError listing every mismatch when they do not match."""
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
    problems += [f'unexpected in the checkpoint (no variable of that name): {k!r}' for k in saved if k not in wanted]
    if problems:
        raise ValueError(f'Cannot restore {path} into the VarCollection, nothing was changed:\n  '
                         + '\n  '.join(problems))
    return abstract, plan


def _check_fingerprints(restored: dict, path: str):
    """Pops the saved fingerprints from `restored` and raises UnreadableFileError unless they match the values."""
    expected = np.asarray(restored.pop(_FINGERPRINTS))
    found = _fingerprints(restored)
    keys = sorted(restored)
    bad = [keys[i] for i in range(len(keys)) if not np.array_equal(expected[i], found[i])]
    if bad or expected.shape != found.shape:
        raise UnreadableFileError(f'ShardedCheckpoint: {path} is corrupted: the values read for '
                                  f'{", ".join(map(repr, bad)) or "its entries"} differ from those '
                                  f'saved (fingerprint mismatch); nothing was changed')


def _open_manager(directory: str, makedir: bool, compress: bool):
    """orbax's CheckpointManager of `directory`. Retention is done by ShardedCheckpoint.wait itself: orbax's
    max_to_keep would delete a save below the newest index (the one just written) as the oldest. Saves always go
    through orbax's asynchronous checkpointer; a blocking save waits for it at once."""
    ocp = _orbax()
    if not makedir and not os.path.isdir(directory):
        raise FileNotFoundError(f'ShardedCheckpoint: {directory} does not exist (makedir=False)')
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=makedir, enable_async_checkpointing=True)
    return ocp.CheckpointManager(directory, options=options,
                                 item_handlers=ocp.PyTreeCheckpointHandler(use_compression=compress))


def _read(manager, idx: int, abstract: dict, path: str) -> dict:
    """The values of checkpoint `idx` (at `path`) described by `abstract`, laid out as it says."""
    ocp = _orbax()
    try:
        return manager.restore(idx, args=ocp.args.PyTreeRestore(
            abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)))
    except Exception as e:  # tensorstore and orbax raise their own types for damaged files
        raise UnreadableFileError(f'ShardedCheckpoint: cannot read the data of {path} (a file is missing, '
                                  f'truncated or corrupted): {type(e).__name__}: {e}') from e


class ShardedCheckpoint:
    """Saves `logdir/sharded/<idx>/` with orbax-checkpoint, keeping the newest `keep_ckpts`; restores the newest.

    A save is written to a temporary directory that orbax renames once every process has finished, so an
    interrupted save is never picked by `restore`.

    With `async_save=True`, `save` returns once the values are copied to host memory and the files are written
    by a background thread while training goes on (orbax's asynchronous checkpointing). `wait()` blocks until
    that save is complete; the next `save`, `restore` and `close` wait for it first. A background save that
    failed raises its error there, naming the checkpoint. Until it is complete, a save is not listed by
    `indices()` and not loaded by `restore()`, and the older checkpoints are deleted (retention) only once it is.

    Args:
        logdir: the run's directory; checkpoints go to `logdir/sharded/<idx>/`.
        keep_ckpts: how many of the newest checkpoints to keep (an int >= 1).
        makedir: create the directory if it does not exist (else the first use raises FileNotFoundError).
        verbose: print a line for each save and restore.
        async_save: write the files in the background (`save` returns before they are written).
        compress: compress the arrays' blocks with zstd (orbax's default). Trained float32 values shrink by a few
            percent only, for about 3x the processor time of the writing (at idle priority, that time is taken
            where training leaves it). Either kind restores the same way.
        idle_priority: with `async_save`, run the threads that write in the background at the operating
            system's idle priority (Linux; tensorstore's workers stay there), so that they use the processor
            time training leaves: on a machine whose processors train, the steps are slowed less and the save
            takes longer. Where training keeps every processor busy all the time, a save then waits for it.

    Raises:
        ValueError: keep_ckpts is not an int >= 1.
    """

    DIR_NAME: str = 'sharded'

    def __init__(self, logdir: str, keep_ckpts: int, makedir: bool = True, verbose: bool = True,
                 async_save: bool = False, compress: bool = True, idle_priority: bool = True):
        if isinstance(keep_ckpts, bool) or not isinstance(keep_ckpts, int) or keep_ckpts < 1:
            raise ValueError(f'ShardedCheckpoint(keep_ckpts): expected an int >= 1, got {keep_ckpts!r}')
        self.logdir = os.fspath(logdir)
        self.directory = os.path.abspath(os.path.join(self.logdir, self.DIR_NAME))
        self.keep_ckpts = keep_ckpts
        self.verbose = verbose
        self.async_save = bool(async_save)
        self.compress = bool(compress)
        self.idle_priority = bool(idle_priority)
        self._makedir = makedir
        self._manager = None
        self._pending: Optional[int] = None  # the index of the save being written, until wait() collects it
        self._failed = set()  # the indices of the saves that failed, whose leftovers are removed

    def _mgr(self):
        if self._manager is None:
            self._manager = _open_manager(self.directory, self._makedir, self.compress)
        return self._manager

    def indices(self) -> List[int]:
        """The indices of the complete checkpoints, oldest first (a save still being written is not listed)."""
        manager = self._mgr()
        manager.reload()  # what is on disk: complete checkpoints, written by any process or object
        return sorted(manager.all_steps())

    def save(self, vc: VarCollection, idx: int) -> str:
        """Writes checkpoint `idx` (every process its own shards), then deletes all but the newest `keep_ckpts`.

        The checkpoint just written is never deleted, nor are those with a higher index: saving below the newest
        index (e.g. a run restarted from 0 in an old logdir) warns, as `restore()` would not load it. A
        fingerprint of every value is saved with it and checked by `restore`. With `async_save`, this first waits
        for the previous save, then returns once the values are copied to host memory: the variables can change
        right away, the checkpoint holds their values at this call. The retention then runs in `wait()`.

        Args:
            vc: the variables to save, under their names in vc (a TrainRef is saved as its TrainVar).
            idx: the checkpoint's index (an int >= 0, e.g. the epoch or step).

        Returns:
            The checkpoint's directory (complete once `wait()` returns, with `async_save`).

        Raises:
            ValueError: checkpoint `idx` already exists, or a name holds a '/'.
            OSError: (e.g. a full disk) the files could not be written; the message names the checkpoint, which
                does not exist then, and the previous checkpoints are kept. With `async_save`, the error of a
                background save is raised by the next `save` (which then saves nothing), `wait`, `restore` or
                `close`.
        """
        check_vc(vc, 'ShardedCheckpoint.save')
        idx = _index(idx, 'ShardedCheckpoint.save(idx)')
        tree = _tree_to_save(vc)
        self.wait()
        _discard(self.directory, self._failed)
        existing = self.indices()
        if idx in existing:
            raise ValueError(f'ShardedCheckpoint.save: checkpoint {idx} already exists in {self.directory}')
        fingerprints = jax.device_put(_fingerprints(tree))
        if self.async_save:
            tree = _own_copies(tree)
        tree[_FINGERPRINTS] = place(fingerprints, _sharding_of(fingerprints))
        _write(self._mgr(), self.directory, self._failed, idx, tree, self.async_save and self.idle_priority)
        self._pending = idx
        newer = [i for i in existing if i > idx]
        if newer:
            warnings.warn(f'ShardedCheckpoint.save(idx={idx}): {self.directory} already holds checkpoint '
                          f'{max(newer)}, newer than this one, so restore() will not load this save. Continue '
                          f'from the restored index (idx, _ = ckpt.restore(vc)) or use a new logdir. '
                          f'Checkpoints newer than {idx} are never deleted by this save.', stacklevel=2)
        if not self.async_save:
            self.wait()
        return os.path.join(self.directory, str(idx))

    def wait(self):
        """Blocks until the save in progress (with `async_save`) is complete, then deletes all but the newest
        `keep_ckpts` checkpoints. Does nothing when no save is in progress.

        Raises:
            OSError, RuntimeError: the save in progress failed (the message names its checkpoint, which does not
                exist then; the previous checkpoints are kept). The error is raised once.
        """
        if self._pending is None:
            return
        idx, self._pending = self._pending, None
        try:
            self._manager.wait_until_finished()
            self._manager.check_for_errors()
        except Exception as e:
            self._failed.add(idx)
            _discard(self.directory, self._failed)
            raise _save_error(self.directory, idx, e) from e
        self._failed.discard(idx)
        existing = self.indices()
        for old in existing[:-self.keep_ckpts]:
            if old < idx:
                self._manager.delete(old)

    def restore(self, vc: VarCollection, idx: Optional[int] = None) -> Tuple[int, str]:
        """Loads checkpoint `idx` (default: the newest) into `vc`, each value laid out as its variable is now.

        A save of this object still in progress (`async_save`) is waited for first.

        Args:
            vc: the variables to load, matched by name; their current layouts (mesh, PartitionSpec) are kept.
            idx: the checkpoint to load; None loads the newest.

        Returns:
            (idx, directory), or (0, '') when there is no checkpoint.

        Raises:
            FileNotFoundError: there is no checkpoint `idx`, or its metadata file is missing.
            OSError, RuntimeError: this object's save in progress (`async_save`) failed; see `wait`.
            ValueError: names, shapes or dtypes do not match `vc`; nothing is changed then.
            objax.io.UnreadableFileError: (a ValueError) a file of the checkpoint is truncated or corrupted, or
                the values read differ from those saved; it names the checkpoint and nothing is changed.
        """
        check_vc(vc, 'ShardedCheckpoint.restore')
        self.wait()
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
        saved = _saved_entries(self._mgr(), idx, path)
        fingerprints = saved.pop(_FINGERPRINTS, None)
        abstract, plan = _restore_plan(vc, saved, path)
        if fingerprints is not None:
            abstract[_FINGERPRINTS] = jax.ShapeDtypeStruct(fingerprints.shape, np.dtype(fingerprints.dtype),
                                                           sharding=replicated('device'))
        restored = _read(self._mgr(), idx, abstract, path)
        if fingerprints is not None:
            _check_fingerprints(restored, path)
        if self.verbose:
            print('Resuming from', path)
        for target, key in plan:
            target.assign(restored[key])
        return idx, path

    def close(self):
        """Waits for the save in progress (see `wait`, whose errors it raises), then releases orbax's resources.
        The object can be used again afterwards. `with ShardedCheckpoint(...) as ckpt:` closes it at the end."""
        try:
            self.wait()
        finally:
            _discard(self.directory, self._failed)
            if self._manager is not None:
                self._manager.close()
                self._manager = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        extra = ((', async_save=True' if self.async_save else '') + ('' if self.compress else ', compress=False') +
                 ('' if self.idle_priority else ', idle_priority=False'))
        return f'{type(self).__name__}(logdir={self.logdir!r}, keep_ckpts={self.keep_ckpts}{extra})'
