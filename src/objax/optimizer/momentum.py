"""Gradient descent with (optionally Nesterov) momentum."""

from typing import List, Optional, Union

from objax.module import Module, ModuleList
from objax.optimizer._common import (
    assign_all,
    cast_like,
    check_grads,
    check_hyper,
    check_lr,
    optimizer_repr,
    train_refs,
    zero_slot,
)
from objax.typing import JaxArray
from objax.varcollection import VarCollection

__all__ = ['Momentum']


class Momentum(Module):
    """m <- g + momentum * m; p <- p - lr * m, or p <- p - lr * (g + momentum * m) with `nesterov`.
    One StateVar `m` per TrainVar, shaped like it and starting at zero."""

    def __init__(self, vc: VarCollection, momentum: float = 0.9, nesterov: bool = False):
        """Creates the optimizer and its zero `m` slots for the TrainVars of `vc`.

        Args:
            vc: the variables to optimize; only its TrainVars (deduplicated, in collection order) are used.
            momentum: decay of the accumulated gradient `m`.
            nesterov: use Nesterov's momentum (step along g + momentum * m).

        Raises:
            TypeError: vc is not a VarCollection.
            ValueError: momentum is a NaN or infinite number.
        """
        self.momentum = check_hyper('Momentum', 'momentum', momentum)
        self.nesterov = nesterov
        self.train_vars = train_refs('Momentum', vc)
        self.m = ModuleList(zero_slot(ref) for ref in self.train_vars)

    def __call__(self, lr: Union[float, JaxArray], grads: List[JaxArray], momentum: Optional[float] = None):
        """Applies one step to every TrainVar and its `m`, or changes nothing when it raises.

        Args:
            lr: learning rate, a number or an array broadcasting to every variable.
            grads: one gradient per TrainVar, same order and shapes as the collection's TrainVars.
            momentum: overrides the constructor's momentum for this call only.

        Raises:
            ValueError: wrong number or shapes of grads, NaN/infinite lr or momentum, an lr that does not
                broadcast to every variable.
        """
        grads = check_grads('Momentum', self.train_vars, grads)
        lr = check_lr('Momentum', lr, self.train_vars)
        momentum = self.momentum if momentum is None else check_hyper('Momentum', 'momentum', momentum)
        new_m, new_p = [], []
        for ref, m, g in zip(self.train_vars, self.m, grads):
            m_new = cast_like(g + momentum * m.value, m.value.dtype)
            new_m.append(m_new)
            new_p.append(ref.value - lr * (g + momentum * m_new if self.nesterov else m_new))
        assign_all('Momentum', list(self.m) + list(self.train_vars), new_m + new_p)

    def __repr__(self):
        return optimizer_repr(self, momentum=self.momentum, nesterov=self.nesterov)
