"""Shared by the examples: the 8x8 digits of scikit-learn (shipped with it, no download), split and batched;
ExampleRun, objax.util.TrainingRun (exact resume, stop on SIGTERM) with the examples' progress bar, TensorBoard
summaries and learning-rate schedule; and JAX's persistent compilation cache (add_compile_cache_flag,
use_compile_cache), so that a second run does not compile again.
"""

import argparse
import hashlib
import os
import signal
import time
from typing import Callable, Optional, Tuple

import jax
import numpy as np
from jax.experimental.compilation_cache import compilation_cache
from tqdm import tqdm

import objax

__all__ = ['digits_split', 'batches', 'digits_epoch', 'ExampleRun', 'add_run_flags', 'variables_digest',
           'add_compile_cache_flag', 'use_compile_cache', 'COMPILE_CLOCK']

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


def digits_epoch(run: 'ExampleRun', train_op: Callable, predict: Callable, data: Tuple[np.ndarray, ...], batch: int,
                 lr: float, seed: int):
    """Trains the rest of epoch run.epoch of the digits examples, train_op(x, y, lr) -> loss on each batch (the
    batch order follows from seed and epoch), then measures predict(x) -> labels on the test set; both go to
    run.summary as 'losses/xe' and 'accuracy/test'."""
    train_x, train_y, test_x, test_y = data
    order = batches(len(train_x), batch, np.random.default_rng([seed, run.epoch]))
    for step in run.steps():
        run.summary.scalar('losses/xe', train_op(train_x[order[step]], train_y[order[step]], run.lr(lr)))
    run.summary.scalar('accuracy/test', float((np.asarray(predict(test_x)) == test_y).mean()))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text}')
    return value


def add_run_flags(parser: argparse.ArgumentParser):
    """Adds --save-every to an example's command line."""
    parser.add_argument('--save-every', type=_positive_int, metavar='N',
                        help='also checkpoint every N steps (default: at the end of each epoch only); a killed '
                             'run loses at most the steps since its last checkpoint')


def variables_digest(vc: objax.VarCollection) -> str:
    """A sha256 of the names and values of `vc` (gathered from every process: every process must call it), to
    check that two runs ended with the same variables, bit for bit."""
    digest = hashlib.sha256()
    for name, value in sorted(zip(vc.keys(), objax.util.gather_to_host([v.value for v in vc.values()]))):
        digest.update(f'{name} {value.dtype} {value.shape}'.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


# Test hook, for tests/examples only: OBJAX_EXAMPLE_TEST_SIGNAL=KILL@k (or TERM@k, ...) makes the run send
# itself SIGKILL (SIGTERM, then waits two seconds) during step k of the whole run (counted from 1), as a
# scheduler would.
_TEST_SIGNAL = 'OBJAX_EXAMPLE_TEST_SIGNAL'


class ExampleRun(objax.util.TrainingRun):
    """objax.util.TrainingRun in `logdir` with the bookkeeping of the examples: a progress bar; `summary`, the
    Summary of the current epoch (kept in the run state, so that a resumed epoch logs all its steps), written for
    TensorBoard (logdir/tb) when the epoch ends; the cosine learning rate `lr` (the epoch's mean is logged as
    'lr'); with `model`, its summary table (objax.util.summary) logged as the text 'model' when training starts;
    and the closing lines. Use as `with ExampleRun(...) as run: for epoch in run.epochs(): for step in
    run.steps(): ...`."""

    def __init__(self, logdir: str, vc: objax.VarCollection, epochs: int, steps_per_epoch: int, desc: str,
                 save_every: Optional[int] = None, sharded: bool = False, model: Optional[objax.Module] = None):
        try:
            super().__init__(logdir, vc, epochs, steps_per_epoch, save_every=save_every, sharded=sharded)
        except ValueError as e:
            raise SystemExit(str(e)) from e  # cannot resume: the message names the checkpoint and the problem
        self.logdir, self.start_epoch = logdir, self.epoch
        self.done = self.epoch >= epochs
        lead = jax.process_index() == 0
        self.progress = tqdm(total=epochs * steps_per_epoch, initial=min(self.global_step, epochs * steps_per_epoch),
                             unit='step', desc=desc, disable=self.done or not lead)
        self.tensorboard = objax.jaxboard.SummaryWriter(os.path.join(logdir, 'tb')) if lead and not self.done else None
        if self.tensorboard is not None and model is not None:
            text = objax.jaxboard.Summary()
            table = objax.util.summary(model, depth=2)
            text.text('model', '\n'.join('    ' + line for line in table.splitlines()))  # a Markdown code block
            self.tensorboard.write(text, self.epoch)
        self.summary = objax.jaxboard.Summary()
        for tag, (dtype, values) in self.state.get('summary', {}).items():
            for value in values:
                self.summary.scalar(tag, np.asarray(value, dtype))
        name, _, step = os.environ.get(_TEST_SIGNAL, '').partition('@')
        self.test_signal = (getattr(signal, 'SIG' + name), int(step)) if name else None
        self.start_time = time.time()

    def lr(self, base: float) -> np.float32:
        """Cosine decay from `base` to 0 over the whole run, at the current step; logged as the epoch's mean 'lr'."""
        done = (self.epoch * self.steps_per_epoch + self.step) / (self.epochs_total * self.steps_per_epoch)
        lr = np.float32(base * 0.5 * (1 + np.cos(np.pi * done)))
        self.summary.scalar('lr', lr)
        return lr

    def steps(self):
        for step in super().steps():
            yield step
            self.progress.update()
            if self.test_signal and self.global_step + 1 == self.test_signal[1]:
                os.kill(os.getpid(), self.test_signal[0])
                time.sleep(2)  # as a scheduler's grace period: time for every process to hear of it, even on a
                # loaded machine, and to agree on a step before the run ends

    def epochs(self):
        for epoch in super().epochs():
            yield epoch
            if self.tensorboard is not None:
                self.tensorboard.write(self.summary, epoch + 1)
            self.progress.set_postfix({k: f'{v:.4f}' for k, v in self.summary().items()})
            self.summary = objax.jaxboard.Summary()

    def save(self) -> str:
        if self.tensorboard is not None:
            self.tensorboard.flush()  # what was logged before a checkpoint survives a kill after it
        scalars = {k: v.values for k, v in self.summary.items() if isinstance(v, objax.jaxboard.DelayedScalar)}
        self.state['summary'] = {k: (str(np.asarray(v[0]).dtype), [np.asarray(x).item() for x in v])
                                 for k, v in scalars.items() if v}
        return super().save()

    def __exit__(self, exc_type, exc_val, exc_tb):
        super().__exit__(exc_type, exc_val, exc_tb)
        self.progress.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if exc_type is not None or jax.process_index() != 0:
            return
        if self.done:
            print(f'Already trained for {self.start_epoch} epochs (pass a larger --epochs to train more)')
        else:
            print(f'Trained epochs {self.start_epoch + 1}-{self.epochs_total} in {time.time() - self.start_time:.1f}s '
                  f'(checkpoints and TensorBoard logs in {self.logdir})')
        clock = COMPILE_CLOCK
        print(f'Compile time: {clock.seconds:.2f}s for {clock.programs} programs, {clock.cache_hits} of them read '
              f'from the persistent compilation cache')
