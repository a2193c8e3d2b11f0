"""objax.util.TrainingRun: a run stopped (request_stop, SIGTERM) or abandoned after its last checkpoint (as a
SIGKILL leaves it) and started again ends with the values of a run never interrupted; the run state lives in
the checkpoint file itself; wrong checkpoints and wrong loops are refused. The examples' tests
(tests/examples) kill real processes."""

import os
import signal

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.util.training_run import STATE_NAME

STEPS, EPOCHS = 4, 3  # 12 steps in all


class Abandon(Exception):
    """Stands for a SIGKILL: the run ends where it is, nothing more is saved."""


def train(logdir, stop_at=None, abandon_at=None, sharded=False, save_every=3, sigterm=False):
    """Trains a small model with dropout (its own generator), batch norm and Adam on batches in an order that follows
    from the position, with noise from a numpy_rng and from objax.random.DEFAULT_GENERATOR (in no collection of the
    model), keeping the losses in run.state; returns (run, every value saved, as numpy)."""
    objax.random.DEFAULT_GENERATOR.seed(0)
    model = objax.nn.Sequential([objax.nn.Linear(3, 8), objax.nn.BatchNorm0D(8),
                                 objax.nn.Dropout(0.5, objax.random.Generator(2)),
                                 objax.nn.Linear(8, 1)])
    opt = objax.optimizer.Adam(model.vars())
    gv = objax.GradValues(lambda x, y: ((model(x, training=True) - y) ** 2).mean(), model.vars())

    def step_fn(x, y):
        g, v = gv(x, y)
        opt(0.01, g)
        return v[0]

    step_fn = objax.Jit(step_fn, gv.vars() + opt.vars())
    data = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    with objax.util.TrainingRun(logdir, model.vars() + opt.vars(), EPOCHS, STEPS, save_every=save_every,
                                sharded=sharded, verbose=False) as run:
        noise = run.numpy_rng('noise', 1)
        losses = run.state.setdefault('losses', [])
        for epoch in run.epochs():
            order = np.random.default_rng([0, epoch]).permutation(16)
            for step in run.steps():
                batch = data[order[4 * step:4 * step + 4]]
                x = batch[:, :3] + noise.normal(size=(4, 3)).astype(np.float32) + objax.random.normal((4, 3))
                losses.append(float(step_fn(x, batch[:, 3:])))
                if run.global_step + 1 == stop_at:
                    if sigterm:
                        os.kill(os.getpid(), signal.SIGTERM)
                    else:
                        run.request_stop()
                if run.global_step + 1 == abandon_at:
                    raise Abandon
    return run, {k: np.asarray(v.value) for k, v in run.vc.items()}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    return train(tmp_path_factory.mktemp('reference'))


def test_stopped_then_abandoned_then_resumed_ends_like_a_run_never_interrupted(tmp_path, reference):
    with pytest.raises(SystemExit) as stop:
        train(tmp_path, stop_at=5)  # mid-epoch 1, not a save step
    assert stop.value.code == 0
    with pytest.raises(Abandon):
        train(tmp_path, abandon_at=11)  # epoch 2, step 2: the last save was at step 9
    assert objax.io.Checkpoint(tmp_path, keep_ckpts=2).indices() == [8, 9]  # end of epoch 1; save_every 3
    run, values = train(tmp_path)
    assert run.resumed_from.endswith('0000000009.npz') and not run.stopped
    assert_same(values, reference[1])
    assert run.state['losses'] == reference[0].state['losses'] and len(run.state['losses']) == 12
    assert (run.epoch, run.step, run.global_step) == (EPOCHS, 0, 12)


def test_sigterm_saves_at_the_next_step_and_exits_0(tmp_path, reference):
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        train(tmp_path, stop_at=2, sigterm=True, save_every=None)
    assert stop.value.code == 0 and signal.getsignal(signal.SIGTERM) is handler  # handler given back
    assert objax.io.Checkpoint(tmp_path, keep_ckpts=2).indices() == [2]
    run, values = train(tmp_path, save_every=None)
    assert_same(values, reference[1])
    assert signal.getsignal(signal.SIGTERM) is handler


def test_sharded_checkpoints_resume_exactly(tmp_path, reference):
    with pytest.raises(Abandon):
        train(tmp_path, abandon_at=8, sharded=True)  # the last save was at step 6
    assert objax.io.ShardedCheckpoint(tmp_path, keep_ckpts=2).indices() == [4, 6]
    run, values = train(tmp_path, sharded=True)
    assert run.resumed_from == os.path.join(tmp_path, 'sharded', '6')
    assert_same(values, reference[1])


def test_the_run_state_is_an_entry_of_the_checkpoint_file(tmp_path, reference):
    train(tmp_path)
    with np.load(tmp_path / 'ckpt' / '0000000012.npz') as f:
        names = list(f['names'])
        state = f[str(names.index(STATE_NAME))]
    assert b'"global_step": 12' in state.tobytes() and b'"noise": {' in state.tobytes()
    # A run started again after the end trains nothing and keeps the values.
    run, values = train(tmp_path)
    assert list(run.epochs()) == [] and run.global_step == 12
    assert_same(values, reference[1])


def test_a_corrupted_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference):
    with pytest.raises(Abandon):
        train(tmp_path, abandon_at=8)
    (tmp_path / 'ckpt' / '0000000006.npz').write_bytes(b'not an npz')
    with pytest.warns(UserWarning, match='0000000006.npz is unreadable, trying an older checkpoint'):
        run, values = train(tmp_path)
    assert run.resumed_from.endswith('0000000004.npz')
    assert_same(values, reference[1])


def test_refuses_checkpoints_it_did_not_write_and_other_epoch_lengths(tmp_path):
    vc = objax.VarCollection({'w': objax.TrainVar(jn.zeros(2))})
    objax.io.Checkpoint(tmp_path / 'plain', keep_ckpts=1).save(vc, 1)
    with pytest.raises(ValueError, match="was not saved by objax.util.TrainingRun"):
        objax.util.TrainingRun(tmp_path / 'plain', vc, 1, 4, verbose=False)
    with objax.util.TrainingRun(tmp_path / 'run', vc, 1, 4, save_every=2, verbose=False) as run:
        for _ in run.epochs():
            for step in run.steps():
                if step == 2:
                    break
            break
    with pytest.raises(ValueError, match='saved after step 2 of an epoch of 4 steps; this run has 2 steps'):
        objax.util.TrainingRun(tmp_path / 'run', vc, 1, 2, verbose=False)
    with pytest.raises(ValueError, match='save_every'):
        objax.util.TrainingRun(tmp_path / 'other', vc, 1, 2, save_every=0)


def test_an_epoch_must_run_all_its_steps(tmp_path):
    vc = objax.VarCollection({'w': objax.TrainVar(jn.zeros(2))})
    with objax.util.TrainingRun(tmp_path, vc, 2, 3, verbose=False) as run:
        with pytest.raises(RuntimeError, match='epoch 0 ended after 1 of its 3 steps'):
            for _ in run.epochs():
                for step in run.steps():
                    if step == 1:
                        break


def test_prints_where_it_resumes_and_stops(tmp_path, capsys):
    vc = objax.VarCollection({'w': objax.TrainVar(jn.zeros(2))})
    with pytest.raises(SystemExit):
        with objax.util.TrainingRun(tmp_path, vc, 1, 4) as run:
            for _ in run.epochs():
                for _ in run.steps():
                    run.request_stop()
    path = tmp_path / 'ckpt' / '0000000001.npz'
    assert capsys.readouterr().out == (f'Stopping after 1 steps (epoch 0, step 1) as requested: saved {path}; run '
                                       f'the same command to resume\n')
    objax.util.TrainingRun(tmp_path, vc, 1, 4).close()
    assert capsys.readouterr().out == f'Resuming from {path}: 1 steps done (epoch 0, step 1)\n'
