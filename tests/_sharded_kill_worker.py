"""A process killed with SIGKILL while it writes a ShardedCheckpoint (tests/io/test_sharded_faults.py), and the
hooks into orbax-checkpoint those tests use to stop a save at a chosen point.

Usage: python tests/_sharded_kill_worker.py PROCESS_ID NUM_PROCESSES PORT OUTDIR,MODE,WHERE,VICTIM
Lays a small model out FSDP over the devices of all processes (2 per process; with several processes they join
through jax.distributed on 127.0.0.1:PORT with gloo), saves checkpoint 1 to OUTDIR/ckpt and waits for it, then
changes every value and saves checkpoint 2 (MODE: 'sync' or 'async'). Process VICTIM kills itself with SIGKILL
at WHERE in that second save: 'write' (after the first array's data are written, before the others and the
metadata) or 'commit' (every file written, just before the temporary directory is renamed; only process 0
renames). Process 0 writes the values of both saves to OUTDIR/values.npz first, and every victim writes
OUTDIR/killed<i> just before it dies.
"""

import os
import signal
import sys
import threading

import numpy as np

LOCAL_DEVICES = 2
SIZES = (12, 16, 8)


def hold(where: str, action):
    """Calls `action()` (in the writing thread) when a save reaches `where`: 'write' after each array's data are
    written by tensorstore, 'commit' before the temporary directory is renamed to the checkpoint. Returns a
    function that undoes it."""
    if where == 'write':
        from orbax.checkpoint._src.serialization import serialization as module
        name = 'async_serialize_from_host'

        async def hooked(*args, **kwargs):
            out = await original(*args, **kwargs)
            action()
            return out
    else:
        from orbax.checkpoint._src.path import atomicity as module
        name = 'on_commit_callback'

        async def hooked(*args, **kwargs):
            action()
            return await original(*args, **kwargs)
    original = getattr(module, name)
    setattr(module, name, hooked)
    return lambda: setattr(module, name, original)


def paused_commits():
    """(release, undo): every save stops just before its rename until release (a threading.Event) is set."""
    release = threading.Event()
    undo = hold('commit', lambda: release.wait(120))
    return release, undo


def build(seed: int):
    """An MLP and its Adam state, every value drawn from `seed`."""
    import jax.numpy as jn

    import objax

    model = objax.nn.Sequential([objax.nn.Linear(SIZES[0], SIZES[1]), objax.functional.tanh,
                                 objax.nn.Linear(SIZES[1], SIZES[2])])
    vc = model.vars() + objax.optimizer.Adam(model.vars()).vars()
    rng = np.random.RandomState(seed)
    for v in vc:
        v.assign(jn.asarray(rng.randint(0, 1000, size=v.value.shape).astype(v.value.dtype)))
    return vc


def main(process_id: int, num_processes: int, port: int, spec: str):
    outdir, mode, where, victim = spec.split(',')
    os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={LOCAL_DEVICES}'
    os.environ['JAX_PLATFORMS'] = 'cpu'
    import jax

    if num_processes > 1:
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
        jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=60,
                                   coordinator_bind_address=f'127.0.0.1:{port}')
    import objax
    from objax.sharding import fsdp, make_mesh, shard
    from objax.util import gather_to_host

    mesh = make_mesh({'data': -1})
    ckpt = objax.io.ShardedCheckpoint(os.path.join(outdir, 'ckpt'), keep_ckpts=1, verbose=False,
                                      async_save=mode == 'async')
    saved = {}
    for idx in (1, 2):
        vc = build(idx)
        shard(vc, mesh, rules=[fsdp(mesh)])
        saved.update({f'{idx}:{k}': v for k, v in zip(vc.keys(), gather_to_host([v.value for v in vc.values()]))})
        if idx == 2:
            if process_id == 0:
                np.savez(os.path.join(outdir, 'values.npz'), **saved)
            if process_id == int(victim):
                def die():
                    open(os.path.join(outdir, f'killed{process_id}'), 'w').close()
                    os.kill(os.getpid(), signal.SIGKILL)

                hold(where, die)
        ckpt.save(vc, idx)
        ckpt.wait()
    raise SystemExit(f'process {process_id} was not killed during the save')


if __name__ == '__main__':
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
