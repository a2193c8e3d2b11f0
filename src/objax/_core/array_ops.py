"""Array behaviour for variables: operators, numpy/jax conversion and array methods through `.value`.

JAX >= 0.9 no longer calls `__jax_array__` while abstractifying the arguments of its (mostly jitted)
jax.numpy functions, so variables are also registered as pytrees whose single leaf is their value. Inside
a jitted jax.numpy function a variable is rebuilt as a light `_ValueView` that converts with `__jax_array__`.
"""

import operator

import jax
import numpy as np

__all__ = ['ArrayOps', 'register_pytree']


def _binary(op):
    def forward(self, other):
        return op(self.value, other)

    def backward(self, other):
        return op(other, self.value)

    return forward, backward


class ArrayOps:
    """Mixin: everything an array offers, computed on `self.value`."""
    __slots__ = ()
    __array_priority__ = 100  # numpy defers binary operators to us, so results stay jax arrays.

    def __jax_array__(self):
        return self.value

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.value, dtype=dtype)

    # Container protocol.
    def __getitem__(self, idx):
        return self.value[idx]

    def __len__(self):
        return len(self.value)

    def __iter__(self):
        return iter(self.value)

    # Conversions.
    def __bool__(self):
        return bool(self.value)

    def __float__(self):
        return float(self.value)

    def __int__(self):
        return int(self.value)

    def __index__(self):
        return operator.index(self.value)

    def __complex__(self):
        return complex(self.value)

    # Unary operators.
    def __neg__(self):
        return -self.value

    def __pos__(self):
        return +self.value

    def __abs__(self):
        return abs(self.value)

    def __invert__(self):
        return ~self.value

    # Binary operators, forward and reflected.
    __add__, __radd__ = _binary(operator.add)
    __sub__, __rsub__ = _binary(operator.sub)
    __mul__, __rmul__ = _binary(operator.mul)
    __truediv__, __rtruediv__ = _binary(operator.truediv)
    __floordiv__, __rfloordiv__ = _binary(operator.floordiv)
    __mod__, __rmod__ = _binary(operator.mod)
    __pow__, __rpow__ = _binary(operator.pow)
    __matmul__, __rmatmul__ = _binary(operator.matmul)
    __and__, __rand__ = _binary(operator.and_)
    __or__, __ror__ = _binary(operator.or_)
    __xor__, __rxor__ = _binary(operator.xor)
    __lshift__, __rlshift__ = _binary(operator.lshift)
    __rshift__, __rrshift__ = _binary(operator.rshift)

    def __divmod__(self, other):
        return divmod(self.value, other)

    def __rdivmod__(self, other):
        return divmod(other, self.value)

    # Comparisons are element-wise like arrays; hashing stays by identity so variables can key dicts.
    def __lt__(self, other):
        return self.value < other

    def __le__(self, other):
        return self.value <= other

    def __gt__(self, other):
        return self.value > other

    def __ge__(self, other):
        return self.value >= other

    def __eq__(self, other):
        return self.value == other

    def __ne__(self, other):
        return self.value != other

    __hash__ = object.__hash__

    # Array properties and methods.
    @property
    def shape(self):
        return self.value.shape

    @property
    def dtype(self):
        return self.value.dtype

    @property
    def ndim(self):
        return self.value.ndim

    @property
    def size(self):
        return self.value.size

    @property
    def T(self):
        return self.value.T

    def __getattr__(self, name):
        # Only reached when normal lookup fails: forward public array methods (sum, reshape, astype...).
        if name.startswith('_'):
            raise AttributeError(name)
        value = self.value
        try:
            return getattr(value, name)
        except AttributeError:
            raise AttributeError(f'{type(self).__name__} has no attribute {name!r} '
                                 f'(nor does its value of type {type(value).__name__})') from None


class _ValueView(ArrayOps):
    """What a variable becomes inside a jitted jax.numpy function: its value, with array behaviour."""
    __slots__ = ('value',)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return f'_ValueView({self.value!r})'


def _flatten(var):
    return (var.value,), None


def _unflatten(_, children):
    return _ValueView(children[0])


def register_pytree(cls) -> None:
    """Registers `cls` as a pytree with one leaf, its value."""
    jax.tree_util.register_pytree_node(cls, _flatten, _unflatten)


register_pytree(_ValueView)
