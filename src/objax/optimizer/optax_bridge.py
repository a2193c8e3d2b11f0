"""Any optax GradientTransformation used as an objax optimizer, its state kept in StateVars."""

from typing import Any, List, Optional, Union

import jax
import jax.numpy as jn

from objax._core.variables import reduce_first
from objax.module import Module
from objax.optimizer._common import assign_all, cast_like, check_grads, check_lr, train_refs
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import StateVar, reduce_mean

__all__ = ['Optax']


def _strong(x) -> JaxArray:
    """`x` as a jax array that is not weak-typed (so the StateVar keeps one type from step to step)."""
    return cast_like(x, jn.asarray(x).dtype)


class Optax(Module):
    """Runs an optax GradientTransformation on the TrainVars of `vc` (params and grads are lists in the order
    of vc.subset(TrainVar)). `opt(None, grads)` applies the transformation's updates as they are, p <- p + u
    (for complete optax optimizers such as optax.adamw(1e-3), which carry their learning rate and sign).
    `opt(lr, grads)` treats the updates like gradients, p <- p - lr * u (for direction-only transformations
    such as optax.scale_by_adam() or optax.clip_by_global_norm(1.)), the convention of objax optimizers.
    The optax state pytree is flattened into StateVars named by their path, e.g. `(Optax).state[0].mu[1]`;
    each keeps the dtype the transformation's init gave it. A step writes every variable or none."""

    def __init__(self, vc: VarCollection, transformation: Any):
        """Creates the optimizer and the optax state (from `transformation.init`) for the TrainVars of `vc`.

        Args:
            vc: the variables to optimize; only its TrainVars (deduplicated, in collection order) are used.
            transformation: an optax GradientTransformation (an object with `init` and `update`).

        Raises:
            TypeError: transformation is not an optax GradientTransformation, or vc is not a VarCollection.
        """
        if not (callable(getattr(transformation, 'init', None)) and callable(getattr(transformation, 'update',
                                                                                   None))):
            raise TypeError(f'Optax(vc, transformation): transformation must be an optax GradientTransformation '
                            f'(with init and update), got {type(transformation).__name__}')
        self.train_vars = train_refs('Optax', vc)
        self.transformation = transformation
        state = transformation.init([ref.value for ref in self.train_vars])
        leaves, self._treedef = jax.tree_util.tree_flatten_with_path(state)
        self._paths = [jax.tree_util.keystr(path) for path, _ in leaves]
        self._state = [StateVar(x, reduce=reduce_mean if jn.issubdtype(x.dtype, jn.inexact) else reduce_first)
                       for x in (_strong(leaf) for _, leaf in leaves)]

    def vars(self, scope: str = '') -> VarCollection:
        """TrainRefs as `(Optax).train_vars(ModuleList)[i]`, state leaves as `(Optax).state<optax path>`.

        Args:
            scope: prefix put in front of every name.

        Returns:
            The optimizer's VarCollection.
        """
        prefix = f'{scope}({type(self).__name__})'
        vc = self.train_vars.vars(prefix + '.train_vars')
        vc.update((f'{prefix}.state{path}', v) for path, v in zip(self._paths, self._state))
        return vc

    @property
    def state(self) -> Any:
        """The optax state pytree, rebuilt from the StateVars' current values."""
        return self._treedef.unflatten([v.value for v in self._state])

    def __call__(self, lr: Optional[Union[float, JaxArray]], grads: List[JaxArray], **extra_args):
        """One step: p <- p + u when lr is None, else p <- p - lr * u, with (u, new state) from
        transformation.update(grads, state, params, **extra_args). Writes every variable or none.

        Args:
            lr: None to apply the updates as they are, or a learning rate (a number or an array broadcasting to
                every variable) multiplying the negated updates.
            grads: one gradient per TrainVar, same order and shapes as the collection's TrainVars.
            **extra_args: passed on to `transformation.update` (e.g. `value=` for optax.contrib schedules).

        Raises:
            ValueError: wrong number or shapes of grads, a NaN/infinite lr, or a transformation returning a
                state or updates of another structure or shape.
        """
        grads = check_grads('Optax', self.train_vars, grads)
        if lr is not None:
            lr = check_lr('Optax', lr, self.train_vars)
        params = [ref.value for ref in self.train_vars]
        updates, new_state = self.transformation.update(grads, self.state, params, **extra_args)
        new_leaves, treedef = jax.tree_util.tree_flatten(new_state)
        if treedef != self._treedef:
            raise ValueError(f'Optax: the transformation returned a state of structure {treedef}, expected '
                             f'{self._treedef} (as returned by its init); nothing was changed')
        # A state leaf keeps the dtype init gave it (e.g. bfloat16 moments fed float32 gradients), so that a
        # compiled step sees the same types every call; its shape must not change.
        errors = [f'state{path}: got shape {jn.shape(x)}, expected {var.shape}'
                  for path, var, x in zip(self._paths, self._state, new_leaves) if jn.shape(x) != var.shape]
        if errors:
            raise ValueError('Optax: the transformation changed the shape of its state, nothing was '
                             'changed:\n  ' + '\n  '.join(errors))
        if not isinstance(updates, (list, tuple)) or len(updates) != len(params):
            raise ValueError(f'Optax: the transformation returned updates of type {type(updates).__name__}, '
                             f'expected a list of {len(params)} arrays like the grads; nothing was changed')
        written = [(ref, p + u if lr is None else p - lr * u)
                   for ref, p, u in zip(self.train_vars, params, updates) if u is not None]
        assign_all('Optax', list(self._state) + [ref for ref, _ in written],
                   [jn.asarray(x) for x in new_leaves] + [x for _, x in written])
