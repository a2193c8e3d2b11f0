"""Mixed precision: a module run with its trainable variables and floating inputs cast to a lower precision,
while the variables themselves (and so the gradients and the optimizer state) stay float32."""

from typing import Any, List, Optional, Sequence, Set, Tuple

import jax
import jax.numpy as jn
import numpy as np

from objax._core.frames import LOCAL
from objax._core.pure import Pure, storage_of
from objax.module import Module
from objax.nn._format import class_path
from objax.nn.batchnorm import BatchNorm
from objax.nn.groupnorm import GroupNorm
from objax.nn.layernorm import LayerNorm, RMSNorm
from objax.varcollection import VarCollection
from objax.variable import TrainVar

__all__ = ['MixedPrecision', 'NORMALIZATION_LAYERS']

NORMALIZATION_LAYERS = (BatchNorm, GroupNorm, LayerNorm, RMSNorm)
"""The layers MixedPrecision leaves in float32 by default: their scale and shift stay float32 and they
normalize in float32 (SyncedBatchNorm is a BatchNorm)."""


def _floating_dtype(name: str, dtype: Any) -> np.dtype:
    """`dtype` as a numpy dtype after checking that it is a floating one."""
    try:
        result = jn.dtype(dtype)
    except TypeError:
        result = None
    if result is None or not jn.issubdtype(result, jn.floating):
        raise ValueError(f'MixedPrecision: {name} must be a floating dtype such as jax.numpy.bfloat16, '
                         f'jax.numpy.float16 or jax.numpy.float32, got {dtype!r}')
    return result


def cast_floating(tree: Any, dtype: Any) -> Any:
    """`tree` with every floating array leaf (jax or numpy arrays and scalars) converted to `dtype`; other leaves
    (integer or boolean arrays, Python numbers, anything else) unchanged.

    Args:
        tree: any pytree.
        dtype: the floating dtype to convert to.

    Returns:
        A pytree of the same structure.
    """
    def cast(x):
        if isinstance(x, (jax.Array, np.ndarray, np.generic)) and jn.issubdtype(x.dtype, jn.floating):
            return jn.asarray(x, dtype)
        return x

    return jax.tree.map(cast, tree)


def _modules_of(module: Module, classes: Tuple[type, ...]) -> List[Module]:
    """The modules in `module`'s tree (itself, its module attributes, the items of its module lists...) that are
    instances of `classes`, without looking inside those."""
    found, seen, stack = [], set(), [module]
    while stack:
        m = stack.pop()
        if id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(m, classes):
            found.append(m)
            continue
        stack.extend(v for v in m.__dict__.values() if isinstance(v, Module))
        if isinstance(m, list):
            stack.extend(v for v in list.__iter__(m) if isinstance(v, Module))
    return found


class MixedPrecision(Module):
    """Runs a module with its floating TrainVars and floating inputs cast to `compute_dtype` (bfloat16 by
    default), and gives its floating outputs in `output_dtype`.

    The variables keep their dtype (float32): the cast happens when the wrapped call reads them, so inside
    objax.Grad the gradients of the TrainVars come out float32, and the optimizer state stays float32. The
    TrainVars of the layers of `keep_float32` (the normalization layers by default) are not cast: BatchNorm,
    GroupNorm, LayerNorm and RMSNorm normalize a bfloat16/float16 input in float32 and give their output in the
    input's dtype. StateVars (BatchNorm's running statistics...) and RandomStates are never cast, and what the
    module writes to them is kept as written.

    `vars()` names the wrapped module's variables as if it were not wrapped, so a checkpoint of the model loads
    with or without the policy.
    """

    def __init__(self, module: Module, compute_dtype: Any = jn.bfloat16, output_dtype: Optional[Any] = jn.float32,
                 keep_float32: Sequence[type] = NORMALIZATION_LAYERS):
        """Wraps `module` (its variables are not copied: the wrapper and the module share them).

        Args:
            module: the module to run in lower precision, e.g. a whole model (a Sequential...).
            compute_dtype: the floating dtype its TrainVars and floating inputs are cast to for the call.
            output_dtype: the floating dtype of the floating outputs; None leaves them as computed.
            keep_float32: module classes whose instances (anywhere in `module`'s tree) keep their TrainVars'
                own dtype; () casts every floating TrainVar.

        Raises:
            TypeError: module is not a Module, or keep_float32 is not a sequence of classes.
            ValueError: compute_dtype or output_dtype is not a floating dtype.
        """
        if not isinstance(module, Module):
            raise TypeError(f'MixedPrecision(module): module must be an objax Module, got {type(module).__name__}')
        keep = tuple(keep_float32) if isinstance(keep_float32, (tuple, list)) else None
        if keep is None or not all(isinstance(c, type) for c in keep):
            raise TypeError(f'MixedPrecision: keep_float32 must be a tuple of classes (e.g. (objax.nn.BatchNorm,)), '
                            f'got {keep_float32!r}')
        self.__wrapped__ = module
        self.compute_dtype = _floating_dtype('compute_dtype', compute_dtype)
        self.output_dtype = None if output_dtype is None else _floating_dtype('output_dtype', output_dtype)
        self.keep_float32 = keep

    def __call__(self, *args, **kwargs):
        """Calls the wrapped module with the cast TrainVars and arguments.

        Args:
            *args: the module's positional arguments; floating arrays among them (at any depth of a tuple, list,
                dict...) are cast to compute_dtype.
            **kwargs: the module's keyword arguments, cast likewise.

        Returns:
            What the module returns, with its floating arrays cast to output_dtype (unless that is None).
        """
        pure, cast = self._pure()
        values = pure.values()
        dtypes = {i: values[i].dtype for i in cast if jn.issubdtype(values[i].dtype, jn.floating)}
        values = [x.astype(self.compute_dtype) if i in dtypes else x for i, x in enumerate(values)]
        args, kwargs = cast_floating((args, kwargs), self.compute_dtype)
        outputs, changes = pure(values, *args, **kwargs)
        if changes:  # a cast TrainVar the module assigns keeps its own dtype
            pure.write({i: x.astype(dtypes[i]) if i in dtypes else x for i, x in changes.items()})
        return outputs if self.output_dtype is None else cast_floating(outputs, self.output_dtype)

    def _pure(self) -> Tuple[Pure, Set[int]]:
        """The wrapped module as a pure function of its variables, and the positions of the TrainVars to cast
        (when floating)."""
        module = self.__wrapped__
        pure = Pure(module, module.vars())
        # Inside objax.Grad the values given to the module derive from the differentiated ones: a JAX
        # transformation nested in the module must read them as the gradient transform's own values are read.
        pure.differentiated = any(frame.differentiated for frame in LOCAL.frames)
        kept = {id(v) for m in _modules_of(module, self.keep_float32) for v in storage_of(m.vars().values())}
        return pure, {i for i, v in enumerate(pure.variables) if isinstance(v, TrainVar) and id(v) not in kept}

    def vars(self, scope: str = '') -> VarCollection:
        """The variables of the wrapped module, named as if it were not wrapped.

        Args:
            scope: prefix of every name.

        Returns:
            A new VarCollection {name: variable}.
        """
        return self.__wrapped__.vars(scope)

    def __repr__(self):
        inner = repr(self.__wrapped__).replace('\n', '\n  ')
        keep = ', '.join(class_path(c) for c in self.keep_float32)
        output = None if self.output_dtype is None else self.output_dtype.name
        return (f'{class_path(type(self))}(module={inner}, compute_dtype={self.compute_dtype.name}, '
                f'output_dtype={output}, keep_float32=({keep}{"," if len(self.keep_float32) == 1 else ""}))')
