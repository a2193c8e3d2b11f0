"""Stochastic gradient descent."""

from typing import List, Union

from objax.module import Module
from objax.optimizer._common import assign_all, check_grads, check_lr, optimizer_repr, train_refs
from objax.typing import JaxArray
from objax.varcollection import VarCollection

__all__ = ['SGD']


class SGD(Module):
    """Plain gradient descent: p <- p - lr * g for each TrainVar of `vc`."""

    def __init__(self, vc: VarCollection):
        """Creates the optimizer for the TrainVars of `vc` (TrainRefs `train_vars`, in collection order).

        Args:
            vc: the variables to optimize; only its TrainVars (deduplicated, in collection order) are used.

        Raises:
            TypeError: vc is not a VarCollection.
        """
        self.train_vars = train_refs('SGD', vc)

    def __call__(self, lr: Union[float, JaxArray], grads: List[JaxArray]):
        """Applies one step to every TrainVar, or changes nothing when it raises.

        Args:
            lr: learning rate, a number or an array broadcasting to every variable.
            grads: one gradient per TrainVar, same order and shapes as the collection's TrainVars.

        Raises:
            ValueError: wrong number or shapes of grads, a NaN/infinite lr, an lr array that does not broadcast.
        """
        grads = check_grads('SGD', self.train_vars, grads)
        lr = check_lr('SGD', lr, self.train_vars)
        assign_all('SGD', self.train_vars, [ref.value - lr * g for ref, g in zip(self.train_vars, grads)])

    def __repr__(self):
        return optimizer_repr(self)
