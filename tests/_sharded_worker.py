"""One process of the 2-process sharded training test (tests/test_sharding_multihost.py); also holds the model
and data of that test's single-process reference.

Usage: python tests/_sharded_worker.py PROCESS_ID NUM_PROCESSES PORT OUTDIR
Sets its own XLA_FLAGS (2 CPU devices), joins the others through jax.distributed on 127.0.0.1:PORT (gloo CPU
collectives), trains with FSDP over the devices of all processes on its rows of the global batch, writes a
ShardedCheckpoint to OUTDIR/ckpt and (process 0) the final values to OUTDIR/values.npz.
"""

import os
import sys

import numpy as np

LOCAL_DEVICES, STEPS, LR, BATCH = 2, 5, 0.05, 16
SIZES = (12, 16, 8)


def batch():
    """The global batch (x, y), the same on every process."""
    rng = np.random.RandomState(5)
    return (rng.normal(size=(BATCH, SIZES[0])).astype(np.float32),
            rng.normal(size=(BATCH, SIZES[-1])).astype(np.float32))


def build():
    """(vc, jitted training step): an MLP with fixed initial values and Adam."""
    import jax.numpy as jn

    import objax

    model = objax.nn.Sequential([objax.nn.Linear(SIZES[0], SIZES[1]), objax.functional.tanh,
                                 objax.nn.Linear(SIZES[1], SIZES[2])])
    rng = np.random.RandomState(1)
    for v in model.vars().subset(objax.TrainVar):
        v.assign(jn.asarray(rng.normal(size=v.value.shape).astype(np.float32) * 0.4))
    opt = objax.optimizer.Adam(model.vars())
    gv = objax.GradValues(lambda x, y: ((model(x) - y) ** 2).mean(), model.vars())

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(LR, grads)
        return values[0]

    vc = model.vars() + opt.vars()
    return vc, objax.Jit(train_op, vc)


def main(process_id: int, num_processes: int, port: int, outdir: str):
    os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={LOCAL_DEVICES}'
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import jax

    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=num_processes,
                               process_id=process_id, initialization_timeout=60,
                               coordinator_bind_address=f'127.0.0.1:{port}')
    import objax
    from objax.sharding import fsdp, make_mesh, shard
    from objax.util import gather_to_host, make_global_batch, multi_host_barrier

    mesh = make_mesh({'data': -1})
    assert mesh.devices.size == LOCAL_DEVICES * num_processes
    vc, step = build()
    shard(vc, mesh, rules=[fsdp(mesh)])
    x, y = batch()
    rows = BATCH // num_processes
    local = (x[process_id * rows:(process_id + 1) * rows], y[process_id * rows:(process_id + 1) * rows])
    gx, gy = make_global_batch(local, 'data', mesh=mesh)
    losses = [float(step(gx, gy)) for _ in range(STEPS)]
    # Every FSDP-sharded value stays split over all 4 devices: this process holds 2 quarters of it.
    w = vc['(Sequential)[0](Linear).w'].value
    assert not w.is_fully_addressable and len(w.addressable_shards) == LOCAL_DEVICES
    assert all(s.data.size * mesh.devices.size == w.size for s in w.addressable_shards)
    objax.io.ShardedCheckpoint(os.path.join(outdir, 'ckpt'), keep_ckpts=1, verbose=False).save(vc, STEPS)
    values = gather_to_host([v.value for v in vc.values()])
    if process_id == 0:
        np.savez(os.path.join(outdir, 'values.npz'), losses=np.array(losses), names=np.array(list(vc.keys())),
                 **{f'v{i}': v for i, v in enumerate(values)})
    multi_host_barrier('objax_sharded_test_done')


if __name__ == '__main__':
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
