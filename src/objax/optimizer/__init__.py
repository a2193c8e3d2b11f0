"""Optimizers: their state lives in StateVars and TrainRefs so that Jit and Parallel see it."""

from objax.optimizer.sgd import SGD

__all__ = ['SGD']
