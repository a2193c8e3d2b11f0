"""Trains a WideResNet on images from an .npz file (or synthetic images) over all devices with objax.Parallel.

Usage: python examples/image_classification.py [--data images.npz] [--logdir runs/image_classification]
                                               [--depth 16 --width 2 --batch 64 --epochs 10]

The .npz file holds 'x': images (N, H, W, C) or (N, C, H, W), uint8 in 0..255 or float in [0, 1], with C in
1, 3 or 4 (a grayscale (N, H, W) works too), and 'y': integer labels (N,) in 0..nclass-1. Optional
'x_test'/'y_test' give the test set; without them --test-fraction of the data is held out (seeded).
Without --data, a synthetic task is generated: each class is a random pattern plus noise.

Each step runs on every device (jax.devices(): GPUs, or CPU devices set by
XLA_FLAGS=--xla_force_host_platform_device_count=N) on its slice of the batch; the gradients are averaged
across devices (pmean), as in Objax 1.8. Every epoch (and every N steps with --save-every N) is checkpointed
in --logdir/ckpt, with the state of the generator that draws the batches and augmentations, and every epoch is
logged for TensorBoard in --logdir/tb; running the command again resumes exactly from the newest checkpoint
(killed or stopped by SIGTERM, the run ends with the variables of a run never interrupted).
"""

import argparse
import os
from typing import Tuple

import jax
import numpy as np
from common import ExampleRun, add_compile_cache_flag, add_run_flags, use_compile_cache, variables_digest

import objax
from objax.zoo.wide_resnet import WideResNet

Data = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _images(x: np.ndarray, name: str, layout: str) -> np.ndarray:
    """Images of any supported layout/dtype -> (N, C, H, W) float32 in [-1, 1]."""
    if x.ndim == 3:
        x = x[:, None] if layout != 'nhwc' else x[..., None]
    if x.ndim != 4:
        raise ValueError(f'{name}: expected images of shape (N, H, W, C), (N, C, H, W) or (N, H, W), '
                         f'got {x.shape}')
    if layout == 'auto':
        if x.shape[3] in (1, 3, 4):
            layout = 'nhwc'
        elif x.shape[1] in (1, 3, 4):
            layout = 'nchw'
        else:
            raise ValueError(f'{name}: cannot tell the channel axis of shape {x.shape} (1, 3 or 4 channels '
                             f'expected first or last); pass --layout nchw or --layout nhwc')
    if layout == 'nhwc':
        x = x.transpose(0, 3, 1, 2)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    else:
        raise ValueError(f'{name}: expected uint8 or float images, got dtype {x.dtype}')
    return np.ascontiguousarray(x * 2 - 1)


def load_npz(path: str, layout: str, test_fraction: float, seed: int) -> Data:
    """(train_x, train_y, test_x, test_y) from an .npz file (see the module docstring for its keys)."""
    if not os.path.isfile(path):
        raise SystemExit(f'--data {path}: no such file')
    try:
        f = np.load(path, allow_pickle=False)
    except Exception as e:
        raise SystemExit(f'--data {path}: not a readable .npz file ({e})') from e
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise SystemExit(f'--data {path}: a single .npy array, expected an .npz archive with keys x and y')
    with f:
        keys = set(f.files)
        for key in ('x', 'y'):
            if key not in keys:
                raise SystemExit(f'{path}: missing key {key!r} (found {sorted(keys)}); expected x: images '
                                 f'(N, H, W, C) or (N, C, H, W) and y: integer labels (N,)')
        if ('x_test' in keys) != ('y_test' in keys):
            raise SystemExit(f'{path}: has one of x_test/y_test but not the other (found {sorted(keys)})')
        arrays = {k: f[k] for k in ('x', 'y', 'x_test', 'y_test') if k in keys}
    parts = []
    for x_key, y_key in (('x', 'y'), ('x_test', 'y_test')):
        if x_key not in arrays:
            continue
        x, y = arrays[x_key], arrays[y_key]
        try:
            x = _images(x, f'{path}[{x_key!r}]', layout)
        except ValueError as e:
            raise SystemExit(str(e)) from e
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise SystemExit(f'{path}[{y_key!r}]: expected {len(x)} non-negative integer labels (one per image '
                             f'of {x_key!r}), got shape {y.shape} dtype {y.dtype}')
        parts += [x, y.astype(np.int32)]
    if len(parts) == 4:
        return tuple(parts)
    x, y = parts
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(len(x) * test_fraction)))
    return x[order[n_test:]], y[order[n_test:]], x[order[:n_test]], y[order[:n_test]]


def synthetic(n: int, nclass: int, size: int, seed: int) -> Data:
    """A learnable task: class c is the smooth random pattern c plus pixel noise; 3 x size x size, n train, n/4 test."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(nclass, 3, 4, 4)).astype(np.float32)
    patterns = coarse.repeat(-(-size // 4), 2).repeat(-(-size // 4), 3)[:, :, :size, :size]

    def draw(count):
        y = rng.integers(0, nclass, size=count).astype(np.int32)
        x = 0.5 * patterns[y] + rng.normal(scale=1.0, size=(count, 3, size, size)).astype(np.float32)
        return np.clip(x, -1, 1), y

    return (*draw(n), *draw(max(1, n // 4)))


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flips and random translations of up to 1/8 of the width (reflect padding)."""
    x = np.where(rng.random(len(x))[:, None, None, None] < 0.5, x[..., ::-1], x)
    pad = max(1, x.shape[3] // 8)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode='reflect')
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, len(x)))
    h, w = x.shape[2:]
    return np.stack([p[:, i:i + h, j:j + w] for p, i, j in zip(padded, dy, dx)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='\n'.join(__doc__.split('\n')[4:]))
    parser.add_argument('--data', help='.npz file with x, y (and optionally x_test, y_test); synthetic if omitted')
    parser.add_argument('--layout', choices=('auto', 'nhwc', 'nchw'), default='auto', help='image axes in --data')
    parser.add_argument('--test-fraction', type=float, default=0.1, help='held out when --data has no x_test')
    parser.add_argument('--logdir', default='runs/image_classification', help='checkpoints and TensorBoard logs')
    parser.add_argument('--depth', type=int, default=16, help='WideResNet depth, 6n + 4 (10, 16, 22, 28...)')
    parser.add_argument('--width', type=int, default=2, help='WideResNet width multiplier')
    parser.add_argument('--batch', type=int, default=64, help='global batch, split over the devices')
    parser.add_argument('--epochs', type=int, default=10, help='total number of epochs (a resumed run continues)')
    parser.add_argument('--steps-per-epoch', type=int, help='default: one pass over the training images')
    parser.add_argument('--lr', type=float, default=0.05, help='SGD + Nesterov momentum, cosine-decayed')
    parser.add_argument('--wd', type=float, default=5e-4, help='weight decay (L2 penalty on weights)')
    parser.add_argument('--augment', action='store_true', help='random flips and translations')
    parser.add_argument('--synthetic-size', type=int, default=1024, help='synthetic training images')
    parser.add_argument('--synthetic-classes', type=int, default=4)
    parser.add_argument('--image-size', type=int, default=16, help='synthetic image height and width')
    parser.add_argument('--seed', type=int, default=0)
    add_run_flags(parser)
    add_compile_cache_flag(parser)
    args = parser.parse_args()
    use_compile_cache(args.no_compile_cache)
    ndev = jax.device_count()
    if args.batch < 1 or args.batch % ndev:
        parser.error(f'--batch {args.batch} must be a positive multiple of the {ndev} devices')
    if args.epochs < 1 or (args.steps_per_epoch is not None and args.steps_per_epoch < 1):
        parser.error('--epochs and --steps-per-epoch must be positive')
    if not 0 < args.test_fraction < 1:
        parser.error('--test-fraction must be between 0 and 1')

    if args.data:
        train_x, train_y, test_x, test_y = load_npz(args.data, args.layout, args.test_fraction, args.seed)
    else:
        train_x, train_y, test_x, test_y = synthetic(args.synthetic_size, args.synthetic_classes, args.image_size,
                                                     args.seed)
    nclass = int(max(train_y.max(), test_y.max())) + 1
    if len(train_x) < args.batch:
        raise SystemExit(f'Only {len(train_x)} training images, fewer than --batch {args.batch}')
    print(f'{len(train_x)} training and {len(test_x)} test images of shape {train_x.shape[1:]}, {nclass} classes, '
          f'{ndev} device(s) ({jax.devices()[0].platform})')

    objax.random.DEFAULT_GENERATOR.seed(args.seed)
    model = WideResNet(train_x.shape[1], nclass, depth=args.depth, width=args.width)
    opt = objax.optimizer.Momentum(model.vars(), momentum=0.9, nesterov=True)
    weights = [v for k, v in model.vars().items() if k.endswith('.w')]

    def loss(x, y):
        xe = objax.functional.loss.cross_entropy_logits_sparse(model(x, training=True), y).mean()
        return xe + args.wd * 0.5 * sum((w.value ** 2).sum() for w in weights), xe

    gv = objax.GradValues(loss, model.vars())

    def train_op(x, y, lr):  # runs on each device, on its slice of the batch
        grads, (_, xe) = gv(x, y)
        opt(lr, objax.functional.parallel.pmean(grads))
        return objax.functional.parallel.pmean(xe)

    train_op = objax.Parallel(train_op, gv.vars() + opt.vars(), reduce=lambda x: x[0])
    predict = objax.Parallel(lambda x: model(x, training=False).argmax(1), model.vars())

    def accuracy() -> float:
        correct = 0
        for i in range(0, len(test_x), args.batch):
            x = test_x[i:i + args.batch]
            pad = -len(x) % ndev  # Parallel needs a batch divisible by the device count
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
            correct += int((np.asarray(predict(x))[:len(x) - pad] == test_y[i:i + args.batch]).sum())
        return correct / len(test_x)

    steps_per_epoch = args.steps_per_epoch or len(train_x) // args.batch
    # No `with vc.replicate():` around the steps (Objax 1.8's style, optional for Parallel now): a checkpoint
    # saved inside such a block would hold one copy of each variable per device.
    with ExampleRun(args.logdir, model.vars() + opt.vars(), args.epochs, steps_per_epoch, 'train',
                    args.save_every, model=model) as run:
        rng = run.numpy_rng('data', args.seed)  # its state is saved with each checkpoint
        for _ in run.epochs():
            for _ in run.steps():
                idx = rng.choice(len(train_x), size=args.batch, replace=False)
                x = augment(train_x[idx], rng) if args.augment else train_x[idx]
                run.summary.scalar('losses/xe', train_op(x, train_y[idx], run.lr(args.lr)))
            run.summary.scalar('accuracy/test', accuracy())
    print(f'Variables: sha256 {variables_digest(run.vc)}')
    print(f'Test accuracy: {accuracy():.2%} ({len(test_x)} images)')


if __name__ == '__main__':
    main()
