"""Trains a CNN on scikit-learn's 8x8 digits with differentially private SGD; prints the epsilon spent and accuracy.

Usage: python examples/dp_digits.py [--logdir runs/dp_digits] [--epochs 30] [--noise 1.1] [--clip 1.0]

Each microbatch's gradient (one example each by default) is clipped to l2 norm --clip and Gaussian noise of
standard deviation --noise x --clip is added to their sum (objax.privacy.dpsgd.PrivateGradValues). The privacy
spent, (epsilon, --delta), follows from the sampling ratio batch / training size, the noise multiplier and the
number of steps (Renyi-DP accountant, objax.privacy.dpsgd). The accountant's record of the steps taken is saved
with every checkpoint, so a resumed run reports the whole budget spent. Checkpoints (--save-every N), TensorBoard
logs and exact resuming work as in classify_digits.py.
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
from objax.privacy.dpsgd import PrivateGradValues, analyze_renyi, convert_renyidp_to_dp
from objax.privacy.dpsgd.rdpaccountant import DEFAULT_ORDERS as ORDERS


def build_model() -> objax.nn.Sequential:
    """(N, 1, 8, 8) -> (N, 10) logits. No batch norm: it mixes examples, which per-example clipping forbids;
    tanh activations keep the clipped gradients informative (Papernot et al., 2020)."""
    return objax.nn.Sequential([
        objax.nn.Conv2D(1, 16, 3), objax.functional.tanh, objax.functional.max_pool_2d,   # 8x8 -> 4x4
        objax.nn.Conv2D(16, 32, 3), objax.functional.tanh, objax.functional.max_pool_2d,  # 4x4 -> 2x2
        objax.functional.flatten, objax.nn.Linear(32 * 4, 10)])


class Accountant:
    """The privacy spent so far: the steps taken at each (sampling ratio, noise multiplier), kept in `record` (a
    list in the run's state, so that it is saved with every checkpoint and comes back on resuming)."""

    def __init__(self, record: list, q: float, noise: float):
        self.record, self.q, self.noise = record, q, noise

    def step(self):
        if self.record and self.record[-1][:2] == [self.q, self.noise]:
            self.record[-1][2] += 1
        else:
            self.record.append([self.q, self.noise, 1])

    @property
    def steps(self) -> int:
        return sum(steps for _, _, steps in self.record)

    def epsilon(self, delta: float) -> float:
        """The epsilon of the (epsilon, delta) guarantee of all the steps (Renyi DP adds up over steps)."""
        rdp = sum(analyze_renyi(q, noise, steps, ORDERS) for q, noise, steps in self.record)
        return convert_renyidp_to_dp(ORDERS, rdp, target_delta=delta)[0] if self.record else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--logdir', default='runs/dp_digits', help='checkpoints and TensorBoard logs')
    parser.add_argument('--epochs', type=int, default=30, help='total number of epochs (a resumed run continues)')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--lr', type=float, default=0.1, help='SGD + momentum learning rate, cosine-decayed')
    parser.add_argument('--noise', type=float, default=1.1, help='noise multiplier (noise stddev / clip)')
    parser.add_argument('--clip', type=float, default=1.0, help='l2 norm bound of each microbatch gradient')
    parser.add_argument('--microbatch', type=int, default=1, help='examples per clipped microbatch')
    parser.add_argument('--delta', type=float, default=1e-5, help='delta of the (epsilon, delta) guarantee')
    parser.add_argument('--seed', type=int, default=0)
    add_run_flags(parser)
    add_compile_cache_flag(parser)
    args = parser.parse_args()
    use_compile_cache(args.no_compile_cache)
    if args.epochs < 1 or args.batch < 1 or args.microbatch < 1 or args.batch % args.microbatch:
        parser.error('--epochs, --batch and --microbatch must be positive, --batch a multiple of --microbatch')
    if args.noise < 0 or args.clip <= 0 or not 0 < args.delta < 1:
        parser.error('need --noise >= 0, --clip > 0 and 0 < --delta < 1')

    data = train_x, train_y, test_x, test_y = digits_split(seed=args.seed)
    objax.random.DEFAULT_GENERATOR.seed(args.seed)
    model = build_model()
    opt = objax.optimizer.Momentum(model.vars(), momentum=0.9)

    def loss(x, y):
        return objax.functional.loss.cross_entropy_logits_sparse(model(x), y).mean()

    gv = PrivateGradValues(loss, model.vars(), noise_multiplier=args.noise, l2_norm_clip=args.clip,
                           microbatch=args.microbatch, batch_axis=(0, 0), keygen=objax.random.Generator(args.seed + 1))

    def train_op(x, y, lr):
        grads, (xe,) = gv(x, y)
        opt(lr, grads)
        return xe

    train_op = objax.Jit(train_op, gv.vars() + opt.vars())
    predict = objax.Jit(lambda x: model(x).argmax(1), model.vars())
    steps_per_epoch = len(train_x) // args.batch
    sampling_ratio = args.batch / len(train_x)

    # The checkpoint includes the noise generator's key, so a resumed run draws the noise it would have drawn.
    with ExampleRun(args.logdir, gv.vars() + opt.vars(), args.epochs, steps_per_epoch, 'dp-digits',
                    args.save_every, model=model) as run:
        accountant = Accountant(run.state.setdefault('privacy', []), sampling_ratio, args.noise)

        def private_step(x, y, lr):
            accountant.step()
            return train_op(x, y, lr)

        for _ in run.epochs():
            digits_epoch(run, private_step, predict, data, args.batch, args.lr, args.seed)
            run.summary.scalar('privacy/epsilon', accountant.epsilon(args.delta))

    correct = int((np.asarray(predict(test_x)) == test_y).sum())
    print(f'Privacy spent: epsilon = {accountant.epsilon(args.delta):.2f} at delta = {args.delta:g} '
          f'({accountant.steps} steps, sampling ratio {sampling_ratio:.4f}, noise multiplier {args.noise}, '
          f'clip {args.clip})')
    print(f'Variables: sha256 {variables_digest(run.vc)}')
    print(f'Test accuracy: {correct / len(test_y):.2%} ({correct}/{len(test_y)} digits)')


if __name__ == '__main__':
    main()
