"""objax.Parallel across 2 processes on 127.0.0.1 (jax.distributed, gloo CPU collectives, 2 devices each), and
the objax.util multi-host helpers in a single process."""

import os
import sys

import jax
import numpy as np
import pytest

import objax
from objax.util import (
    gather_to_host,
    get_local_devices,
    make_global_batch,
    map_to_device,
    multi_host_barrier,
    process_count,
    process_index,
)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _multihost_worker as worker  # noqa: E402
from _workers import free_port, port_is_free, run_workers  # noqa: E402

WORKER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '_multihost_worker.py')
NPROC, TIMEOUT_S = 2, 240


def _run_workers(tmp_path, port: int) -> str:
    return run_workers(WORKER, NPROC, port, tmp_path, lambda i: str(tmp_path / f'out{i}.npz'), TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.timeout(3 * TIMEOUT_S + 60)
def test_two_processes_train_like_one(tmp_path):
    for _ in range(3):
        port = free_port()
        error = _run_workers(tmp_path, port)
        if 'Failed to add port' not in error:  # retry only when another program took the port meanwhile
            break
    assert not error, error
    assert port_is_free(port), f'port {port} still taken after the workers ended'
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
