"""What the module transforms share: taking a module or a function with its collection, their labels in
messages, and (for Jit and Parallel, which compile their function) the collection they run with, rebuilt after
a change of the module structure."""

import threading
from typing import Callable, Optional, Sequence, Tuple, Union

from objax._core import structure
from objax._core.collection import VarCollection
from objax._core.functions import Function
from objax._core.introspect import variable_namer
from objax._core.modules import Module
from objax._core.pure import Pure

__all__ = ['CompiledTransform', 'module_and_vars', 'owner_label', 'values_first']


def module_and_vars(owner: str, f: Union[Module, Callable],
                    vc: Optional[VarCollection]) -> Tuple[Module, VarCollection]:
    """What a transform named `owner` wraps: `f` as a Module (a function becomes a Function of `vc`) and the
    collection it runs with (a Module's own vars() when `vc` is None).

    Args:
        owner: the transform's name, for messages ('Jit', 'Parallel'...).
        f: the module or function given to the transform.
        vc: the collection given, or None.

    Returns:
        (the module, the collection).

    Raises:
        TypeError: `f` is not callable or `vc` not a VarCollection.
        ValueError: `f` is a plain function and `vc` is None.
    """
    if not isinstance(f, Module):
        if not callable(f):
            raise TypeError(f'{owner}(f, vc): f must be callable, got {type(f).__name__}')
        if vc is None:
            raise ValueError(f'{owner}(f, vc): vc is required when f is a function (not a Module): pass the '
                             f'VarCollection of the variables f uses, e.g. model.vars()')
    elif vc is None:
        structure.mark_seen(f)
        vc = f.vars()
    if not isinstance(vc, VarCollection):
        raise TypeError(f'{owner}(f, vc): vc must be a VarCollection, got {type(vc).__name__}')
    return (f if isinstance(f, Module) else Function(f, vc)), vc


def owner_label(owner: str, f: Module) -> str:
    """`owner(name of the wrapped function or module class)`, for error messages.

    Args:
        owner: the transform's name.
        f: the module it wraps.

    Returns:
        For example 'Jit(train_op)'.
    """
    return f'{owner}({getattr(getattr(f, "__wrapped__", f), "__qualname__", type(f).__name__)})'


def values_first(static_argnums: Sequence[int]) -> Tuple[int, ...]:
    """The positions of the static arguments once the variables' values are passed first (non-negative ones
    move by one).

    Args:
        static_argnums: positions among the user's arguments.

    Returns:
        The positions among (values, *arguments).
    """
    return tuple(i + 1 if i >= 0 else i for i in static_argnums)


class CompiledTransform(Module):
    """Base of the transforms that compile their function together with its variables (Jit, Parallel).

    It holds the wrapped module, the collection the programs run with and their pure function (`_pure`), and
    rebuilds them when the module structure changes: a transform built from a module alone (no `vc`) collects
    the module's variables again and starts over if they differ; one given an explicit collection starts over
    with it (new programs; variables outside it are still warned about once each). A subclass builds its
    programs in `_compile` and calls `_refresh` when `structure.GENERATION` differs from `_generation`.

    Args:
        name: the transform's name, for messages.
        f: the module or function to compile.
        vc: the variables f reads or writes; None: `f.vars()`, following f.
        donate: donate the old values' buffers to the compiled calls.
    """

    def __init__(self, name: str, f: Union[Module, Callable], vc: Optional[VarCollection], donate: bool):
        self._follows_module = vc is None
        f, vc = module_and_vars(name, f, vc)
        self.__wrapped__ = f
        self.vc = vc
        self.donate = bool(donate)
        self._owner = owner_label(name, f)
        self._lock = threading.Lock()
        self._generation = structure.GENERATION

    def _use(self, vc: VarCollection, warned: Optional[set] = None):
        """Runs with collection `vc` from now on: a new pure function and new programs (built by `_compile`)."""
        self.vc = vc
        self._pure = Pure(self.__wrapped__, vc, self._owner, variable_namer(self.__wrapped__, vc))
        if warned is not None:
            self._pure.warned = warned
        self._compile()

    def _compile(self):
        """Builds the programs that run `self._pure` (compiled at their first call)."""
        raise NotImplementedError

    def _refresh(self):
        """Brings the transform up to the current module structure (see the class docstring)."""
        generation = structure.GENERATION
        if self._follows_module:
            vc = self.__wrapped__.vars()
            if [(k, id(v)) for k, v in vc.items()] != [(k, id(v)) for k, v in self.vc.items()]:
                self._use(vc)
        else:
            self._use(self.vc, self._pure.warned)
        self._generation = generation
