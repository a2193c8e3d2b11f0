"""Deep models: objax.nn.Stack against an unrolled Sequential, a hand-written jax.lax.scan, Flax NNX and Equinox.

1. First call: an MLP training step (layers Linear(W, W) + relu, plain SGD on the mean squared output, batch 32)
   is jitted and called once, timed from the call to its result (trace + compile + first run), each in a fresh
   interpreter (nothing compiled yet, the persistent compilation cache off), at several depths:
   objax.nn.Stack, the unrolled objax Sequential of the same layers, and the step written by hand in pure JAX
   with the weights stacked and jax.lax.scan over them; at --peer-depths also Flax NNX (layers made by
   nnx.vmap, applied by nnx.scan) and Equinox (layers made by eqx.filter_vmap, applied by jax.lax.scan over
   eqx.partition / eqx.combine). Medians over --repeats fresh interpreters.
2. Step time: the same steps, warm, in one interpreter, interleaved round after round (each round times
   --steps calls of each); medians per step.
3. Peak memory: the training step of 24 residual MLP blocks (x + Linear(relu(Linear(x))), width 128 with a hidden
   layer of 512, batch 16384)
   with Stack(remat=True) and Stack(remat=False), each in a fresh interpreter: its peak resident set size
   (resource.getrusage's ru_maxrss, which includes the interpreter and JAX themselves).

Usage: python benchmarks/deep_stack.py [--depths 8,32,64,128] [--peer-depths 32,128] [--repeats 3]
Flax and Equinox are optional: without them their rows are skipped.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

WIDTH, BATCH, LR = 128, 32, 1e-3


# ------------------------------------------------------------------------------------------ the steps, per impl
def _objax_step(impl: str, depth: int, width: int, remat: bool = False, residual: bool = False):
    """An objax SGD step of `depth` layers: (step function of x, x -> loss)."""
    import jax

    import objax
    from objax.nn import Linear, Sequential, Stack

    class Residual(objax.Module):
        def __init__(self):
            self.inner, self.outer = Linear(width, 4 * width), Linear(4 * width, width)

        def __call__(self, x):
            return x + self.outer(jax.nn.relu(self.inner(x)))

    def layer():
        return Residual() if residual else Sequential([Linear(width, width), jax.nn.relu])

    model = Stack(layer, depth, remat=remat) if impl == 'stack' else Sequential([layer() for _ in range(depth)])
    opt = objax.optimizer.SGD(model.vars())
    gv = objax.GradValues(lambda x: (model(x) ** 2).mean(), model.vars())

    def train(x):
        g, v = gv(x)
        opt(LR, g)
        return v[0]

    return objax.Jit(train, gv.vars() + opt.vars())


def _jax_step(depth: int, width: int):
    """The same step in pure JAX: stacked weights, jax.lax.scan; returns a stateful step(x) wrapper."""
    import jax
    import numpy as np
    rng = np.random.default_rng(0)
    params = {'w': jax.device_put((rng.standard_normal((depth, width, width)) / np.sqrt(width)).astype(np.float32)),
              'b': jax.device_put(np.zeros((depth, width), np.float32))}

    def loss(p, x):
        def body(h, layer):
            return jax.nn.relu(h @ layer['w'] + layer['b']), None

        h, _ = jax.lax.scan(body, x, p)
        return (h ** 2).mean()

    @jax.jit
    def step(p, x):
        v, g = jax.value_and_grad(loss)(p, x)
        return jax.tree.map(lambda a, b: a - LR * b, p, g), v

    state = [params]

    def run(x):
        state[0], v = step(state[0], x)
        return v

    return run


def _nnx_step(depth: int, width: int):
    """Flax NNX: layers made by nnx.vmap (split rngs), applied by nnx.scan, SGD on the nnx.Param state."""
    import jax
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(width, width, rngs=rngs)

        def __call__(self, x):
            return nnx.relu(self.linear(x))

    @nnx.split_rngs(splits=depth)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def create(rngs):
        return Block(rngs)

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.blocks = create(rngs)

        def __call__(self, x):
            @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
            def forward(h, block):
                return block(h)

            return forward(x, self.blocks)

    model = Model(nnx.Rngs(0))

    @nnx.jit
    def step(model, x):
        v, g = nnx.value_and_grad(lambda m: (m(x) ** 2).mean())(model)
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda a, b: a - LR * b, params, g))
        return v

    return lambda x: step(model, x)


def _eqx_step(depth: int, width: int):
    """Equinox: layers made by eqx.filter_vmap, applied by jax.lax.scan over eqx.partition / eqx.combine."""
    import equinox as eqx
    import jax

    keys = jax.random.split(jax.random.PRNGKey(0), depth)
    layers = eqx.filter_vmap(lambda k: eqx.nn.Linear(width, width, key=k))(keys)

    def forward(layers, x):
        dynamic, static = eqx.partition(layers, eqx.is_array)

        def body(h, d):
            return jax.nn.relu(jax.vmap(eqx.combine(d, static))(h)), None

        h, _ = jax.lax.scan(body, x, dynamic)
        return h

    @eqx.filter_jit
    def step(layers, x):
        v, g = eqx.filter_value_and_grad(lambda m: (forward(m, x) ** 2).mean())(layers)
        return eqx.apply_updates(layers, jax.tree.map(lambda a: -LR * a, g)), v

    state = [layers]

    def run(x):
        state[0], v = step(state[0], x)
        return v

    return run


def _make(impl: str, depth: int, width: int):
    if impl in ('stack', 'sequential'):
        return _objax_step(impl, depth, width)
    return {'scan': _jax_step, 'nnx': _nnx_step, 'eqx': _eqx_step}[impl](depth, width)


# ----------------------------------------------------------------------------------------------- the children
def child_first(impl: str, depth: int) -> dict:
    import jax
    import numpy as np
    step = _make(impl, depth, WIDTH)
    x = jax.device_put(np.ones((BATCH, WIDTH), np.float32))
    start = time.perf_counter()
    jax.block_until_ready(step(x))
    return {'first': time.perf_counter() - start}


def child_steps(impls: list, depth: int, rounds: int, steps: int) -> dict:
    import jax
    import numpy as np
    x = jax.device_put(np.ones((BATCH, WIDTH), np.float32))
    made = {impl: _make(impl, depth, WIDTH) for impl in impls}
    for step in made.values():
        for _ in range(2):
            jax.block_until_ready(step(x))
    times = {impl: [] for impl in impls}
    for _ in range(rounds):
        for impl, step in made.items():
            start = time.perf_counter()
            for _ in range(steps):
                out = step(x)
            jax.block_until_ready(out)
            times[impl].append((time.perf_counter() - start) / steps)
    return {impl: statistics.median(t) for impl, t in times.items()}


def child_rss(remat: bool) -> dict:
    import jax
    import numpy as np
    step = _objax_step('stack', 24, 128, remat=remat, residual=True)
    x = jax.device_put(np.random.default_rng(0).standard_normal((16384, 128)).astype(np.float32))
    for _ in range(2):
        jax.block_until_ready(step(x))
    return {'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child(*args) -> dict:
    env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_ENABLE_COMPILATION_CACHE='false')
    proc = subprocess.run([sys.executable, __file__, '--child', json.dumps(args)], capture_output=True, text=True,
                          env=env, timeout=1200)
    if proc.returncode:
        raise RuntimeError(f'child {args} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _available(module: str) -> bool:
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    return subprocess.run([sys.executable, '-c', f'import {module}'], env=env, capture_output=True).returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--depths', default='8,32,64,128')
    parser.add_argument('--peer-depths', default='32,128')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = json.loads(args.child)
        print(json.dumps({'first': child_first, 'steps': child_steps, 'rss': child_rss}[kind](*rest)))
        return
    import jax
    depths = [int(d) for d in args.depths.split(',')]
    peer_depths = [int(d) for d in args.peer_depths.split(',') if d]
    peers = [impl for impl, module in (('nnx', 'flax.nnx'), ('eqx', 'equinox')) if _available(module)]
    print(f'JAX {jax.__version__}, {os.cpu_count()} CPU cores; MLP width {WIDTH}, batch {BATCH}, SGD; medians of '
          f'{args.repeats} fresh interpreters (first call) and of {args.rounds} interleaved rounds (step time)')
    results = {'first': {}, 'step': {}, 'rss': {}}
    print('\nFirst call (trace + compile + run), seconds')
    print(f'{"depth":>6} {"Stack":>8} {"Sequential":>11} {"lax.scan":>9} {"nnx":>8} {"eqx":>8}   Stack/Seq  Stack/scan')
    for depth in depths:
        impls = ['stack', 'sequential', 'scan'] + (peers if depth in peer_depths else [])
        runs = {impl: [] for impl in impls}
        for _ in range(args.repeats):  # alternate the implementations: drifts of the machine hit all alike
            for impl in impls:
                runs[impl].append(_child('first', impl, depth)['first'])
        row = {impl: statistics.median(t) for impl, t in runs.items()}
        results['first'][depth] = row
        names = ('stack', 'sequential', 'scan', 'nnx', 'eqx')
        cell = {impl: f'{row[impl]:.2f}' if impl in row else '-' for impl in names}
        print(f'{depth:>6} {cell["stack"]:>8} {cell["sequential"]:>11} {cell["scan"]:>9} {cell["nnx"]:>8} '
              f'{cell["eqx"]:>8}   {row["stack"] / row["sequential"]:9.2f}  {row["stack"] / row["scan"]:10.2f}')
    first = results['first']
    if 8 in first and 64 in first:
        print(f'Stack first call at 64 layers / at 8: {first[64]["stack"] / first[8]["stack"]:.2f}')
    print('\nStep time (warm), milliseconds per step')
    for depth in sorted(set([max(depths)] + peer_depths)):
        impls = ['stack', 'scan'] + peers
        row = _child('steps', impls, depth, args.rounds, args.steps)
        results['step'][depth] = row
        cells = '  '.join(f'{impl} {row[impl] * 1e3:.3f}' for impl in impls)
        print(f'{depth:>6} layers: {cells}   Stack/scan {row["stack"] / row["scan"]:.2f}')
    print('\nPeak RSS of the 24-block residual MLP step (width 128, hidden 512, batch 16384), MB')
    for remat in (False, True):
        results['rss'][remat] = _child('rss', remat)['rss_mb']
    print(f'Stack(remat=False) {results["rss"][False]:.0f}  Stack(remat=True) {results["rss"][True]:.0f}  '
          f'ratio {results["rss"][True] / results["rss"][False]:.2f}')
    print('\n' + json.dumps(results))


if __name__ == '__main__':
    main()
