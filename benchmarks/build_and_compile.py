"""Model construction time, and the first jitted training step's trace + compile time: objax vs numpy / pure JAX.

1. Construction: WRN-28-2, ResNet50 and VGG19 are built in fresh interpreters (a fresh process is what a user
   pays for: nothing compiled yet); the same number of float32 normal values is drawn with numpy in the same
   process, and the ratio is printed. A second build in the same process shows the warm cost.
2. First step: a Momentum training step of WRN-28-2 (batch 32, 32x32 images, BatchNorm in training mode) is
   called once, timed from the call to its result, in a fresh interpreter: `objax.Jit(train_op, vars)` vs
   `jax.jit` applied directly to the same step written as a pure function of the variables' values (the
   variables' values are swapped in, the step runs, the new values are read back: what any wrapper has to do).
   Fresh interpreters alternate between the two; medians are printed with the ratio (objax / jax.jit).
   The persistent compilation cache is off in all of them.

Usage: python benchmarks/build_and_compile.py [--repeats 3] [--models WRN-28-2,ResNet50,VGG19]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = ('WRN-28-2', 'ResNet50', 'VGG19')


def _build(name: str):
    import objax
    if name == 'WRN-28-2':
        return objax.zoo.wide_resnet.WideResNet(3, 10, depth=28, width=2)
    if name == 'ResNet50':
        return objax.zoo.resnet_v2.ResNet50(3, 1000)
    if name == 'VGG19':
        return objax.zoo.vgg.VGG19()
    raise ValueError(f'unknown model {name!r}, expected one of {MODELS}')


def child_build(name: str) -> dict:
    """Builds `name` twice and draws as many normals with numpy; returns the times (seconds)."""
    import jax
    import numpy as np

    import objax  # noqa: F401  (imported before timing)

    start, cpu = time.perf_counter(), time.process_time()
    model = _build(name)
    jax.block_until_ready([v.value for v in model.vars().values()])
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
    count = sum(int(np.prod(v.value.shape)) for v in model.vars().values() if not isinstance(v, objax.RandomState))
    del model
    start = time.perf_counter()
    model = _build(name)
    jax.block_until_ready([v.value for v in model.vars().values()])
    second = time.perf_counter() - start
    del model
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    values = rng.standard_normal(count, dtype=np.float32)
    numpy_time = time.perf_counter() - start
    del values
    return {'first': first, 'first_cpu': first_cpu, 'second': second, 'numpy': numpy_time, 'count': count}


def _pure(fn, vc):
    """fn as a pure function (values, *args) -> (new values, output) of the distinct variables of vc."""
    import objax
    seen, variables = set(), []
    for v in vc.values():
        if not isinstance(v, objax.TrainRef) and id(v) not in seen:  # a TrainRef reads its TrainVar
            seen.add(id(v))
            variables.append(v)

    def pure(values, *args):
        old = [v.value for v in variables]
        try:
            for v, x in zip(variables, values):
                v.assign(x)
            out = fn(*args)
            return [v.value for v in variables], out
        finally:
            for v, x in zip(variables, old):
                v.assign(x)

    return pure, variables


def child_step(kind: str) -> dict:
    """Times the first and the second call of a WRN-28-2 Momentum step under objax.Jit or jax.jit."""
    import jax
    import jax.numpy as jn
    import numpy as np

    import objax

    jax.config.update('jax_enable_compilation_cache', False)
    model = objax.zoo.wide_resnet.WideResNet(3, 10, depth=28, width=2)
    opt = objax.optimizer.Momentum(model.vars())

    def loss(x, y):
        logits = model(x, training=True)
        return objax.functional.loss.cross_entropy_logits_sparse(logits, y).mean()

    gv = objax.GradValues(loss, model.vars())

    def train_op(x, y, lr):
        grads, values = gv(x, y)
        opt(lr, grads)
        return values

    rng = np.random.default_rng(0)
    x = jn.asarray(rng.normal(size=(32, 3, 32, 32)).astype(np.float32))
    y = jn.asarray(rng.integers(0, 10, size=32))
    lr = jn.asarray(0.1, jn.float32)
    jax.block_until_ready((x, y, lr))
    vc = gv.vars() + opt.vars()
    if kind == 'objax':
        step = objax.Jit(train_op, vc)
        call = lambda: step(x, y, lr)  # noqa: E731
    else:
        pure, variables = _pure(train_op, vc)
        jitted = jax.jit(pure)
        state = {'values': [v.value for v in variables]}

        def call():
            state['values'], out = jitted(state['values'], x, y, lr)
            return out
    start, cpu = time.perf_counter(), time.process_time()
    jax.block_until_ready(call())
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    jax.block_until_ready(call())
    second = time.perf_counter() - start
    return {'first': first, 'first_cpu': first_cpu, 'second': second}


def _run_child(*args: str) -> dict:
    env = dict(os.environ, JAX_ENABLE_COMPILATION_CACHE='false')
    proc = subprocess.run([sys.executable, __file__, '--child', *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f'child {args} failed:\n{proc.stderr}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=int, default=3, help='fresh processes per measurement (median kept)')
    parser.add_argument('--models', default=','.join(MODELS), help='comma-separated models to build')
    parser.add_argument('--child', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = child_build(args.child[1]) if args.child[0] == 'build' else child_step(args.child[1])
        print(json.dumps(result))
        return

    import jax
    print(f'jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; medians of '
          f'{args.repeats} fresh processes')
    print()
    print(f'{"model":>9} {"values":>12} {"objax build (s)":>16} {"(CPU s)":>8} {"2nd build (s)":>14} '
          f'{"numpy (s)":>10} {"ratio":>7}')
    for name in args.models.split(','):
        runs = [_run_child('build', name) for _ in range(args.repeats)]
        first, cpu, second, numpy_time = (statistics.median(r[k] for r in runs)
                                          for k in ('first', 'first_cpu', 'second', 'numpy'))
        print(f'{name:>9} {runs[0]["count"]:12,d} {first:16.3f} {cpu:8.3f} {second:14.3f} {numpy_time:10.3f} '
              f'{first / numpy_time:7.1f}')
    print()
    runs = {'objax': [], 'jax': []}
    for i in range(args.repeats):  # alternate which goes first
        for kind in (('objax', 'jax') if i % 2 == 0 else ('jax', 'objax')):
            runs[kind].append(_run_child('step', kind))
    first, cpu, second = ({k: statistics.median(r[key] for r in v) for k, v in runs.items()}
                          for key in ('first', 'first_cpu', 'second'))
    print('WRN-28-2 Momentum step, batch 32x3x32x32 (first call = trace + compile + one step)')
    print(f'{"":>10} {"first call (s)":>15} {"(CPU s)":>8} {"second call (s)":>16}')
    for kind, label in (('objax', 'objax.Jit'), ('jax', 'jax.jit')):
        print(f'{label:>10} {first[kind]:15.3f} {cpu[kind]:8.3f} {second[kind]:16.4f}')
    print(f'{"ratio":>10} {first["objax"] / first["jax"]:15.3f} {cpu["objax"] / cpu["jax"]:8.3f} '
          f'{second["objax"] / second["jax"]:16.3f}')


if __name__ == '__main__':
    main()
