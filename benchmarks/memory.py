"""Peak memory of one training step: objax.Jit against the same step under jax.jit, with and without donation.

Model: an MLP of 4 Linear layers (w -> 2w -> w -> 2w -> w, plus a 10-class head) holding about --size MB of
float32 weights (w = 2048 for the default 128 MB), softmax cross-entropy, batch --batch, SGD (or Momentum with
--opt momentum) with learning rate 0.01. Four variants of the same step, each in its OWN fresh subprocess so that
their peaks do not mix (the weights are drawn with numpy from the same seed in every subprocess):

- objax:          objax.Jit(train_op, gv.vars() + opt.vars()) with its defaults (what a user gets: donate=True).
- objax nodonate: the same with Jit(..., donate=False).
- jax:            the same pure function (params, [momentum], x, y) -> (new state, loss) under jax.jit.
- jax donate:     the same under jax.jit(..., donate_argnums=0): parameters and optimizer state donated.

Two measures per variant:

1. XLA's compiled memory analysis of the executable that runs the step (for objax, the exact jax.jit object
   objax.Jit calls, read from its private attributes `_call_donating`/`_call`, lowered with the arguments
   objax.Jit passes to it: the variables' values `_pure.values()`, x, y).
   peak = argument + output + temp - alias: every input buffer, every output buffer, and XLA's scratch are
   live at once at worst, except that an output written into a donated input (alias) shares its buffer.
   (XLA's own `peak_memory_in_bytes`, which on some backends counts less, is printed in the last column.)
2. The process's memory while running --steps steps (the first one compiles): the peak resident set
   (ru_maxrss, host memory: the whole process, including Python, JAX, compilation, and the weights), and
   its growth over the resident set just before the first call (model and batch built, nothing compiled).
   On Linux the peak is reset (/proc/self/clear_refs) just before the first call, so it covers the steps
   only, not the construction; where that is impossible the table says so and the peak covers the run.
   On an accelerator the host RSS says little about the step; the device allocator's peak_bytes_in_use
   (jax.devices()[0].memory_stats(), where the backend has it; not resettable, so it covers the whole run,
   construction included) is printed as well.

Ratios are to `jax donate`. MB = 2**20 bytes.
Usage: python benchmarks/memory.py [--size 128] [--steps 3] [--batch 32] [--opt sgd|momentum]
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys

import jax
import jax.numpy as jn
import numpy as np

import objax

NCLASS, LR, MOMENTUM = 10, 0.01, 0.9
MB = 2 ** 20
VARIANTS = ('objax', 'objax nodonate', 'jax', 'jax donate')


def width_for(size_mb: float) -> int:
    """w such that the four layers (4 * 2 * w * w float32 values) hold about size_mb MB; a multiple of 64."""
    return max(64, int(round(math.sqrt(size_mb * MB / 32) / 64)) * 64)


def draw_weights(width: int) -> list:
    """The (w, b) pairs of the MLP, drawn with numpy (seed 0) one layer at a time and moved to the device."""
    dims = [width, 2 * width, width, 2 * width, width, NCLASS]
    rng = np.random.default_rng(0)
    params = []
    for nin, nout in zip(dims[:-1], dims[1:]):
        w = rng.standard_normal((nin, nout), dtype=np.float32)
        w *= np.float32(1 / math.sqrt(nin))
        params.append((jn.asarray(w), jn.zeros(nout, jn.float32)))
        del w
    return params


def cross_entropy(logits, labels):
    return -(jax.nn.log_softmax(logits) * jax.nn.one_hot(labels, NCLASS)).sum(1).mean()


class MLP(objax.Module):
    def __init__(self, params: list):
        self.layers = objax.ModuleList()
        while params:  # consumes the list: the layers become the only owners of the arrays
            w, b = params.pop(0)
            # Assigned after construction: a layer keeps its w_init (for its repr), so an initializer that
            # returned `w` would keep a second reference to the weights (and make donation copy them).
            layer = objax.nn.Linear(*w.shape, w_init=lambda shape: jn.zeros(shape, jn.float32))
            layer.w.assign(w)
            layer.b.assign(b)
            self.layers.append(layer)
            del w, b, layer

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = objax.functional.relu(layer(x))
        return self.layers[-1](x)


def objax_variant(params: list, opt: str, donate: bool):
    """Returns (run one step -> loss, the executable's memory analysis)."""
    model = MLP(params)
    optimizer = objax.optimizer.SGD(model.vars()) if opt == 'sgd' else objax.optimizer.Momentum(model.vars(),
                                                                                                 MOMENTUM)
    gv = objax.GradValues(lambda x, y: cross_entropy(model(x), y), model.vars())

    def train_op(x, y):
        grads, values = gv(x, y)
        optimizer(LR, grads)
        return values[0]

    step = objax.Jit(train_op, gv.vars() + optimizer.vars()) if donate else \
        objax.Jit(train_op, gv.vars() + optimizer.vars(), donate=False)

    def analysis(x, y):
        # The jax.jit object objax.Jit calls (with its donation settings) and the arguments it passes to it.
        jitted = step._call_donating if step._call_donating is not None else step._call
        return jitted.lower(step._pure.values(), x, y).compile().memory_analysis()

    return step, analysis


def jax_variant(params: list, opt: str, donate: bool):
    """Returns (run one step -> loss, the executable's memory analysis); `params` is consumed."""

    def forward(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(jn.dot(x, w) + b)
        w, b = params[-1]
        return jn.dot(x, w) + b

    def train_op(state, x, y):
        params, moments = state
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(forward(p, x), y))(params)
        if moments is None:
            return (jax.tree.map(lambda p, g: p - LR * g, params, grads), None), loss
        moments = jax.tree.map(lambda m, g: g + MOMENTUM * m, moments, grads)
        return (jax.tree.map(lambda p, m: p - LR * m, params, moments), moments), loss

    jitted = jax.jit(train_op, donate_argnums=(0,) if donate else ())
    box = [(list(params), None if opt == 'sgd' else jax.tree.map(jn.zeros_like, list(params)))]
    params.clear()

    def step(x, y):
        box[0], loss = jitted(box[0], x, y)
        return loss

    return step, lambda x, y: jitted.lower(box[0], x, y).compile().memory_analysis()


def _rss_now() -> int:
    """Current resident set size in bytes (Linux /proc; elsewhere the peak so far)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except OSError:
        return _rss_peak()


def _rss_peak() -> int:
    """Peak resident set size of this process in bytes (ru_maxrss: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024


def _reset_peak() -> bool:
    """Resets this process's peak resident set (ru_maxrss / VmHWM) to its current size; False if impossible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _device_stats() -> dict:
    stats = jax.devices()[0].memory_stats() or {}
    return {k: stats[k] for k in ('bytes_in_use', 'peak_bytes_in_use') if k in stats}


def worker(variant: str, size_mb: float, steps: int, batch: int, opt: str) -> dict:
    """Runs `steps` steps of one variant in this (fresh) process; returns its measurements."""
    width = width_for(size_mb)
    params = draw_weights(width)
    weight_bytes = sum(w.nbytes + b.nbytes for w, b in params)
    rng = np.random.default_rng(1)
    x = jn.asarray(rng.standard_normal((batch, width), dtype=np.float32))
    y = jn.asarray(rng.integers(0, NCLASS, size=batch))
    build = objax_variant if variant.startswith('objax') else jax_variant
    step, analysis = build(params, opt, donate=variant in ('objax', 'jax donate'))
    del params
    rss_before, device_before = _rss_now(), _device_stats()
    peak_reset = _reset_peak()
    for _ in range(steps):
        loss = step(x, y)
    loss = float(loss)
    jax.block_until_ready(jax.live_arrays())
    rss_peak, device_after = _rss_peak(), _device_stats()
    stats = analysis(x, y)  # after the peak was read: this compilation does not count in it
    if not math.isfinite(loss):
        raise RuntimeError(f'{variant}: loss is {loss}')
    return dict(variant=variant, width=width, weight_bytes=weight_bytes, loss=loss,
                argument=stats.argument_size_in_bytes, output=stats.output_size_in_bytes,
                alias=stats.alias_size_in_bytes, temp=stats.temp_size_in_bytes,
                xla_peak=getattr(stats, 'peak_memory_in_bytes', None),
                rss_before=rss_before, rss_peak=rss_peak, peak_reset=peak_reset,
                device_before=device_before.get('bytes_in_use'),
                device_peak=device_after.get('peak_bytes_in_use'))


def run_fresh(variant: str, args) -> dict:
    """Runs one variant in a new Python process and returns what its worker measured."""
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', variant, '--size', str(args.size),
           '--steps', str(args.steps), '--batch', str(args.batch), '--opt', args.opt]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith('RESULT ')]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f'{variant} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}')
    return json.loads(lines[-1][len('RESULT '):])


def _mb(n) -> str:
    return '-' if n is None else f'{n / MB:.1f}'


def report(results: list) -> None:
    first = results[0]
    print(f'jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}); MLP width '
          f'{first["width"]}, {_mb(first["weight_bytes"])} MB of float32 weights')
    ref = next(r for r in results if r['variant'] == 'jax donate')

    def est(r):
        return r['argument'] + r['output'] + r['temp'] - r['alias']

    def grow(r):
        return r['rss_peak'] - r['rss_before']

    has_device = any(r['device_peak'] is not None for r in results)
    head = (f'{"variant":<15}{"args":>8}{"out":>8}{"temp":>8}{"alias":>8}{"XLA peak":>9}{"ratio":>7}'
            f'{"RSS peak":>9}{"ratio":>7}{"RSS step":>9}{"ratio":>7}{"XLA own":>8}')
    print(head + (f'{"dev peak":>9}{"ratio":>7}' if has_device else ''))
    for r in results:
        line = (f'{r["variant"]:<15}{_mb(r["argument"]):>8}{_mb(r["output"]):>8}{_mb(r["temp"]):>8}'
                f'{_mb(r["alias"]):>8}{_mb(est(r)):>9}{est(r) / est(ref):7.2f}{_mb(r["rss_peak"]):>9}'
                f'{r["rss_peak"] / ref["rss_peak"]:7.2f}{_mb(grow(r)):>9}{grow(r) / max(grow(ref), 1):7.2f}'
                f'{_mb(r["xla_peak"]):>8}')
        if has_device:
            ratio = r['device_peak'] / ref['device_peak'] if r['device_peak'] and ref['device_peak'] else math.nan
            line += f'{_mb(r["device_peak"]):>9}{ratio:7.2f}'
        print(line)
    print('XLA peak = args + out + temp - alias (MB). RSS peak: ru_maxrss of the variant\'s process; RSS step: '
          'its growth over the resident set just before the first step.')
    if not all(r['peak_reset'] for r in results):
        print('The peak RSS could not be reset after construction: it covers the whole run, construction included.')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=float, default=128, help='MB of float32 weights in the MLP')
    parser.add_argument('--steps', type=int, default=3, help='training steps run in each process')
    parser.add_argument('--batch', type=int, default=32, help='batch size')
    parser.add_argument('--opt', choices=('sgd', 'momentum'), default='sgd', help='optimizer')
    parser.add_argument('--worker', choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size <= 0 or args.steps < 1 or args.batch < 1:
        parser.error('--size must be > 0, --steps and --batch >= 1')
    if args.worker:
        print('RESULT ' + json.dumps(worker(args.worker, args.size, args.steps, args.batch, args.opt)))
        return
    report([run_fresh(variant, args) for variant in VARIANTS])


if __name__ == '__main__':
    main()
