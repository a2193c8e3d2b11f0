"""Stochastic gradient descent."""

from typing import List

from objax.module import Module, ModuleList
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import TrainRef, TrainVar

__all__ = ['SGD']


class SGD(Module):
    """Plain gradient descent: v <- v - lr * g for each TrainVar of `vc`."""

    def __init__(self, vc: VarCollection):
        self.train_vars = ModuleList(TrainRef(v) for v in vc.subset(TrainVar))

    def __call__(self, lr: float, grads: List[JaxArray]):
        """Applies one step; grads are aligned with the TrainVars of the collection."""
        if len(grads) != len(self.train_vars):
            raise ValueError(f'SGD expected {len(self.train_vars)} gradients (one per TrainVar), got {len(grads)}')
        for ref, g in zip(self.train_vars, grads):
            ref.value = ref.value - lr * g
