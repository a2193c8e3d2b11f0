"""TrainingRun: a training loop that survives being killed or preempted and resumes bit for bit.

Each checkpoint holds the variables and, as one more variable of the same file (or sharded checkpoint), the
run's position and state encoded as JSON bytes: both are written by one save, so a kill at any moment leaves
either the previous checkpoint or the new one, never variables of one step with the position of another.
"""

import json
import os
import signal
import threading
import warnings
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import jax
import jax.numpy as jn
import numpy as np
from jax.experimental import multihost_utils

from objax.io._match import UnreadableFileError
from objax.io._npz import read_npz
from objax.io.checkpoint import Checkpoint
from objax.io.sharded import ShardedCheckpoint
from objax.random import DEFAULT_GENERATOR
from objax.util.multihost import multi_host_barrier
from objax.varcollection import VarCollection
from objax.variable import StateVar

__all__ = ['TrainingRun']

STATE_NAME = '(TrainingRun).state'  # the checkpoint entry holding the run's position and state (JSON bytes)
GENERATOR_NAME = '(TrainingRun).DEFAULT_GENERATOR'  # objax.random.DEFAULT_GENERATOR's key
_VERSION = 1


def _encode(state: dict) -> jax.Array:
    return jn.asarray(np.frombuffer(json.dumps(state, sort_keys=True).encode(), np.uint8))


def _decode(value, where: str) -> dict:
    try:
        state = json.loads(np.asarray(value).tobytes().decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise UnreadableFileError(f'{where}: the TrainingRun state it holds is not valid JSON ({e})') from None
    if not isinstance(state, dict) or state.get('version') != _VERSION:
        raise UnreadableFileError(f'{where}: holds no TrainingRun state of version {_VERSION}')
    return state


def _saved_state_size(ckpt, idx: int, path: str) -> int:
    """The length of the state entry of checkpoint `idx` (needed before restoring: shapes must match)."""
    if isinstance(ckpt, ShardedCheckpoint):
        import orbax.checkpoint as ocp  # already imported (and its import warnings handled) by ckpt.indices()
        manager = ocp.CheckpointManager(ckpt.directory, item_handlers=ocp.PyTreeCheckpointHandler())
        try:
            tree = dict(manager.item_metadata(idx).tree)
        except Exception as e:  # orbax raises json, tensorstore and attribute errors for damaged metadata
            raise UnreadableFileError(f'{path}: its metadata cannot be read ({type(e).__name__}: {e})') from e
        finally:
            manager.close()
        shape = tree[STATE_NAME].shape if STATE_NAME in tree else None
    else:
        with open(path, 'rb') as f:
            archive, entries = read_npz(f, path)
            with archive:
                shape = entries[STATE_NAME].shape if STATE_NAME in entries else None
    if shape is None:
        raise ValueError(f'{path} was not saved by objax.util.TrainingRun (it has no {STATE_NAME!r} entry): '
                         f'use another logdir')
    return int(np.prod(shape))


def _path(ckpt, idx: int) -> str:
    """The path of checkpoint `idx` of `ckpt`."""
    if isinstance(ckpt, ShardedCheckpoint):
        return os.path.join(ckpt.directory, str(idx))
    return os.path.join(ckpt.logdir, ckpt.DIR_NAME, ckpt.FILE_FORMAT % idx)


def _restore(ckpt, vc: VarCollection, state_var: StateVar) -> Tuple[dict, str]:
    """Loads the newest readable checkpoint into `vc`: (its decoded state, its path), or ({}, '') if none."""
    for idx in reversed(ckpt.indices()):
        path = _path(ckpt, idx)
        try:
            state_var.assign(jn.zeros(_saved_state_size(ckpt, idx, path), jn.uint8), check=False)
            ckpt.restore(vc, idx)
            return _decode(state_var.value, path), path
        except UnreadableFileError as e:
            warnings.warn(f'TrainingRun: {path} is unreadable, trying an older checkpoint: {e}', stacklevel=3)
    return {}, ''


class TrainingRun:
    """A training loop that resumes exactly where it stopped, however it stopped.

    Every checkpoint holds `vc` (weights, optimizer state, BatchNorm statistics, random keys: whatever the
    collection holds), objax.random.DEFAULT_GENERATOR's key and, in the same file, the run's position (epoch
    and step), the states of the numpy generators made by `numpy_rng` and the JSON values of `state`. Created
    in a `logdir` that holds checkpoints, it restores the newest one, so that the same command run again, after
    a SIGKILL at any moment, continues from the last checkpoint and ends with the same values, bit for bit, as
    a run never interrupted (given deterministic steps, as XLA's on CPU; the data order must follow from the
    position or come from `numpy_rng` generators). See "Runs that survive being killed" in docs/saving.md.

    A stop signal (SIGTERM by default: what Kubernetes, Slurm and spot VMs send) saves a checkpoint at the next
    step boundary and exits with status 0 (SystemExit(0), so `finally` blocks run; `stopped` is then True).
    With several processes (jax.distributed), every process saves at the same step: JAX's preemption service,
    which catches SIGTERM itself, lets them agree on it (`reached_preemption_sync_point`); `stop_signals` and
    `request_stop` apply to single-process runs. Loop over `steps()` to its end in every epoch.

    Example:
        ```
        with objax.util.TrainingRun(logdir, vc, epochs=10, steps_per_epoch=100, save_every=50) as run:
            for epoch in run.epochs():           # saves at the end of each epoch
                order = np.random.default_rng([seed, epoch]).permutation(n)
                for step in run.steps():         # starts mid-epoch after a resume; saves every 50 steps
                    train_op(x[order[step * batch:(step + 1) * batch]])
        ```

    Attributes:
        vc: the collection saved: `vc`, DEFAULT_GENERATOR's key and the state entry.
        epochs_total: the `epochs` argument; `steps_per_epoch` and `save_every` are kept under their names.
        epoch: the current epoch (0-based; equals `epochs` once the run is done).
        step: steps done in the current epoch.
        global_step: steps done in all, the index of the checkpoints.
        state: a dict of JSON values (numbers, strings, lists, dicts) saved with every checkpoint and restored;
            it must be the same on every process.
        resumed_from: the path of the checkpoint restored, or '' for a new run.
        stopped: whether a stop signal ended the run.

    Args:
        logdir: the directory of the checkpoints (`logdir/ckpt/` or `logdir/sharded/`).
        vc: the variables to save and restore.
        epochs: the total number of epochs (a resumed run trains the remaining ones).
        steps_per_epoch: steps in each epoch.
        save_every: also save every `save_every` steps (counted over the whole run); None saves only at the end
            of each epoch.
        keep_ckpts: how many checkpoints to keep.
        sharded: save with objax.io.ShardedCheckpoint (every process writes its shards) instead of the npz
            objax.io.Checkpoint (written by process 0).
        stop_signals: the signals that stop the run at the next step boundary.
        verbose: print a line on resuming and on stopping (process 0 only).

    Raises:
        ValueError: an argument is out of range, or the newest checkpoint does not fit `vc` or this run.
    """

    def __init__(self, logdir: str, vc: VarCollection, epochs: int, steps_per_epoch: int,
                 save_every: Optional[int] = None, keep_ckpts: int = 2, sharded: bool = False,
                 stop_signals: Sequence[int] = (signal.SIGTERM,), verbose: bool = True):
        if min(epochs, steps_per_epoch) < 0 or (save_every is not None and save_every < 1):
            raise ValueError(f'TrainingRun: need epochs >= 0, steps_per_epoch >= 0 and save_every >= 1 (or None), '
                             f'got {epochs}, {steps_per_epoch} and {save_every}')
        self.epochs_total, self.steps_per_epoch, self.save_every = epochs, steps_per_epoch, save_every
        self.verbose, self.stopped = verbose and jax.process_index() == 0, False
        self.sharded = sharded
        self._ckpt = (ShardedCheckpoint if sharded else Checkpoint)(logdir, keep_ckpts=keep_ckpts, verbose=False)
        self._state_var = StateVar(_encode({}))
        self.vc = vc + VarCollection({GENERATOR_NAME: DEFAULT_GENERATOR.key, STATE_NAME: self._state_var})
        try:
            saved, self.resumed_from = _restore(self._ckpt, self.vc, self._state_var)
        except ValueError as e:
            raise ValueError(f'TrainingRun: cannot resume from {logdir} (saved with other settings? use another '
                             f'logdir):\n{e}') from e
        self.epoch, self.step, self.global_step = (saved.get(k, 0) for k in ('epoch', 'step', 'global_step'))
        if self.step and self.step >= steps_per_epoch:
            raise ValueError(f'TrainingRun: {self.resumed_from} was saved after step {self.step} of an epoch of '
                             f'{saved.get("steps_per_epoch")} steps; this run has {steps_per_epoch} steps per epoch')
        self.state: Dict[str, Any] = saved.get('state', {})
        self._saved_rngs, self._rngs = saved.get('rngs', {}), {}
        self._saved_at = self.global_step if self.resumed_from else None
        self._stop_requested = False
        self._previous_handlers = {}
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in stop_signals:
                self._previous_handlers[sig] = signal.signal(sig, lambda *_: self.request_stop())
        if self.verbose and self.resumed_from:
            print(f'Resuming from {self.resumed_from}: {self.global_step} steps done (epoch {self.epoch}, '
                  f'step {self.step})')

    def numpy_rng(self, name: str, seed: Any) -> np.random.Generator:
        """A numpy generator whose state is saved with each checkpoint and restored on resuming.

        Args:
            name: the name of its state in the checkpoint (one generator per name).
            seed: the seed of a new run (numpy.random.default_rng(seed)); a resumed run gets the saved state.

        Returns:
            The generator: draw the data order or augmentations from it.
        """
        rng = np.random.default_rng(seed)
        if name in self._saved_rngs:
            rng.bit_generator.state = self._saved_rngs[name]
        self._rngs[name] = rng
        return rng

    def epochs(self) -> Iterator[int]:
        """The epochs still to train; after each one the run is saved (and stops if a stop was requested).

        Yields:
            The epoch number, from the resumed one to `epochs - 1`.
        """
        while self.epoch < self.epochs_total:
            yield self.epoch
            if self.step != self.steps_per_epoch:
                raise RuntimeError(f'TrainingRun: epoch {self.epoch} ended after {self.step} of its '
                                   f'{self.steps_per_epoch} steps; loop over run.steps() to its end')
            self.epoch, self.step = self.epoch + 1, 0
            self._boundary(save=True)
        self._release_signals()

    def steps(self) -> Iterator[int]:
        """The steps of the current epoch still to do. After each (but the epoch's last, saved by `epochs`),
        the run is saved every `save_every` steps, and saved and stopped if a stop was requested.

        Yields:
            The step number within the epoch, from the resumed one to `steps_per_epoch - 1`.
        """
        while self.step < self.steps_per_epoch:
            yield self.step
            self.step += 1
            self.global_step += 1
            if self.step < self.steps_per_epoch:
                self._boundary(save=bool(self.save_every) and self.global_step % self.save_every == 0)

    def _boundary(self, save: bool):
        stop = self._stop_agreed()
        if save or stop:
            self.save()
        if stop:
            self.stopped = True
            if self.verbose:
                print(f'Stopping after {self.global_step} steps (epoch {self.epoch}, step {self.step}) as requested: '
                      f'saved {_path(self._ckpt, self.global_step)}; run the same command to resume')
            raise SystemExit(0)

    def _stop_agreed(self) -> bool:
        if jax.process_count() == 1:
            return self._stop_requested
        try:
            return multihost_utils.reached_preemption_sync_point(self.global_step)
        except RuntimeError:  # JAX's preemption service is off (jax_enable_preemption_service)
            return False

    def request_stop(self):
        """Asks the run to save and stop at the next step boundary (what the stop signals do)."""
        self._stop_requested = True

    def save(self) -> str:
        """Saves a checkpoint of the current position now (every process must call it), unless one was saved
        at this step already.

        Returns:
            The checkpoint's path.
        """
        path = _path(self._ckpt, self.global_step)
        if self._saved_at == self.global_step:
            return path
        state = {'version': _VERSION, 'epoch': self.epoch, 'step': self.step, 'global_step': self.global_step,
                 'steps_per_epoch': self.steps_per_epoch, 'state': self.state,
                 'rngs': {**self._saved_rngs, **{k: r.bit_generator.state for k, r in self._rngs.items()}}}
        self._state_var.assign(_encode(state), check=False)
        if jax.process_count() > 1:  # the state is saved once for all processes: they must agree on it
            multihost_utils.assert_equal(np.asarray(self._state_var.value), 'TrainingRun: the processes differ '
                                         'in their state (run.state and numpy_rng generators must be the same)')
        if self.sharded:
            self._ckpt.save(self.vc, self.global_step)
        else:
            if jax.process_index() == 0:
                self._ckpt.save(self.vc, self.global_step)
            multi_host_barrier('objax_training_run_save')
        self._saved_at = self.global_step
        return path

    def _release_signals(self):
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}

    def close(self):
        """Restores the previous signal handlers and releases the checkpoint's resources."""
        self._release_signals()
        if self.sharded:
            self._ckpt.close()

    def __enter__(self) -> 'TrainingRun':
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close()
