"""Shared by the examples: the 8x8 digits of scikit-learn (shipped with it, no download), split and batched;
TrainingRun, the checkpoint / TensorBoard / progress-bar bookkeeping of a training loop; and JAX's persistent
compilation cache (add_compile_cache_flag, use_compile_cache), so that a second run does not compile again.
"""

import argparse
import os
import time
from typing import Callable, Optional, Tuple

import jax
import numpy as np
from jax.experimental.compilation_cache import compilation_cache
from tqdm import tqdm

import objax

__all__ = ['digits_split', 'batches', 'digits_epoch', 'TrainingRun', 'add_compile_cache_flag',
           'use_compile_cache', 'COMPILE_CLOCK']

_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'  # XLA compilation, or a persistent cache read
_CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'


class _CompileClock:
    """Adds up the seconds this process spends in XLA compilation (a persistent-cache hit counts its read)."""

    def __init__(self):
        self.seconds, self.programs, self.cache_hits = 0.0, 0, 0
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        jax.monitoring.register_event_listener(self._event)

    def _duration(self, event: str, seconds: float, **kwargs):
        if event == _COMPILE_EVENT:
            self.seconds += seconds
            self.programs += 1

    def _event(self, event: str, **kwargs):
        if event == _CACHE_HIT_EVENT:
            self.cache_hits += 1


COMPILE_CLOCK = _CompileClock()


def add_compile_cache_flag(parser: argparse.ArgumentParser):
    """Adds --no-compile-cache to an example's command line."""
    parser.add_argument('--no-compile-cache', action='store_true',
                        help='do not use JAX\'s persistent compilation cache (default: $OBJAX_COMPILE_CACHE, else '
                             '$JAX_COMPILATION_CACHE_DIR, else ~/.cache/objax/jax_compilation_cache; '
                             'OBJAX_COMPILE_CACHE=off also disables it)')


def use_compile_cache(disabled: bool = False) -> Optional[str]:
    """Turns on JAX's persistent compilation cache, so that later runs load the programs this one compiles.

    The directory is $OBJAX_COMPILE_CACHE, else $JAX_COMPILATION_CACHE_DIR (or jax_compilation_cache_dir), else
    $XDG_CACHE_HOME/objax/jax_compilation_cache (~/.cache/... by default). Every program is cached, however
    quickly it compiled (unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise). The cache is
    trusted code: keep it private to your user.

    Args:
        disabled: leave the cache off (as does OBJAX_COMPILE_CACHE=off, or =0, or empty).

    Returns:
        The cache directory, or None when the cache is off.
    """
    setting = os.environ.get('OBJAX_COMPILE_CACHE')
    if disabled or (setting is not None and setting.strip().lower() in ('', '0', 'off', 'false', 'no')):
        jax.config.update('jax_enable_compilation_cache', False)
        return None
    path = setting or jax.config.jax_compilation_cache_dir
    if not path:
        base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
        path = os.path.join(base, 'objax', 'jax_compilation_cache')
    os.makedirs(path, mode=0o700, exist_ok=True)
    jax.config.update('jax_enable_compilation_cache', True)
    jax.config.update('jax_compilation_cache_dir', path)
    if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
    compilation_cache.reset_cache()  # programs compiled at import time found no directory: look again
    return path


def digits_split(test_size: float = 0.2, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y): images (N, 1, 8, 8) float32 in [0, 1], labels (N,) int32 in 0..9.

    A stratified split (same class proportions in both parts) fixed by `seed`: 1437 train / 360 test images
    for test_size=0.2."""
    from sklearn.datasets import load_digits  # imported here: the other examples don't need scikit-learn
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16)[:, None]  # pixel values 0..16 -> [0, 1], NCHW
    labels = digits.target.astype(np.int32)
    train_x, test_x, train_y, test_y = train_test_split(images, labels, test_size=test_size, random_state=seed,
                                                        stratify=labels)
    return train_x, train_y, test_x, test_y


def batches(n: int, batch: int, rng: np.random.Generator):
    """Index arrays of one epoch: a random permutation of range(n) cut into full batches (the rest is dropped)."""
    order = rng.permutation(n)
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]


def digits_epoch(run: 'TrainingRun', epoch: int, train_op: Callable, predict: Callable, data: Tuple[np.ndarray, ...],
                 batch: int, lr: float, seed: int) -> objax.jaxboard.Summary:
    """Trains one epoch of the digits examples, train_op(x, y, lr) -> loss on each batch, then measures
    predict(x) -> labels on the test set. Returns a Summary with 'losses/xe' and 'accuracy/test'."""
    train_x, train_y, test_x, test_y = data
    summary = objax.jaxboard.Summary()
    for step, idx in enumerate(batches(len(train_x), batch, np.random.default_rng([seed, epoch]))):
        summary.scalar('losses/xe', train_op(train_x[idx], train_y[idx], run.lr(lr, epoch, step)))
        run.progress.update()
    summary.scalar('accuracy/test', float((np.asarray(predict(test_x)) == test_y).mean()))
    return summary


class TrainingRun:
    """The bookkeeping of an example's training loop, in `logdir`: resumes `vc` from the newest checkpoint,
    shows a progress bar, and after each epoch writes its Summary for TensorBoard (logdir/tb), with the mean of the
    learning rates `lr` gave during the epoch ('lr'), and saves `vc` (logdir/ckpt). With `model`, its summary table
    (objax.util.summary) is logged as the text 'model' when training starts.
    Use as `with TrainingRun(...) as run: for epoch in run.epochs(): ...; run.end_epoch(...)`."""

    def __init__(self, logdir: str, vc: objax.VarCollection, epochs: int, steps_per_epoch: int, desc: str,
                 model: Optional[objax.Module] = None):
        self.logdir, self.vc, self.total_epochs, self.steps_per_epoch = logdir, vc, epochs, steps_per_epoch
        self.ckpt = objax.io.Checkpoint(logdir, keep_ckpts=2, verbose=False)
        try:
            self.start_epoch, path = self.ckpt.restore(vc)
        except ValueError as e:
            raise SystemExit(f'Cannot resume from {logdir} (trained with other settings? use another '
                             f'--logdir):\n{e}') from e
        if path:
            print(f'Resuming from {path}: {self.start_epoch} of {epochs} epochs done')
        self.done = self.start_epoch >= epochs
        self.progress = tqdm(total=epochs * steps_per_epoch, initial=min(self.start_epoch, epochs) * steps_per_epoch,
                             unit='step', desc=desc, disable=self.done)
        self.tensorboard = None if self.done else objax.jaxboard.SummaryWriter(os.path.join(logdir, 'tb'))
        if self.tensorboard is not None and model is not None:
            text = objax.jaxboard.Summary()
            table = objax.util.summary(model, depth=2)
            text.text('model', '\n'.join('    ' + line for line in table.splitlines()))  # a Markdown code block
            self.tensorboard.write(text, self.start_epoch)
        self.learning_rates = []  # those given by `lr` during the current epoch
        self.start_time = time.time()

    def epochs(self) -> range:
        """The epochs still to train."""
        return range(self.start_epoch, self.total_epochs)

    def lr(self, base: float, epoch: int, step: int) -> np.float32:
        """Cosine decay from `base` to 0 over the whole run, at `step` of `epoch`."""
        done = (epoch * self.steps_per_epoch + step) / (self.total_epochs * self.steps_per_epoch)
        lr = np.float32(base * 0.5 * (1 + np.cos(np.pi * done)))
        self.learning_rates.append(lr)
        return lr

    def end_epoch(self, epoch: int, summary: objax.jaxboard.Summary):
        """Logs `summary` (and 'lr', the epoch's mean learning rate) at step epoch + 1, checkpoints the variables as
        epoch + 1, shows the scalars."""
        if self.learning_rates:
            summary.scalar('lr', float(np.mean(self.learning_rates)))
            self.learning_rates = []
        self.tensorboard.write(summary, epoch + 1)
        self.ckpt.save(self.vc, epoch + 1)
        self.progress.set_postfix({k: f'{v:.4f}' for k, v in summary().items()})

    def __enter__(self) -> 'TrainingRun':
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.progress.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if exc_type is not None:
            return
        if self.done:
            print(f'Already trained for {self.start_epoch} epochs (pass a larger --epochs to train more)')
        else:
            print(f'Trained epochs {self.start_epoch + 1}-{self.total_epochs} in {time.time() - self.start_time:.1f}s '
                  f'(checkpoints and TensorBoard logs in {self.logdir})')
        clock = COMPILE_CLOCK
        print(f'Compile time: {clock.seconds:.2f}s for {clock.programs} programs, {clock.cache_hits} of them read '
              f'from the persistent compilation cache')
