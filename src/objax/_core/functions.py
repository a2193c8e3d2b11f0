"""Function: a plain function that uses variables, made a Module (so that the transforms can take it)."""

from typing import Callable

from objax._core import reprs
from objax._core.collection import VarCollection
from objax._core.introspect import find_used_variables
from objax._core.modules import Module, module_or_function_repr, prefixed

__all__ = ['Function']


class Function(Module):
    """Turns a function that uses the variables `vc` into a Module (so that transforms can take it).

    Args:
        f: the function; calling the Function calls it with the same arguments.
        vc: the variables f reads or writes. `vars()` names them `{f.__name__}` + their name in vc.

    Raises:
        TypeError: `f` is not callable or `vc` is not a VarCollection.
    """

    def __init__(self, f: Callable, vc: VarCollection):
        if not callable(f):
            raise TypeError(f'Function(f, vc): f must be callable, got {type(f).__name__}')
        if not isinstance(vc, VarCollection):
            raise TypeError(f'Function(f, vc): vc must be a VarCollection, got {type(vc).__name__}')
        self.__wrapped__ = f
        self.vc = _function_collection(f, vc)

    def __call__(self, *args, **kwargs):
        """Calls f.

        Args:
            *args: f's positional arguments.
            **kwargs: f's keyword arguments.

        Returns:
            What f returns.
        """
        return self.__wrapped__(*args, **kwargs)

    def vars(self, scope: str = '') -> VarCollection:
        """The collection given at construction with each name prefixed by `{f.__name__}` (when f has a
        `__name__`), then by `scope`.

        Args:
            scope: prefix of every name.

        Returns:
            A new VarCollection {name: variable}.
        """
        return prefixed(self.vc, scope) if scope else VarCollection(self.vc)

    @staticmethod
    def with_vars(vc: VarCollection):
        """Decorator: `@Function.with_vars(model.vars())` makes the decorated function a Function.

        Args:
            vc: the variables the decorated function uses.

        Returns:
            A decorator turning a function f into `Function(f, vc)`.
        """
        return lambda f: Function(f, vc)

    @staticmethod
    def auto_vars(f: Callable) -> 'Function':
        """A Function whose collection is found by inspecting which variables/modules `f` refers to.

        Args:
            f: the function; the variables and modules it reaches by name (globals, closure cells, a bound
                method's `self`) are collected.

        Returns:
            `Function(f, vc)` with the collection found.
        """
        return Function(f, find_used_variables(f))

    def __repr__(self):
        return f'{reprs.class_path(self)}(f={module_or_function_repr(self.__wrapped__)})'


def _function_collection(f: Callable, vc: VarCollection) -> VarCollection:
    """A Function's collection: vc's names prefixed with `{f.__name__}` when f has a name (as in Objax 1.8)."""
    name = getattr(f, '__name__', None)
    if not isinstance(name, str):
        return VarCollection(vc)
    return prefixed(vc, '{' + name + '}')
