"""Remat: a module-aware jax.checkpoint (recompute a function's activations in the backward pass)."""

from typing import Callable, Optional, Tuple, Union

import jax

from objax._core.collection import VarCollection
from objax._core.modules import Module
from objax._core.transform import InPlaceTransform, values_first

__all__ = ['Remat']


class Remat(InPlaceTransform):
    """Runs `f` under jax.checkpoint: a gradient taken through it recomputes f's intermediate values in the
    backward pass instead of keeping them from the forward pass (less memory, more compute). Outputs and
    gradients are those of f.

    The values of vc's variables are passed into the checkpointed function as arguments, so they are
    differentiated and recomputed like any input; what f writes (BatchNorm statistics, random keys) is an output
    of the checkpointed function, stored once after the forward pass (never again while recomputing). Reading a
    variable outside vc uses its current value; writing one raises objax.VariableOutsideCollectionError.

    Args:
        f: the module or function to checkpoint.
        vc: the variables f reads or writes; required when f is a plain function. None: `f.vars()`, following f.
        policy: which intermediate values may be saved rather than recomputed, one of `jax.checkpoint_policies`
            (e.g. `jax.checkpoint_policies.dots_with_no_batch_dims_saveable`); None saves none of them.
        prevent_cse: as jax.checkpoint's: keep XLA from merging the recomputation with the forward pass. False is
            safe, and faster, inside a loop (objax.Scan, objax.nn.Stack).
        static_argnums: positions of f's arguments that are not arrays (hashable Python values).

    Raises:
        TypeError: `f` is not callable or `vc` is not a VarCollection.
        ValueError: `f` is a plain function and `vc` is None.
    """

    def __init__(self, f: Union[Module, Callable], vc: Optional[VarCollection] = None,
                 policy: Optional[Callable] = None, prevent_cse: bool = True,
                 static_argnums: Optional[Tuple[int, ...]] = None):
        self.policy = policy
        self.prevent_cse = bool(prevent_cse)
        self.static_argnums = tuple(static_argnums or ())
        super().__init__('Remat', {'f': f}, vc)

    def __call__(self, *args, **kwargs):
        """Runs f checkpointed and stores what it wrote.

        Args:
            *args: f's positional arguments: arrays or pytrees of arrays, except at `static_argnums`.
            **kwargs: f's keyword arguments (any values: they are constants of the checkpointed function).

        Returns:
            What f returns.

        Raises:
            objax.VariableOutsideCollectionError: f writes a variable that is not in vc.
        """
        pure = self._current()
        f = self.__wrapped__

        def checkpointed(values, *call_args):
            return pure(values, f, *call_args, **kwargs)

        run = jax.checkpoint(checkpointed, prevent_cse=self.prevent_cse, policy=self.policy,
                             static_argnums=values_first(self.static_argnums))
        outputs, changes = run(pure.values(), *args)
        pure.write(changes)
        return outputs

    # No vars() of its own (as Jit): Module.vars names the variables `(Remat)` + the wrapped module's.

    def __repr__(self):
        policy = getattr(self.policy, '__name__', self.policy)
        return f'{super().__repr__()[:-1]}, policy={policy})'
