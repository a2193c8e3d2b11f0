"""Cost of one jitted SGD training step: objax (GradValues + SGD inside Jit) vs the same step in pure JAX.

A dispatch-bound step (one 4x4 layer, batch 1) and MLPs of width 64 with depth 4 and 32, batch 32, softmax
cross-entropy. Both versions run in the same process,
interleaved, and the median step time of each is printed with their ratio (objax / pure JAX), and the median of
the ratios of the timings taken one after the other ("paired": less moved by a load that changes during the run).
Two pairings:
objax's default Jit (donates the variables' buffers) against jax.jit with donate_argnums, and
Jit(donate=False) against jax.jit without donation.
Usage: python benchmarks/step_overhead.py [--steps 2000] [--repeats 7]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jn
import numpy as np

import objax

LR = 0.01
# (depth, width, batch, classes): one 4x4 layer on one example, where the per-call cost is all there is, then MLPs.
SIZES = ((0, 4, 1, 4), (4, 64, 32, 10), (32, 64, 32, 10))


class MLP(objax.Module):
    def __init__(self, depth: int, width: int, nclass: int):
        self.layers = objax.ModuleList([objax.nn.Linear(width, width) for _ in range(depth)])
        self.head = objax.nn.Linear(width, nclass)

    def __call__(self, x):
        for layer in self.layers:
            x = objax.functional.relu(layer(x))
        return self.head(x)


def cross_entropy(logits, labels):
    return -(jax.nn.log_softmax(logits) * jax.nn.one_hot(labels, logits.shape[-1])).sum(1).mean()


def objax_step(depth: int, width: int, nclass: int, donate: bool):
    model = MLP(depth, width, nclass)
    opt = objax.optimizer.SGD(model.vars())

    def loss(x, y):
        return cross_entropy(model(x), y)

    gv = objax.GradValues(loss, model.vars())

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(LR, grads)
        return values[0]

    return objax.Jit(train_op, gv.vars() + opt.vars(), donate=donate), model.vars().tensors()


def jax_step(params, donate: bool):
    def forward(params, x):
        for b, w in params[:-1]:  # Linear.vars() order: b, w
            x = jax.nn.relu(jn.dot(x, w) + b)
        b, w = params[-1]
        return jn.dot(x, w) + b

    def train_op(params, x, y):
        loss, grads = jax.value_and_grad(lambda p: cross_entropy(forward(p, x), y))(params)
        return jax.tree.map(lambda p, g: p - LR * g, params, grads), loss

    return jax.jit(train_op, donate_argnums=(0,) if donate else ())


def time_calls(fn, steps: int) -> float:
    out = fn()
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def measure(depth: int, width: int, batch: int, nclass: int, steps: int, repeats: int, donate: bool):
    step, tensors = objax_step(depth, width, nclass, donate)
    params = [tuple(jn.array(t, copy=True) for t in tensors[i:i + 2]) for i in range(0, len(tensors), 2)]
    del tensors
    pure = jax_step(params, donate)
    rng = np.random.default_rng(0)
    x = jn.asarray(rng.normal(size=(batch, width)).astype(np.float32))
    y = jn.asarray(rng.integers(0, nclass, size=batch))
    state = {'params': params}

    def pure_call():
        state['params'], loss = pure(state['params'], x, y)
        return loss

    objax_times, jax_times = [], []
    for _ in range(repeats):
        objax_times.append(time_calls(lambda: step(x, y), steps))
        jax_times.append(time_calls(pure_call, steps))
    paired = statistics.median(a / b for a, b in zip(objax_times, jax_times))
    return statistics.median(objax_times), statistics.median(jax_times), paired


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=2000, help='steps per timing')
    parser.add_argument('--repeats', type=int, default=7, help='timings per implementation (median kept)')
    args = parser.parse_args()
    print(f'jax {jax.__version__} on {jax.devices()[0].platform}')
    print(f'{"depth":>5} {"width":>5} {"batch":>5} {"donation":>8} {"objax (us)":>11} {"pure JAX (us)":>14} '
          f'{"ratio":>6} {"paired":>6}')
    for depth, width, batch, nclass in SIZES:
        for donate in (True, False):
            t_objax, t_jax, paired = measure(depth, width, batch, nclass, args.steps, args.repeats, donate)
            print(f'{depth:5d} {width:5d} {batch:5d} {"yes" if donate else "no":>8} {t_objax * 1e6:11.1f} '
                  f'{t_jax * 1e6:14.1f} {t_objax / t_jax:6.3f} {paired:6.3f}')


if __name__ == '__main__':
    main()
