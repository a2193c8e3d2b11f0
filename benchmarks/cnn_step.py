"""Compute-bound training step: a CNN on 32x32 images, objax (Jit + GradValues + Momentum) vs pure JAX.

Three conv stages (3x3 convolutions, ReLU, 2x2 average pooling), a global mean and a linear head, softmax
cross-entropy, momentum SGD; NCHW images with HWIO kernels in both versions. Both run in the same process,
interleaved, on the same inputs. Prints the median step time of each and their ratio (target <= 1.02).
Usage: python benchmarks/cnn_step.py [--batch 64] [--filters 32] [--steps 20] [--repeats 7]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jn
import numpy as np
from jax import lax

import objax

NCLASS, LR, MOMENTUM = 10, 0.01, 0.9
DIMS = ('NCHW', 'HWIO', 'NCHW')


def _pool(x):
    return objax.functional.average_pool_2d(x, 2)


class CNN(objax.Module):
    def __init__(self, filters: int):
        widths = [3, filters, 2 * filters, 4 * filters]
        self.convs = objax.ModuleList([objax.nn.Conv2D(a, b, 3) for a, b in zip(widths[:-1], widths[1:])])
        self.head = objax.nn.Linear(widths[-1], NCLASS)

    def __call__(self, x):
        for conv in self.convs:
            x = _pool(objax.functional.relu(conv(x)))
        return self.head(x.mean((2, 3)))


def cross_entropy(logits, labels):
    return -(jax.nn.log_softmax(logits) * jax.nn.one_hot(labels, NCLASS)).sum(1).mean()


def objax_step(model: CNN):
    opt = objax.optimizer.Momentum(model.vars(), momentum=MOMENTUM)
    gv = objax.GradValues(lambda x, y: cross_entropy(model(x), y), model.vars())

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(LR, grads)
        return values[0]

    return objax.Jit(train_op, gv.vars() + opt.vars())


def jax_forward(params, x):
    for w, b in params['convs']:
        x = lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=DIMS) + b
        x = jax.nn.relu(x)
        x = lax.reduce_window(x, 0., lax.add, (1, 1, 2, 2), (1, 1, 2, 2), 'VALID') / 4
    w, b = params['head']
    return jn.dot(x.mean((2, 3)), w) + b


@jax.jit
def jax_step(params, momentum, x, y):
    loss, grads = jax.value_and_grad(lambda p: cross_entropy(jax_forward(p, x), y))(params)
    momentum = jax.tree.map(lambda m, g: MOMENTUM * m + g, momentum, grads)
    params = jax.tree.map(lambda p, m: p - LR * m, params, momentum)
    return params, momentum, loss


def time_calls(fn, steps: int) -> float:
    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--filters', type=int, default=32)
    parser.add_argument('--steps', type=int, default=20, help='steps per timing')
    parser.add_argument('--repeats', type=int, default=7, help='timings per implementation (median kept)')
    args = parser.parse_args()

    model = CNN(args.filters)
    step = objax_step(model)
    # The pure JAX version starts from the same weights (Conv2D biases are (C, 1, 1) for NCHW broadcasting).
    convs = [(c.w.value, c.b.value) for c in model.convs]
    state = {'params': {'convs': convs, 'head': (model.head.w.value, model.head.b.value)}}
    state['momentum'] = jax.tree.map(jn.zeros_like, state['params'])
    rng = np.random.default_rng(0)
    x = jn.asarray(rng.normal(size=(args.batch, 3, 32, 32)).astype(np.float32))
    y = jn.asarray(rng.integers(0, NCLASS, size=args.batch))

    def pure_call():
        state['params'], state['momentum'], loss = jax_step(state['params'], state['momentum'], x, y)
        return loss

    first = float(step(x, y)), float(pure_call())
    if abs(first[0] - first[1]) > 1e-4 * max(1., abs(first[1])):
        raise SystemExit(f'objax and pure JAX disagree on the first loss: {first}')
    objax_times, jax_times = [], []
    for _ in range(args.repeats):
        objax_times.append(time_calls(lambda: step(x, y), args.steps))
        jax_times.append(time_calls(pure_call, args.steps))
    t_objax, t_jax = statistics.median(objax_times), statistics.median(jax_times)
    print(f'jax {jax.__version__} on {jax.devices()[0].platform}; CNN filters {args.filters}, '
          f'batch {args.batch} x 3 x 32 x 32; median of {args.repeats} x {args.steps} steps')
    print(f'{"objax (ms)":>10} {"pure JAX (ms)":>14} {"ratio":>6}')
    print(f'{t_objax * 1e3:10.2f} {t_jax * 1e3:14.2f} {t_objax / t_jax:6.3f}')


if __name__ == '__main__':
    main()
