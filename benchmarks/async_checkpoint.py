"""Training while a sharded checkpoint is written: objax.io.ShardedCheckpoint(async_save=True) against the
blocking save, on 8 virtual CPU devices, in one process, interleaved.

The model is an MLP (widths 1024-2048-2048-1024 by default) trained with Adam in an objax.Jit, every variable and
Adam slot split 8 ways by objax.sharding's FSDP rule: about 100 MB of state, each save writes all of it. Each
repeat runs, in turn (alternating the order):
  - normal: `--steps` training steps, no save;
  - for each kind of save below: one save, then training steps until the save is complete (its directory appears;
    orbax renames it last), then `--steps` more.
Every step is waited for (step latency). Prints the median normal step and, for each kind of save (asynchronous
with orbax's zstd compression, asynchronous without, blocking): how long the call blocks and how long until the
checkpoint is complete (medians), and the mean step that started while it was being written, against the normal
step (target <= 1.15). The asynchronous saves run their threads at idle priority (ShardedCheckpoint's default), or
at normal priority with --normal-priority (tensorstore's threads are shared by the whole process, so the two are
compared in separate runs).
Usage: python benchmarks/async_checkpoint.py [--batch 64] [--widths 1024,2048,2048,1024] [--steps 5] [--repeats 7]
    [--normal-priority]
"""

import os

os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import objax  # noqa: E402
from objax.sharding import fsdp, make_mesh, shard  # noqa: E402


def build(widths, batch: int):
    """(vc, step, x): the MLP with Adam laid out FSDP on 8 devices, its jitted step and a global batch."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [objax.nn.Linear(n_in, n_out)] + ([objax.functional.relu] if i < len(widths) - 2 else [])
    model = objax.nn.Sequential(layers)
    opt = objax.optimizer.Adam(model.vars())
    vc = model.vars() + opt.vars()
    mesh = make_mesh({'data': 8})
    shard(vc, mesh, rules=[fsdp(mesh)])
    gv = objax.GradValues(lambda x: ((model(x) - x) ** 2).mean(), model.vars())

    def train_op(x):
        grads, (loss,) = gv(x)
        opt(1e-4, grads)
        return loss

    x = np.random.RandomState(0).normal(size=(batch, widths[0])).astype(np.float32)
    return vc, objax.Jit(train_op, gv.vars() + opt.vars()), objax.util.make_global_batch(x, 'data', mesh=mesh)


def timed_step(step, x) -> float:
    start = time.perf_counter()
    jax.block_until_ready(step(x))
    return time.perf_counter() - start


def save_and_train(ckpt, vc, idx: int, step, x, steps: int) -> dict:
    """Saves `vc` as checkpoint `idx`, then trains: while the save is written (until its directory appears,
    orbax renames it last; nothing for a blocking save), then `steps` more steps."""
    start = time.perf_counter()
    path = ckpt.save(vc, idx)
    out = {'blocking': time.perf_counter() - start, 'during': [], 'after': []}
    while not os.path.isdir(path):
        out['during'].append(timed_step(step, x))
    out['complete'] = time.perf_counter() - start
    out['after'] = [timed_step(step, x) for _ in range(steps)]
    ckpt.wait()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--widths', default='1024,2048,2048,1024')
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--normal-priority', action='store_true',
                        help='asynchronous saves write at normal priority (idle_priority=False)')
    parser.add_argument('--logdir', default='',
                        help='where to save (default: a temporary directory, removed at the end)')
    args = parser.parse_args()
    assert jax.device_count() == 8, jax.device_count()
    vc, step, x = build([int(w) for w in args.widths.split(',')], args.batch)
    nbytes = sum(v.value.nbytes for v in {id(v.value): v for v in vc}.values())
    logdir = args.logdir or tempfile.mkdtemp(prefix='objax_async_ckpt_')
    idle = not args.normal_priority
    modes = {'async': dict(async_save=True, idle_priority=idle),
             'async, compress=False': dict(async_save=True, compress=False, idle_priority=idle),
             'sync': dict(async_save=False)}
    checkpoints = {mode: objax.io.ShardedCheckpoint(os.path.join(logdir, str(i)), keep_ckpts=1, verbose=False,
                                                    **kwargs) for i, (mode, kwargs) in enumerate(modes.items())}
    print(f'MLP {args.widths}, Adam, batch {args.batch}: {nbytes / 1e6:.1f} MB of state FSDP over 8 CPU devices '
          f'on {os.cpu_count()} cores; saving to {logdir}; {args.repeats} repeats, interleaved')
    for _ in range(3):
        timed_step(step, x)
    for ckpt in checkpoints.values():  # orbax's first save loads and compiles what it needs
        ckpt.save(vc, 0)
        ckpt.wait()
    normal, runs = [], {mode: [] for mode in modes}
    for r in range(1, args.repeats + 1):
        order = ['normal'] + list(modes)
        for mode in order if r % 2 else order[::-1]:
            if mode == 'normal':
                normal.extend(timed_step(step, x) for _ in range(args.steps))
            else:
                runs[mode].append(save_and_train(checkpoints[mode], vc, r, step, x, args.steps))
    for ckpt in checkpoints.values():
        ckpt.close()
    if not args.logdir:
        shutil.rmtree(logdir)
    base = statistics.median(normal)
    print(f'normal step (median of {len(normal)}): {1e3 * base:.1f} ms')
    print(f'{"save":>22} | {"call blocks (ms)":>16} | {"complete after (ms)":>19} | {"steps meanwhile":>15} | '
          f'{"their mean (ms)":>15} | {"/ normal":>8} | {"median / normal":>15}')
    for mode, results in runs.items():
        during = [t for res in results for t in res['during']]
        mean = statistics.mean(during) if during else float('nan')
        median = statistics.median(during) if during else float('nan')
        print(f'{mode:>22} | {1e3 * statistics.median(res["blocking"] for res in results):>16.1f} | '
              f'{1e3 * statistics.median(res["complete"] for res in results):>19.1f} | {len(during):>15d} | '
              f'{1e3 * mean:>15.1f} | {mean / base:>8.2f} | {median / base:>15.2f}')


if __name__ == '__main__':
    main()
