"""Trains a small CNN on the 8x8 handwritten digits that ship with scikit-learn and prints its test accuracy.

Usage: python examples/classify_digits.py [--logdir runs/classify_digits] [--epochs 20] [--save-every N]

Every epoch (and every N steps with --save-every) is checkpointed in --logdir/ckpt, and every epoch is logged
for TensorBoard in --logdir/tb (`tensorboard --logdir runs`). Running the command again resumes from the newest
checkpoint exactly: killed at any moment, or stopped by SIGTERM (which checkpoints and exits at once), the run
ends with the same variables, bit for bit, as a run never interrupted (see the `Variables: sha256 ...` line).
"""

import argparse

import numpy as np
from common import (
    ExampleRun,
    add_compile_cache_flag,
    add_run_flags,
    digits_epoch,
    digits_split,
    use_compile_cache,
    variables_digest,
)

import objax


def build_model(filters: int) -> objax.nn.Sequential:
    """(N, 1, 8, 8) images -> (N, 10) logits: conv-bn-relu blocks with two 2x2 max-poolings, then a linear layer."""
    def block(nin: int, nout: int) -> list:
        # The running statistics must settle within a few hundred steps: momentum 0.9, not the default 0.999.
        return [objax.nn.Conv2D(nin, nout, 3), objax.nn.BatchNorm2D(nout, momentum=0.9), objax.functional.relu]

    return objax.nn.Sequential([
        *block(1, filters), *block(filters, filters), objax.functional.max_pool_2d,  # 8x8 -> 4x4
        *block(filters, 2 * filters), objax.functional.max_pool_2d,                # 4x4 -> 2x2
        objax.functional.flatten, objax.nn.Linear(2 * filters * 4, 10)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--logdir', default='runs/classify_digits', help='checkpoints and TensorBoard logs')
    parser.add_argument('--epochs', type=int, default=20, help='total number of epochs (a resumed run continues)')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--lr', type=float, default=3e-3, help='Adam learning rate, cosine-decayed to 0')
    parser.add_argument('--wd', type=float, default=1e-4, help='weight decay (L2 penalty on conv/linear weights)')
    parser.add_argument('--filters', type=int, default=32)
    parser.add_argument('--seed', type=int, default=0, help='seeds the split, the weights and the batch order')
    add_run_flags(parser)
    add_compile_cache_flag(parser)
    args = parser.parse_args()
    use_compile_cache(args.no_compile_cache)
    if args.epochs < 1 or args.batch < 1 or args.filters < 1:
        parser.error('--epochs, --batch and --filters must be positive')

    data = train_x, train_y, test_x, test_y = digits_split(seed=args.seed)
    objax.random.DEFAULT_GENERATOR.seed(args.seed)
    model = build_model(args.filters)
    opt = objax.optimizer.Adam(model.vars())
    weights = [v for k, v in model.vars().items() if k.endswith('.w')]

    def loss(x, y):
        logits = model(x, training=True)
        xe = objax.functional.loss.cross_entropy_logits_sparse(logits, y).mean()
        wd = 0.5 * sum((w.value ** 2).sum() for w in weights)
        return xe + args.wd * wd, xe

    gv = objax.GradValues(loss, model.vars())

    def train_op(x, y, lr):
        grads, (_, xe) = gv(x, y)
        opt(lr, grads)
        return xe

    train_op = objax.Jit(train_op, gv.vars() + opt.vars())
    predict = objax.Jit(lambda x: model(x, training=False).argmax(1), model.vars())

    # Resumes from the newest checkpoint: weights, batch-norm statistics and Adam state, epoch and step.
    steps_per_epoch = len(train_x) // args.batch
    with ExampleRun(args.logdir, model.vars() + opt.vars(), args.epochs, steps_per_epoch, 'digits',
                    args.save_every, model=model) as run:
        for _ in run.epochs():
            digits_epoch(run, train_op, predict, data, args.batch, args.lr, args.seed)

    print(f'Variables: sha256 {variables_digest(run.vc)}')
    correct = int((np.asarray(predict(test_x)) == test_y).sum())
    print(f'Test accuracy: {correct / len(test_y):.2%} ({correct}/{len(test_y)} digits)')


if __name__ == '__main__':
    main()
