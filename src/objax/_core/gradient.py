"""Derivatives of modules and functions with respect to their TrainVars (and optionally inputs)."""

import inspect
from typing import Any, Callable, List, Optional, Tuple, Union

import jax

from objax._core import reprs
from objax._core.collection import VarCollection
from objax._core.functions import Function
from objax._core.modules import Module, module_or_function_repr, prefixed
from objax._core.pure import Pure
from objax._core.variables import TrainVar
from objax.typing import JaxArray

__all__ = ['Grad', 'GradValues', 'Jacobian', 'Hessian']


def _as_list(outputs) -> Union[list, tuple]:
    """f's outputs as f returned them when a list or tuple (as in Objax 1.8), else a one-element list."""
    return outputs if isinstance(outputs, (list, tuple)) else [outputs]


class _SignatureReturning:
    """Descriptor for `__signature__`: an instance shows its f's parameters with the return annotation
    `returns(f's return annotation)`; the class itself keeps its constructor's signature."""

    def __init__(self, returns: Callable[[Any], Any]):
        self.returns = returns

    def __get__(self, instance, owner=None) -> Optional[inspect.Signature]:
        if instance is None:
            return None
        try:
            signature = inspect.signature(instance.__wrapped__)
        except (TypeError, ValueError):
            return None
        annotation = signature.return_annotation
        annotation = Any if annotation is inspect.Signature.empty else annotation
        return signature.replace(return_annotation=self.returns(annotation))


class _DerivativeBase(Module):
    """Common machinery: differentiates f's first output w.r.t. inputs `input_argnums` and vc's TrainVars, at
    their values on entry. Every variable of vc that f writes (TrainVars included) keeps the value f left."""

    def __init__(self, derivative_fn: Callable, f: Union[Module, Callable], variables: Optional[VarCollection],
                 input_argnums: Optional[Tuple[int, ...]] = None):
        if not callable(f):
            raise TypeError(f'{type(self).__name__}(f, ...): f must be callable, got {type(f).__name__}')
        if variables is None:
            variables = VarCollection()
        if not isinstance(variables, VarCollection):
            raise TypeError(f'{type(self).__name__}(f, variables): variables must be a VarCollection, '
                            f'got {type(variables).__name__}')
        self.__wrapped__ = f
        self.vc = variables
        self.input_argnums = tuple(input_argnums or ())
        self._derivative_fn = derivative_fn
        self._pure = Pure(f, variables)
        self._pure.differentiated = True
        position = {id(v): i for i, v in enumerate(self._pure.variables)}
        # Positions (in _pure.variables) of the differentiated TrainVars, in vc's order.
        self._train = [position[id(v)] for v in variables if isinstance(v, TrainVar)]

    def _evaluate(self, args, kwargs, flatten: bool = True):
        """Returns (derivatives, outputs as a list); stores the values f left in the variables."""
        nargs = len(args)
        for i in self.input_argnums:
            if not -nargs <= i < nargs:
                raise ValueError(f'{type(self).__name__}: input_argnums contains {i} but only {nargs} '
                                 f'positional arguments were given')
        pure, train = self._pure, self._train
        values = pure.values()
        input_values = [args[i] for i in self.input_argnums]

        def target(inputs, train_values):
            call_args, call_values = list(args), list(values)
            for i, x in zip(self.input_argnums, inputs):
                call_args[i] = x
            for i, x in zip(train, train_values):
                call_values[i] = x
            outputs, changes = pure(call_values, *call_args, **kwargs)
            outputs = _as_list(outputs)
            return outputs[0], (outputs, changes)

        derivatives, (outputs, changes) = self._derivative_fn(target, argnums=(0, 1), has_aux=True)(
            input_values, [values[i] for i in train])
        pure.write(changes)
        if flatten:
            derivatives = list(derivatives[0]) + list(derivatives[1])
        return derivatives, outputs

    def vars(self, scope: str = '') -> VarCollection:
        """The differentiated collection, plus the wrapped module's other variables, prefixed with `scope`."""
        out = prefixed(self.vc, scope)
        if isinstance(self.__wrapped__, Module) and not isinstance(self.__wrapped__, Function):
            known = {id(v) for v in out.values()}
            extra = [(k, v) for k, v in self.__wrapped__.vars(scope).items() if id(v) not in known]
            out.update((k, v) for k, v in extra if k not in out)
        return out

    def __repr__(self):
        return (f'{reprs.class_path(self)}(f={module_or_function_repr(self.__wrapped__)}, '
                f'input_argnums={self.input_argnums or None})')


class GradValues(_DerivativeBase):
    """`GradValues(f, vc)(*args)` returns `(grads, outputs)`: the gradients of f's first output w.r.t. the
    inputs in `input_argnums` then vc's TrainVars (a list), and f's outputs as f returned them (a tuple or a
    list; a single output that is neither becomes a one-element list).

    Args:
        f: the module or function to differentiate; its first output (or f's only output) is differentiated.
        variables: the collection whose TrainVars are differentiated (its other variables are left alone);
            None: none, only inputs.
        input_argnums: positions of the positional arguments of f to differentiate too (before the TrainVars).

    Raises:
        TypeError: `f` is not callable or `variables` is not a VarCollection.
    """

    def __init__(self, f: Union[Module, Callable], variables: Optional[VarCollection],
                 input_argnums: Optional[Tuple[int, ...]] = None):
        super().__init__(jax.grad, f, variables, input_argnums)

    # inspect.signature(instance): f's parameters, returning `Tuple[List[JaxArray], <f's return annotation>]`.
    __signature__ = _SignatureReturning(lambda returns: Tuple[List[JaxArray], returns])

    def __call__(self, *args, **kwargs) -> Tuple[List, List]:
        """Runs f, keeping the values it leaves in the variables, and differentiates its first output.

        Args:
            *args: f's positional arguments.
            **kwargs: f's keyword arguments.

        Returns:
            (gradients, outputs): one gradient per input of `input_argnums` then per TrainVar, each of the shape
            of what it differentiates; and f's outputs (a tuple or list as f returned it, else `[output]`).

        Raises:
            ValueError: `input_argnums` names a position beyond the positional arguments given.
            TypeError: f's first output is not a scalar.
        """
        return self._evaluate(args, kwargs)


class Grad(_DerivativeBase):
    """`Grad(f, vc)(*args)` returns the gradients of f's first output (inputs first, then TrainVars).

    Args:
        f: the module or function to differentiate; its first output (or its only one) must be a scalar.
        variables: the collection whose TrainVars are differentiated (its other variables are left alone);
            None: none, only inputs.
        input_argnums: positions of the positional arguments of f to differentiate too (before the TrainVars).

    Raises:
        TypeError: `f` is not callable or `variables` is not a VarCollection.
    """

    def __init__(self, f: Union[Module, Callable], variables: Optional[VarCollection],
                 input_argnums: Optional[Tuple[int, ...]] = None):
        super().__init__(jax.grad, f, variables, input_argnums)

    # inspect.signature(instance): f's parameters, returning `List[JaxArray]`.
    __signature__ = _SignatureReturning(lambda returns: List[JaxArray])

    def __call__(self, *args, **kwargs) -> List:
        """Runs f, keeping the values it leaves in the variables, and differentiates its first output.

        Args:
            *args: f's positional arguments.
            **kwargs: f's keyword arguments.

        Returns:
            One gradient per input of `input_argnums` then per TrainVar, each of the shape of what it
            differentiates.

        Raises:
            ValueError: `input_argnums` names a position beyond the positional arguments given.
            TypeError: f's first output is not a scalar.
        """
        return self._evaluate(args, kwargs)[0]


class Jacobian(_DerivativeBase):
    """`Jacobian(f, vc)(*args)`: for each input in `input_argnums` then each TrainVar of vc, the Jacobian of
    f's (first) output, of shape output.shape + input.shape.

    Args:
        f: the module or function to differentiate; its first output (or f's only output) is differentiated.
        variables: the collection whose TrainVars are differentiated (its other variables are left alone);
            None: none, only inputs.
        input_argnums: positions of the positional arguments of f to differentiate too (before the TrainVars).

    Raises:
        TypeError: `f` is not callable or `variables` is not a VarCollection.
    """

    def __init__(self, f: Union[Module, Callable], variables: Optional[VarCollection],
                 input_argnums: Optional[Tuple[int, ...]] = None):
        super().__init__(jax.jacrev, f, variables, input_argnums)

    def __call__(self, *args, **kwargs) -> List:
        """Runs f, keeping the values it leaves in the variables, and differentiates its first output.

        Args:
            *args: f's positional arguments.
            **kwargs: f's keyword arguments.

        Returns:
            One Jacobian per input of `input_argnums` then per TrainVar, of shape output.shape + its shape.

        Raises:
            ValueError: `input_argnums` names a position beyond the positional arguments given.
        """
        return self._evaluate(args, kwargs)[0]


def _hessian(fun, argnums, has_aux):
    return jax.jacfwd(jax.jacrev(fun, argnums=argnums, has_aux=has_aux), argnums=argnums, has_aux=has_aux)


class Hessian(_DerivativeBase):
    """`Hessian(f, vc)(*args)`: second derivatives of f's scalar output; entry `[i][j]` pairs the i-th and
    j-th differentiated quantities (inputs of `input_argnums` first, then TrainVars).

    Args:
        f: the module or function to differentiate; its first output (or its only one) should be a scalar
            (otherwise every entry gains that output's shape in front).
        variables: the collection whose TrainVars are differentiated (its other variables are left alone);
            None: none, only inputs.
        input_argnums: positions of the positional arguments of f to differentiate too (before the TrainVars).

    Raises:
        TypeError: `f` is not callable or `variables` is not a VarCollection.
    """

    def __init__(self, f: Union[Module, Callable], variables: Optional[VarCollection],
                 input_argnums: Optional[Tuple[int, ...]] = None):
        super().__init__(_hessian, f, variables, input_argnums)

    def __call__(self, *args, **kwargs) -> List[List]:
        """Runs f, keeping the values it leaves in the variables, and takes the second derivatives of its first
        output.

        Args:
            *args: f's positional arguments.
            **kwargs: f's keyword arguments.

        Returns:
            A square list of lists: `[i][j]` has shape q_i.shape + q_j.shape, where q lists the inputs of
            `input_argnums` then the TrainVars.

        Raises:
            ValueError: `input_argnums` names a position beyond the positional arguments given.
        """
        raw, _ = self._evaluate(args, kwargs, flatten=False)
        return [list(row[0]) + list(row[1]) for row in list(raw[0]) + list(raw[1])]
