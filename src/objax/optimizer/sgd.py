"""Stochastic gradient descent."""

from typing import List

from objax.module import Module
from objax.optimizer._common import check_grads, train_refs
from objax.typing import JaxArray
from objax.varcollection import VarCollection

__all__ = ['SGD']


class SGD(Module):
    """Plain gradient descent: p <- p - lr * g for each TrainVar of `vc`."""

    def __init__(self, vc: VarCollection):
        self.train_vars = train_refs('SGD', vc)

    def __call__(self, lr: float, grads: List[JaxArray]):
        """Applies one step; grads are aligned with the TrainVars of the collection (same order and shapes)."""
        grads = check_grads('SGD', self.train_vars, grads)
        for ref, g in zip(self.train_vars, grads):
            p = ref.value
            ref.value = (p - lr * g).astype(p.dtype)
