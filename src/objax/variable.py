"""Variables: the only place where module state lives."""

import abc
from typing import Callable, Optional

import jax
import jax.numpy as jn

from objax import _trace
from objax._array_ops import ArrayOps, register_pytree
from objax.typing import JaxArray

_LOCAL = _trace.LOCAL
_Loan = _trace.Loan

__all__ = ['BaseVar', 'BaseState', 'TrainVar', 'StateVar', 'TrainRef', 'RandomState', 'reduce_mean']


def reduce_mean(x: JaxArray) -> JaxArray:
    """Averages the copies of a value stacked on axis 0 (default merge for per-device/per-example values)."""
    return x.mean(0)


def _reduce_first(x: JaxArray) -> JaxArray:
    return x[0]


def _as_array(tensor, var: 'BaseVar'):
    if isinstance(tensor, jax.Array):
        return tensor
    if isinstance(tensor, BaseVar):
        return tensor.value
    try:
        return jn.asarray(tensor)
    except TypeError as e:
        raise TypeError(f'Cannot assign a {type(tensor).__name__} to {var._label()}: expected an array') from e


class BaseVar(ArrayOps, abc.ABC):
    """Abstract base of all variables. `reduce` merges copies of the value stacked on axis 0."""

    def __init__(self, reduce: Optional[Callable[[JaxArray], JaxArray]]):
        self._reduce = reduce
        _trace.allow(self)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_pytree(cls)

    @property
    @abc.abstractmethod
    def value(self) -> JaxArray:
        raise NotImplementedError

    @value.setter
    @abc.abstractmethod
    def value(self, tensor: JaxArray):
        raise NotImplementedError

    def assign(self, tensor: JaxArray, check: bool = True):
        """Sets the value; with `check` the new value must have the variable's shape and dtype."""
        self.value = tensor

    def reduce(self, tensors: JaxArray):
        """Replaces the value by `reduce(tensors)`, merging per-device or per-example copies (axis 0)."""
        if self._reduce is not None:
            merged = _as_array(self._reduce(tensors), self)
            dtype = self._storage()._stored().dtype
            # e.g. the mean of integer counters is a float: keep the variable's dtype.
            self.assign(merged if merged.dtype == dtype else merged.astype(dtype))

    def _storage(self) -> 'BaseVar':
        """The variable that actually holds the data (itself, except for references)."""
        return self

    def _label(self) -> str:
        name = self.__dict__.get('_name')
        return f'{type(self).__name__} "{name}"' if name else type(self).__name__

    def _check_assign(self, tensor) -> JaxArray:
        tensor = _as_array(tensor, self)
        old = self._storage()._stored()
        if old.shape != tensor.shape:
            raise ValueError(f'Cannot assign to {self._label()}: shape {tuple(tensor.shape)} does not match '
                             f'the variable shape {tuple(old.shape)}')
        if old.dtype != tensor.dtype:
            raise ValueError(f'Cannot assign to {self._label()}: dtype {tensor.dtype} does not match '
                             f'the variable dtype {old.dtype}')
        return tensor

    def __repr__(self):
        try:
            value = self._storage().__dict__['_value']
        except KeyError:
            return f'{type(self).__name__}(<uninitialized>)'
        name = self.__dict__.get('_name')
        name = f', name={name!r}' if name else ''
        reduce = getattr(self._reduce, '__name__', repr(self._reduce))
        if getattr(value, 'size', 0) <= 8 and not isinstance(value, jax.core.Tracer):
            body = repr(value)
        else:
            body = f'shape={tuple(value.shape)}, dtype={value.dtype}'
        return f'{type(self).__name__}({body}, reduce={reduce}{name})'


class _OwnValue:
    """Mixin of the variables that hold their own value (all but references)."""

    def __init__(self, tensor: JaxArray, reduce: Optional[Callable[[JaxArray], JaxArray]] = reduce_mean):
        self._value = _as_array(tensor, self)
        super().__init__(reduce)

    def _read(self) -> JaxArray:
        """The current value: the one a running transform of this thread gave it, else its own."""
        if _LOCAL.frames:
            x = _trace.lookup(self)
            if x is not _trace.MISSING:
                return x
        x = self._value
        if x.__class__ is _Loan:
            x = self._stored()
        return x

    def _stored(self) -> JaxArray:
        """The value in storage, once any compiled call that borrowed it (donation) has stored its new value."""
        x = self._value
        while x.__class__ is _Loan:
            x = x.wait(self)
            if x is _trace.MISSING:
                x = self._value
        return x

    def _write(self, tensor: JaxArray):
        """Stores `tensor` (already checked) where `_read` finds it."""
        if not (_LOCAL.frames and _trace.store(self, tensor)):
            if self._value.__class__ is _Loan:
                self._stored()
            self._value = tensor

    def assign(self, tensor: JaxArray, check: bool = True):
        """Sets the value; with `check` the new value must have the variable's shape and dtype."""
        self._write(self._check_assign(tensor) if check else _as_array(tensor, self))


class TrainVar(_OwnValue, BaseVar):
    """A trainable variable: gradient transforms differentiate it. Its `.value` is read-only; use `assign`."""

    def _refuse(self, tensor: JaxArray):
        raise ValueError(f'{self._label()}.value is read-only: TrainVars are changed through their gradients. '
                         f'Use .assign(new_value) if you know what you are doing.')

    value = property(_OwnValue._read, _refuse)


class BaseState(BaseVar):
    """Abstract base of the non-trainable variables (gradient transforms ignore them)."""


class StateVar(_OwnValue, BaseState):
    """A non-trainable variable whose value can be written directly (running statistics, counters...)."""

    def _set_value(self, tensor: JaxArray):
        self._write(self._check_assign(tensor))

    value = property(_OwnValue._read, _set_value)


class TrainRef(BaseState):
    """A state variable that reads and writes the TrainVar it refers to (used by optimizers)."""

    def __init__(self, ref: TrainVar):
        if not isinstance(ref, TrainVar):
            raise TypeError(f'TrainRef(ref) expects a TrainVar, got {type(ref).__name__}')
        self.ref = ref
        super().__init__(None)

    @property
    def value(self) -> JaxArray:
        return self.ref.value

    @value.setter
    def value(self, tensor: JaxArray):
        self.ref.assign(tensor)

    def assign(self, tensor: JaxArray, check: bool = True):
        """Writes the referenced TrainVar."""
        self.ref.assign(tensor, check)

    def _storage(self) -> BaseVar:
        return self.ref._storage()

    def _label(self) -> str:
        return f'TrainRef to {self.ref._label()}'


class RandomState(StateVar):
    """A random key (classic threefry, as Objax 1.x) that advances each time it is split."""

    def __init__(self, seed: int):
        super().__init__(jax.random.PRNGKey(seed), _reduce_first)

    def seed(self, seed: int):
        """Resets the key to `PRNGKey(seed)`."""
        self.assign(jax.random.PRNGKey(seed))

    def split(self, n: int) -> JaxArray:
        """Returns n new keys, shape (n, 2), and advances this state."""
        with jax.threefry_partitionable(False):
            keys = jax.random.split(self.value, n + 1)
        self._write(keys[0])
        return keys[1:]

