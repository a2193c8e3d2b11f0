"""Data-parallel SGD step on 1, 2, 4, 8 virtual CPU devices: objax.Parallel vs hand-written jax.jit + NamedSharding.

Same model (MLP, softmax cross-entropy), same fixed global batch, same devices. The objax step is the usual
Objax 1.8 code: Parallel(GradValues + pmean of the gradients + SGD). The reference is one jax.jit whose
parameters are replicated and whose batch is split on the device axis by NamedSharding (XLA inserts the
gradient all-reduce). Each device count runs in a fresh process of this script, with
XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX is imported. Every step is waited for
(step latency; XLA's CPU collectives can deadlock with dozens of steps queued). Prints a table of median
step times, the overhead ratio (objax / hand-written; target <= 1.10) and how far the two runs' parameters
ended apart (same steps, so only float reassociation; the run fails above 1e-3).
Usage: python benchmarks/parallel_scaling.py [--batch 2048] [--width 256] [--depth 3] [--steps 30] [--repeats 5]
"""

import argparse
import json
import os
import subprocess
import sys

NCLASS, LR = 10, 0.01


def child(args) -> dict:
    os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={args.devices}'
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    import statistics
    import time

    import jax
    import jax.numpy as jn
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import objax
    from objax.functional.parallel import pmean

    assert jax.device_count() == args.devices, (jax.device_count(), args.devices)

    def cross_entropy(logits, labels):
        return -(jax.nn.log_softmax(logits) * jax.nn.one_hot(labels, NCLASS)).sum(1).mean()

    layers = [objax.nn.Linear(args.width, args.width) for _ in range(args.depth)] + [
        objax.nn.Linear(args.width, NCLASS)]

    def forward(x):
        for layer in layers[:-1]:
            x = objax.functional.relu(layer(x))
        return layers[-1](x)

    vc = objax.VarCollection()
    for i, layer in enumerate(layers):
        vc.update(layer.vars(f'layer{i}'))
    gv = objax.GradValues(lambda x, y: cross_entropy(forward(x), y), vc)
    opt = objax.optimizer.SGD(vc)

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(LR, [pmean(g) for g in grads])
        return pmean(values[0])

    step = objax.Parallel(train_op, gv.vars() + opt.vars(), reduce=lambda x: x[0])

    mesh = Mesh(np.array(jax.devices()), ('device',))
    replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P('device'))
    params = jax.device_put([tuple(layer.vars().tensors()) for layer in layers], replicated)

    def jax_forward(params, x):
        for b, w in params[:-1]:  # Linear.vars() order: b, w
            x = jax.nn.relu(jn.dot(x, w) + b)
        b, w = params[-1]
        return jn.dot(x, w) + b

    @jax.jit
    def jax_step(params, x, y):
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(jax_forward(p, x), y))(params)
        return jax.tree.map(lambda p, g: p - LR * g, params, grads), loss

    rng = np.random.default_rng(0)
    x = jax.device_put(rng.normal(size=(args.batch, args.width)).astype(np.float32), batched)
    y = jax.device_put(rng.integers(0, NCLASS, size=(args.batch,)), batched)
    state = {'params': params}

    def run_jax():
        state['params'], loss = jax_step(state['params'], x, y)
        return loss

    def timed(fn) -> float:
        # Each step is waited for: XLA's CPU collectives can deadlock when dozens of steps are queued.
        jax.block_until_ready(fn())
        start = time.perf_counter()
        for _ in range(args.steps):
            jax.block_until_ready(fn())
        return (time.perf_counter() - start) / args.steps

    with vc.replicate():
        objax_loss, jax_loss = float(step(x, y)), float(run_jax())
        objax_times, jax_times = [], []
        for _ in range(args.repeats):
            objax_times.append(timed(lambda: step(x, y)))
            jax_times.append(timed(run_jax))
    # Both did the same number of identical steps: their parameters must agree.
    diff = max(float(jn.abs(jn.asarray(a) - jn.asarray(b)).max())
               for a, b in zip(vc.tensors(), jax.tree.leaves(state['params'])))
    assert abs(objax_loss - jax_loss) < 1e-4 and diff < 1e-3, (objax_loss, jax_loss, diff)
    return {'devices': args.devices, 'objax_ms': 1e3 * statistics.median(objax_times),
            'jax_ms': 1e3 * statistics.median(jax_times), 'param_diff': diff}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=2048)
    parser.add_argument('--width', type=int, default=256)
    parser.add_argument('--depth', type=int, default=3)
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--devices', type=int, default=0, help='internal: run one device count and print JSON')
    args = parser.parse_args()
    if args.devices:
        print(json.dumps(child(args)))
        return
    print(f'MLP width {args.width} depth {args.depth}, global batch {args.batch}, {os.cpu_count()} CPU cores; '
          f'median of {args.repeats} x {args.steps} steps')
    print(f'{"devices":>7} | {"objax.Parallel ms":>17} | {"jax.jit+NamedSharding ms":>24} | {"ratio":>5} | '
          f'{"max |param diff|":>16}')
    for n in (1, 2, 4, 8):
        argv = [sys.executable, __file__, '--devices', str(n)] + [
            f'--{k}={getattr(args, k)}' for k in ('batch', 'width', 'depth', 'steps', 'repeats')]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f'{n} devices: the run failed ({proc.returncode}):\n{proc.stderr[-3000:]}')
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f'{n:>7} | {r["objax_ms"]:>17.3f} | {r["jax_ms"]:>24.3f} | {r["objax_ms"] / r["jax_ms"]:>5.2f} | '
              f'{r["param_diff"]:>16.1e}', flush=True)


if __name__ == '__main__':
    main()
