"""objax.io.ShardedCheckpoint under faults and with asynchronous saves: training goes on while a save is written,
a process killed with SIGKILL during a save (one of two processes, too) leaves the previous checkpoint to
restore, a full disk fails the save with an OSError naming it and keeps the previous checkpoint."""

import contextlib
import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.io import ShardedCheckpoint
from objax.sharding import fsdp, make_mesh, shard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _sharded_kill_worker as worker  # noqa: E402
from _workers import free_port, run_workers  # noqa: E402

WORKER = Path(worker.__file__)
TIMEOUT_S = 240


def values(vc):
    return {k: np.asarray(v.value) for k, v in vc.items()}


def assert_values(vc, expected: dict):
    for k, v in values(vc).items():
        np.testing.assert_array_equal(v, expected[k], err_msg=k)


def make_model():
    model = objax.nn.Sequential([objax.nn.Linear(12, 64), objax.functional.relu, objax.nn.Linear(64, 8)])
    opt = objax.optimizer.Adam(model.vars())
    return model, opt, model.vars() + opt.vars()


def test_async_save_lets_training_go_on_and_keeps_the_values_of_the_call(tmp_path):
    model, opt, vc = make_model()
    mesh = make_mesh({'data': 8})
    shard(vc, mesh, rules=[fsdp(mesh)])
    gv = objax.GradValues(lambda x: (model(x) ** 2).mean(), model.vars())
    step = objax.Jit(lambda x: opt(0.1, gv(x)[0]), gv.vars() + opt.vars())  # donates the variables' buffers
    x = np.random.RandomState(0).normal(size=(16, 12)).astype(np.float32)
    ckpt = ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False, async_save=True, compress=False)
    assert repr(ckpt).endswith('keep_ckpts=1, async_save=True, compress=False)')
    step(x)
    ckpt.save(vc, 1)
    ckpt.wait()
    step(x)
    at_save = values(vc)
    release, undo = worker.paused_commits()  # the save below stops before its rename until released
    try:
        path = ckpt.save(vc, 2)
        for _ in range(3):
            step(x)  # training goes on while checkpoint 2 is written
        assert not np.array_equal(np.asarray(model[0].w.value), at_save['(Sequential)[0](Linear).w'])
        assert ckpt.indices() == [1] and not os.path.exists(path)  # not complete: neither listed nor deleted
        with ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False) as other:
            assert other.restore(make_model()[2])[0] == 1  # another reader sees only the complete checkpoint
    finally:
        release.set()
        undo()
    ckpt.wait()
    assert ckpt.indices() == [2]  # complete, then the older one deleted (keep_ckpts=1)
    fresh = make_model()[2]
    with ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False) as reader:  # compress=True reads them too
        assert reader.restore(fresh) == (2, path)
    assert_values(fresh, at_save)  # the values of the save call, not those of the later steps


def _pointers(vc) -> list:
    return [[s.data.unsafe_buffer_pointer() for s in v.value.addressable_shards] for v in vc.subset(objax.TrainVar)]


def test_a_step_after_an_async_save_on_cpu_updates_the_variables_in_place(tmp_path):
    # orbax's copy to host memory of a CPU array is a view of its buffers: the save hands orbax copies of its
    # own, so that the training step need not copy the variables before donating them.
    model, opt, vc = make_model()
    mesh = make_mesh({'data': 8})
    shard(vc, mesh, rules=[fsdp(mesh)])
    step = objax.Jit(lambda: [v.assign(v.value + 1) for v in model.vars()], model.vars())
    step()
    at_save = {k: jn.array(v.value, copy=True) for k, v in vc.items()}  # (numpy would keep views of the buffers)
    pointers = _pointers(vc)
    with ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False, async_save=True, compress=False) as ckpt:
        release, undo = worker.paused_commits()
        try:
            ckpt.save(vc, 1)
            step()  # while the save is written
            assert _pointers(vc) == pointers
        finally:
            release.set()
            undo()
    fresh = make_model()[2]
    with ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False) as reader:
        reader.restore(fresh)
    assert_values(fresh, {k: np.asarray(x) for k, x in at_save.items()})


@pytest.mark.skipif(not hasattr(os, 'SCHED_IDLE'), reason='the idle priority is a Linux scheduling policy')
@pytest.mark.parametrize('idle', [True, False])
def test_the_background_thread_of_an_async_save_writes_at_idle_priority(tmp_path, idle):
    _, _, vc = make_model()
    with ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False, async_save=True, idle_priority=idle) as ckpt:
        release, undo = worker.paused_commits()
        try:
            ckpt.save(vc, 1)
            # orbax's thread that writes this save, started by the save call (it runs until released)
            writer = [t for t in threading.enumerate() if t.name == 'async_save']
            policy = os.sched_getscheduler(writer[0].native_id)
        finally:
            release.set()
            undo()
    assert len(writer) == 1 and policy == (os.SCHED_IDLE if idle else os.SCHED_OTHER)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread is left as it was


@contextlib.contextmanager
def small_disk(tmp_path: Path):
    """(directory, fill): fill() leaves the directory's file system almost full, so the next save cannot be
    written: a 4 MB tmpfs filled to 64 KB of free space where it can be mounted (as root), else a writer that
    raises OSError(ENOSPC) after its first array."""
    directory = tmp_path / 'disk'
    directory.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4M', 'tmpfs', str(directory)],
                             capture_output=True).returncode == 0 if os.geteuid() == 0 else False

    undo = []

    def fill():
        if mounted:
            free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
            with open(directory / 'filler', 'wb') as f:
                f.write(b'\0' * (free - 64 * 1024))
        else:
            def full():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            undo.append(worker.hold('write', full))

    try:
        yield directory, fill
    finally:
        for f in undo:
            f()
        if mounted:
            subprocess.run(['umount', '-l', str(directory)], check=True)


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('async_save, raised_by', [(False, 'save'), (True, 'wait'), (True, 'next save'),
                                                   (True, 'close')])
def test_full_disk_fails_the_save_naming_it_and_keeps_the_previous_checkpoint(tmp_path, async_save, raised_by):
    rng = np.random.RandomState(0)
    big = {'w': objax.TrainVar(jn.asarray(rng.normal(size=(256, 1024)).astype(np.float32)))}  # 1 MB, incompressible
    vc = objax.VarCollection(big)
    with small_disk(tmp_path) as (directory, fill):
        ckpt = ShardedCheckpoint(directory, keep_ckpts=1, verbose=False, async_save=async_save)
        ckpt.save(vc, 1)
        ckpt.wait()
        first = values(vc)
        vc['w'].assign(vc['w'].value + 1)
        fill()
        with pytest.raises(OSError) as error:
            ckpt.save(vc, 2)
            # with async_save, the background save's error is raised by the next call that waits for it
            {'save': lambda: None, 'wait': ckpt.wait, 'next save': lambda: ckpt.save(vc, 3), 'close': ckpt.close}[
                raised_by]()
        assert error.value.errno == errno.ENOSPC
        assert f'saving checkpoint 2 to {directory / "sharded" / "2"} failed' in str(error.value)
        assert 'previous checkpoints are kept' in str(error.value)
        ckpt.wait()  # raised once
        assert ckpt.indices() == [1]  # nor was checkpoint 3 saved by the call that raised
        vc['w'].assign(jn.zeros_like(vc['w'].value))
        assert ckpt.restore(vc)[0] == 1
        assert_values(vc, first)
        ckpt.close()
        assert os.listdir(directory / 'sharded') == ['1']  # nothing of 2 is left


def _killed(tmp_path: Path, error: str, victims) -> None:
    """Checks that the workers died by the SIGKILL of `victims` during the save, then that the checkpoint left
    restores the first save's values exactly, and that saving again in that directory works."""
    assert 'exited with -9' in error, error
    assert [os.path.exists(tmp_path / f'killed{i}') for i in victims] == [True] * len(victims), error
    saved = np.load(tmp_path / 'values.npz')
    fresh = worker.build(7)  # other values, one device
    ckpt = ShardedCheckpoint(tmp_path / 'ckpt', keep_ckpts=1, verbose=False)
    assert ckpt.indices() == [1]
    assert ckpt.restore(fresh)[0] == 1
    assert_values(fresh, {k: saved[f'1:{k}'] for k in fresh.keys()})
    ckpt.save(worker.build(2), 2)  # the killed save's leftovers do not stand in the way
    assert ckpt.restore(fresh)[0] == 2 and ckpt.indices() == [2]
    assert_values(fresh, {k: saved[f'2:{k}'] for k in fresh.keys()})
    ckpt.close()


@pytest.mark.parametrize('mode', ['sync', 'async'])
@pytest.mark.parametrize('where', ['write', 'commit'])
def test_sigkill_during_a_save_leaves_the_previous_checkpoint(tmp_path, mode, where):
    error = run_workers(str(WORKER), 1, 0, tmp_path, lambda i: f'{tmp_path},{mode},{where},0', TIMEOUT_S)
    _killed(tmp_path, error, [0])


@pytest.mark.slow
@pytest.mark.timeout(3 * TIMEOUT_S + 60)
@pytest.mark.parametrize('mode, where, victim', [('async', 'write', 1), ('sync', 'commit', 0)])
def test_sigkill_of_one_of_two_processes_during_a_save(tmp_path, mode, where, victim):
    for _ in range(3):
        error = run_workers(str(WORKER), 2, free_port(), tmp_path, lambda i: f'{tmp_path},{mode},{where},{victim}',
                            TIMEOUT_S)
        if 'Failed to add port' not in error:  # retry only when another program took the port meanwhile
            break
    _killed(tmp_path, error, [victim])
