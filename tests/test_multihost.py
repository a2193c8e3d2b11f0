"""objax.Parallel across 2 processes on 127.0.0.1 (jax.distributed, gloo CPU collectives, 2 devices each), and
the objax.util multi-host helpers in a single process."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import objax
from objax.util import (gather_to_host, get_local_devices, make_global_batch, map_to_device, multi_host_barrier,
                        process_count, process_index)

sys.path.insert(0, os.path.dirname(__file__))
import _multihost_worker as worker  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), '_multihost_worker.py')
NPROC, TIMEOUT_S = 2, 240


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


def _stop(procs):
    """Kills every worker still running (whole process group) and reaps it."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def _tail(path: str) -> str:
    with open(path, errors='replace') as f:
        return f.read()[-3000:]


def _run_workers(tmp_path, port: int) -> str:
    """Runs the workers to completion; returns '' when all succeeded, else what went wrong (with their logs).
    Every worker is killed and reaped before it returns, whatever happened."""
    env = {k: v for k, v in os.environ.items() if k not in ('XLA_FLAGS', 'JAX_PLATFORMS')}
    env['PYTHONPATH'] = os.pathsep.join([os.path.join(os.path.dirname(__file__), '..', 'src'),
                                         env.get('PYTHONPATH', '')])
    logs = [str(tmp_path / f'log{i}.txt') for i in range(NPROC)]
    procs = []
    try:
        for i in range(NPROC):
            with open(logs[i], 'w') as log:
                procs.append(subprocess.Popen(
                    [sys.executable, WORKER, str(i), str(NPROC), str(port), str(tmp_path / f'out{i}.npz')],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + TIMEOUT_S
        while any(p.poll() is None for p in procs):  # a worker that fails ends the run at once
            failed = [(p.returncode, log) for p, log in zip(procs, logs) if p.poll() not in (None, 0)]
            if failed:
                return f'worker exited with {failed[0][0]}:\n{_tail(failed[0][1])}'
            if time.monotonic() > deadline:
                return f'workers timed out after {TIMEOUT_S}s:\n' + '\n'.join(_tail(log) for log in logs)
            time.sleep(0.2)
        bad = [(p.returncode, log) for p, log in zip(procs, logs) if p.returncode]
        return f'worker exited with {bad[0][0]}:\n{_tail(bad[0][1])}' if bad else ''
    finally:
        _stop(procs)


@pytest.mark.slow
@pytest.mark.timeout(3 * TIMEOUT_S + 60)
def test_two_processes_train_like_one(tmp_path):
    for attempt in range(3):
        port = _free_port()
        error = _run_workers(tmp_path, port)
        if 'Failed to add port' not in error:  # retry only when another program took the port meanwhile
            break
    assert not error, error
    assert _port_is_free(port), f'port {port} still taken after the workers ended'
    outs = [str(tmp_path / f'out{i}.npz') for i in range(NPROC)]

    results = [np.load(o) for o in outs]
    nparams = len([k for k in results[0].files if k.startswith('p')])
    for key in ['losses', 'forward'] + [f'p{i}' for i in range(nparams)]:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)  # identical processes

    # Single-process reference: the same model trained on the whole global batch on one device.
    x, y = worker.global_batch(NPROC)
    model, train_op, vc = worker.build()
    step = objax.Jit(train_op, vc)
    ref_losses = [float(step(x, y)) for _ in range(worker.STEPS)]
    np.testing.assert_allclose(results[0]['losses'], ref_losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0]['forward'], np.asarray(model(x)), atol=1e-5)
    for i, ref in enumerate(model.vars().tensors()):
        np.testing.assert_allclose(results[0][f'p{i}'], np.asarray(ref), atol=1e-5, rtol=0)
    assert ref_losses[-1] < ref_losses[0]


def test_single_process_helpers():
    assert process_index() == 0 and process_count() == 1
    assert get_local_devices() == jax.devices() and len(get_local_devices()) == 8
    x = np.arange(48.).reshape(16, 3)
    gx, gs = make_global_batch((x, np.float32(2.)))
    assert gx.shape == (16, 3) and len(gx.sharding.device_set) == 8 and not gx.sharding.is_fully_replicated
    assert gs.shape == () and gs.sharding.is_fully_replicated and len(gs.sharding.device_set) == 8
    np.testing.assert_array_equal(np.asarray(gx.addressable_shards[1].data), x[2:4])
    np.testing.assert_array_equal(gather_to_host({'a': gx})['a'], x)
    np.testing.assert_array_equal(np.asarray(map_to_device(x)), x)
    with pytest.raises(ValueError, match='12 rows.*8 devices'):
        make_global_batch(np.ones((12, 3)))
    multi_host_barrier()  # one process: returns at once
    with pytest.raises(TypeError, match='name must be a str'):
        multi_host_barrier(3)
    # A global batch goes through Parallel unchanged (no copy: it is already laid out on the mesh).
    w = objax.TrainVar(np.ones(3, np.float32))
    out = objax.Parallel(lambda v: v * w.value, objax.VarCollection({'w': w}))(make_global_batch(x))
    np.testing.assert_array_equal(np.asarray(out), x)
