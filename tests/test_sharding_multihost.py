"""objax.sharding and objax.io.ShardedCheckpoint across 2 processes x 2 CPU devices (jax.distributed, gloo on
127.0.0.1): FSDP training equals single-process training, and the checkpoint both processes wrote restores on
one process, on 4 devices and on 1 device."""

import os
import sys

import jax
import numpy as np
import pytest

import objax
from objax.sharding import fsdp, make_mesh, shard

sys.path.insert(0, os.path.dirname(__file__))
import _sharded_worker as worker  # noqa: E402
from _workers import free_port, run_workers  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), '_sharded_worker.py')
NPROC, TIMEOUT_S = 2, 240


def _run_workers(outdir, port: int) -> str:
    return run_workers(WORKER, NPROC, port, outdir, lambda i: str(outdir), TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.timeout(3 * TIMEOUT_S + 60)
def test_two_processes_fsdp_and_sharded_checkpoint(tmp_path):
    for _ in range(3):
        error = _run_workers(tmp_path, free_port())
        if 'Failed to add port' not in error:  # retry only when another program took the port meanwhile
            break
    assert not error, error
    saved = np.load(tmp_path / 'values.npz')
    names = list(saved['names'])

    # Single process, one device: the same model trained on the whole batch.
    vc, step = worker.build()
    x, y = worker.batch()
    ref_losses = [float(step(x, y)) for _ in range(worker.STEPS)]
    np.testing.assert_allclose(saved['losses'], ref_losses, rtol=1e-5, atol=1e-6)
    assert list(vc.keys()) == names
    for i, (name, v) in enumerate(vc.items()):
        np.testing.assert_allclose(saved[f'v{i}'], np.asarray(v.value), atol=1e-5, rtol=0, err_msg=name)

    # The checkpoint both processes wrote, restored on 1 process x 4 devices and on 1 device.
    mesh4 = make_mesh({'data': 4}, devices=jax.devices()[:4])
    for devices in (4, 1):
        fresh, _ = worker.build()
        if devices == 4:
            shard(fresh, mesh4, rules=[fsdp(mesh4)])
        idx, _ = objax.io.ShardedCheckpoint(tmp_path / 'ckpt', keep_ckpts=1, verbose=False).restore(fresh)
        assert idx == worker.STEPS
        for i, (name, v) in enumerate(fresh.items()):
            np.testing.assert_array_equal(np.asarray(v.value), saved[f'v{i}'], err_msg=name)
            assert len(v.value.sharding.device_set) == devices
