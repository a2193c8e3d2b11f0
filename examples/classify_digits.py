"""Trains a small CNN on the 8x8 handwritten digits that ship with scikit-learn and prints its test accuracy.

Usage: python examples/classify_digits.py [--logdir runs/classify_digits] [--epochs 20]

Every epoch is checkpointed in --logdir/ckpt and logged for TensorBoard in --logdir/tb
(`tensorboard --logdir runs`); running the command again resumes from the newest checkpoint.
"""

import argparse
import os
import time

import numpy as np
from tqdm import tqdm

import objax
from digits_data import batches, digits_split


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
    args = parser.parse_args()
    if args.epochs < 1 or args.batch < 1 or args.filters < 1:
        parser.error('--epochs, --batch and --filters must be positive')

    train_x, train_y, test_x, test_y = digits_split(seed=args.seed)
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

    # Resume: the newest checkpoint holds the weights, batch-norm statistics and Adam state after its epoch.
    ckpt = objax.io.Checkpoint(args.logdir, keep_ckpts=2, verbose=False)
    try:
        start_epoch, path = ckpt.restore(model.vars() + opt.vars())
    except ValueError as e:
        raise SystemExit(f'Cannot resume from {args.logdir} (trained with other settings? use another --logdir):'
                         f'\n{e}')
    if path:
        print(f'Resuming from {path}: {start_epoch} of {args.epochs} epochs done')

    steps_per_epoch = len(train_x) // args.batch
    total_steps = args.epochs * steps_per_epoch
    start = time.time()
    with objax.jaxboard.SummaryWriter(os.path.join(args.logdir, 'tb')) as tensorboard, \
            tqdm(total=total_steps, initial=min(start_epoch, args.epochs) * steps_per_epoch, unit='step',
                 desc='digits', disable=start_epoch >= args.epochs) as progress:
        for epoch in range(start_epoch, args.epochs):
            summary = objax.jaxboard.Summary()
            for step, idx in enumerate(batches(len(train_x), args.batch, np.random.default_rng([args.seed, epoch]))):
                progress_done = (epoch * steps_per_epoch + step) / total_steps
                lr = args.lr * 0.5 * (1 + np.cos(np.pi * progress_done))
                summary.scalar('losses/xe', train_op(train_x[idx], train_y[idx], np.float32(lr)))
                progress.update()
            accuracy = float((predict(test_x) == test_y).mean())
            summary.scalar('accuracy/test', accuracy)
            tensorboard.write(summary, epoch + 1)
            ckpt.save(model.vars() + opt.vars(), epoch + 1)
            progress.set_postfix(loss=f'{summary()["losses/xe"]:.4f}', test_accuracy=f'{accuracy:.2%}')

    correct = int((np.asarray(predict(test_x)) == test_y).sum())
    if start_epoch < args.epochs:
        print(f'Trained epochs {start_epoch + 1}-{args.epochs} in {time.time() - start:.1f}s '
              f'(checkpoints and TensorBoard logs in {args.logdir})')
    else:
        print(f'Already trained for {start_epoch} epochs (pass a larger --epochs to train more)')
    print(f'Test accuracy: {correct / len(test_y):.2%} ({correct}/{len(test_y)} digits)')


if __name__ == '__main__':
    main()
