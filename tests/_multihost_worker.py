"""One process of the 2-process objax.Parallel test (tests/core/test_parallel_multihost.py); also holds the model
and data that test's single-process reference uses.

Usage: python tests/_multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz
Sets its own XLA_FLAGS (2 CPU devices), joins the others through jax.distributed on 127.0.0.1:PORT with gloo
CPU collectives, trains data-parallel on its rows of the global batch, and saves what it ends with to OUT.npz.
"""

import os
import sys

import numpy as np

LOCAL_DEVICES, ROWS_PER_DEVICE, STEPS, LR = 2, 3, 4, 0.1
SIZES = (5, 8, 3)  # nin, hidden, nout


def global_batch(num_processes: int):
    """The global batch: (x, y) of num_processes * LOCAL_DEVICES * ROWS_PER_DEVICE rows, same on every process."""
    rng = np.random.RandomState(7)
    n = num_processes * LOCAL_DEVICES * ROWS_PER_DEVICE
    return rng.normal(size=(n, SIZES[0])).astype(np.float32), rng.normal(size=(n, SIZES[2])).astype(np.float32)


def build(pmean=None):
    """The model (fixed initial values) and its training step; with `pmean`, gradients are averaged over devices."""
    import jax.numpy as jn

    import objax

    model = objax.nn.Sequential([objax.nn.Linear(SIZES[0], SIZES[1]), objax.functional.tanh,
                                 objax.nn.Linear(SIZES[1], SIZES[2])])
    rng = np.random.RandomState(3)
    for v in model.vars().subset(objax.TrainVar):
        v.assign(jn.asarray(rng.normal(size=v.value.shape).astype(np.float32) * 0.5))
    gv = objax.GradValues(lambda x, y: ((model(x) - y) ** 2).mean(), model.vars())
    opt = objax.optimizer.Momentum(model.vars(), momentum=0.9)

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(LR, [pmean(g) for g in grads] if pmean else grads)
        return pmean(values[0]) if pmean else values[0]

    return model, train_op, gv.vars() + opt.vars()


def main(process_id: int, num_processes: int, port: int, out: str):
    os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={LOCAL_DEVICES}'
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import jax

    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=num_processes,
                               process_id=process_id, initialization_timeout=60,
                               coordinator_bind_address=f'127.0.0.1:{port}')
    import objax
    from objax.functional.parallel import pmean
    from objax.util import (
        gather_to_host,
        get_local_devices,
        make_global_batch,
        multi_host_barrier,
        process_count,
        process_index,
    )

    assert (process_index(), process_count()) == (process_id, num_processes)
    assert len(get_local_devices()) == LOCAL_DEVICES and jax.device_count() == LOCAL_DEVICES * num_processes
    x, y = global_batch(num_processes)
    rows = slice(process_id * LOCAL_DEVICES * ROWS_PER_DEVICE, (process_id + 1) * LOCAL_DEVICES * ROWS_PER_DEVICE)
    x_local, y_local = x[rows], y[rows]

    model, train_op, vc = build(pmean)
    step = objax.Parallel(train_op, vc, reduce=lambda v: v[0])
    losses = []
    for i in range(STEPS):
        # Local rows straight into Parallel, or first made into one global batch: both mean the same.
        args = (x_local, y_local) if i % 2 == 0 else make_global_batch((x_local, y_local))
        losses.append(float(step(*args)))
    forward = gather_to_host(objax.Parallel(model)(x_local))  # concatenated over all processes' devices
    multi_host_barrier()
    params = gather_to_host(model.vars().tensors())
    np.savez(out, losses=np.array(losses), forward=forward, **{f'p{i}': p for i, p in enumerate(params)})
    multi_host_barrier('objax_test_saved')


if __name__ == '__main__':
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
