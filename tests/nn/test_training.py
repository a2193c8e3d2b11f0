"""A small CNN with BatchNorm, Dropout and Adam trains under Jit on synthetic data."""

import jax.numpy as jn
import numpy as np

import objax
from objax import nn
from objax.functional import average_pool_2d, relu


class SmallCNN(objax.Module):
    def __init__(self, nclass: int = 3):
        self.body = nn.Sequential([nn.Conv2D(1, 8, 3), nn.BatchNorm2D(8, momentum=0.9), relu, average_pool_2d,
                                   nn.Conv2D(8, 16, 3), nn.BatchNorm2D(16, momentum=0.9), relu])
        self.drop = nn.Dropout(0.8)
        self.head = nn.Linear(16, nclass)

    def __call__(self, x, training: bool):
        x = self.body(x, training=training).mean((2, 3))
        return self.head(self.drop(x, training=training))


def _data(n=96, nclass=3, seed=0):
    """Images whose class is the position of a bright square: learnable by a small CNN, not by chance."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, nclass, size=n)
    x = 0.3 * rng.normal(size=(n, 1, 12, 12)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 0, 4 * c:4 * c + 4, 4:8] += 2.0
    return jn.asarray(x), jn.asarray(y)


def test_small_cnn_with_batchnorm_dropout_adam_trains_under_jit():
    # Running statistics with momentum 0.9 settle within the 80 steps (the default 0.999 would need ~5000).
    model = SmallCNN()
    opt = objax.optimizer.Adam(model.vars())
    x, y = _data()

    def loss(x, y):
        return objax.functional.loss.cross_entropy_logits_sparse(model(x, training=True), y).mean()

    gv = objax.GradValues(loss, model.vars())

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(0.01, grads)
        return values[0]

    train_op = objax.Jit(train_op, gv.vars() + opt.vars())
    predict = objax.Jit(lambda x: model(x, training=False).argmax(1), model.vars())
    bn = model.body[1]
    running_mean_before = np.array(bn.running_mean.value)
    losses = [float(train_op(x, y)) for _ in range(80)]
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5]), losses[::10]
    # Training moved the BatchNorm running statistics; eval mode uses them and classifies the data.
    assert not np.allclose(bn.running_mean.value, running_mean_before)
    accuracy = float((predict(x) == y).mean())
    assert accuracy > 0.9, accuracy
    # Dropout only acts in training: eval predictions are deterministic, training outputs vary per call.
    np.testing.assert_array_equal(predict(x), predict(x))
    train_out = objax.Jit(lambda x: model(x, training=True), model.vars())
    assert not np.allclose(train_out(x), train_out(x))
