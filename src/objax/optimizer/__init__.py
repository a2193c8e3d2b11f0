"""Optimizers: their state lives in StateVars and TrainRefs so that Jit and Parallel see it."""

from objax.optimizer import scheduler
from objax.optimizer.adam import Adam
from objax.optimizer.ema import ExponentialMovingAverage, ExponentialMovingAverageModule
from objax.optimizer.lars import LARS
from objax.optimizer.loss_scale import DynamicLossScale, all_finite
from objax.optimizer.momentum import Momentum
from objax.optimizer.optax_bridge import Optax
from objax.optimizer.sgd import SGD

__all__ = ['Adam', 'DynamicLossScale', 'ExponentialMovingAverage', 'ExponentialMovingAverageModule', 'LARS', 'Momentum',
           'Optax', 'SGD', 'all_finite', 'scheduler']
