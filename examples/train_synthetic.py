"""A short training run: an MLP classifier on synthetic data (Jit + GradValues + SGD), printing its loss.

Usage: python examples/train_synthetic.py [--steps 200] [--lr 0.1] [--batch 64]
"""

import argparse

import jax
import jax.numpy as jn
import numpy as np

import objax


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--lr', type=float, default=0.1)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    # Synthetic task: 4 Gaussian blobs in 16 dimensions.
    rng = np.random.default_rng(args.seed)
    centers = rng.normal(size=(4, 16)).astype(np.float32) * 2
    labels = rng.integers(0, 4, size=2048)
    data = (centers[labels] + rng.normal(size=(2048, 16)).astype(np.float32))

    objax.random.DEFAULT_GENERATOR.seed(args.seed)
    model = objax.ModuleList([objax.nn.Linear(16, 64), objax.functional.relu, objax.nn.Linear(64, 4)])

    def predict(x):
        for layer in model:
            x = layer(x)
        return x

    def loss(x, y):
        return -(jax.nn.log_softmax(predict(x)) * jax.nn.one_hot(y, 4)).sum(1).mean()

    gv = objax.GradValues(loss, model.vars())
    opt = objax.optimizer.SGD(model.vars())

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(args.lr, grads)
        return values[0]

    train_op = objax.Jit(train_op, gv.vars() + opt.vars())
    for step in range(args.steps):
        idx = rng.integers(0, len(data), size=args.batch)
        value = train_op(jn.asarray(data[idx]), jn.asarray(labels[idx]))
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f'step {step:4d}  loss {float(value):.4f}')
    accuracy = (np.asarray(predict(jn.asarray(data))).argmax(1) == labels).mean()
    print(f'final train accuracy {accuracy:.3f}')


if __name__ == '__main__':
    main()
