"""What the module transforms share: taking a module or a function with its collection, their labels in
messages, and (for Jit and Parallel, which compile their function) the collection they run with, rebuilt after
a change of the module structure or of the variables' layouts that concerns them."""

import threading
from typing import Callable, Optional, Sequence, Set, Tuple, Union

import jax

from objax._core import layout, structure
from objax._core.collection import VarCollection
from objax._core.functions import Function
from objax._core.introspect import variable_namer
from objax._core.lending import Lending
from objax._core.modules import Module
from objax._core.pure import Pure

__all__ = ['CompiledTransform', 'calls_back', 'lost_values_error', 'module_and_vars', 'owner_label', 'values_first']


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


def calls_back(jaxpr) -> bool:
    """Whether a traced program calls back into Python (jax.pure_callback, io_callback, jax.debug.callback...),
    anywhere in it, sub-programs (cond branches, loop bodies, inner jits) included.

    Args:
        jaxpr: a Jaxpr or ClosedJaxpr.

    Returns:
        True when some equation is a host callback.
    """
    jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
    for eqn in jaxpr.eqns:
        if 'callback' in eqn.primitive.name:
            return True
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, 'jaxpr', sub)
                if hasattr(inner, 'eqns') and calls_back(inner):
                    return True
    return False


def lost_values_error(owner: str, pure: Pure, lent: list, error: BaseException) -> Optional[RuntimeError]:
    """The error to raise when a donating call failed after its program took the variables' buffers (a failure
    while it ran): None when every lent value is intact (the variables simply get them back).

    Args:
        owner: the transform's label, e.g. 'Jit(train_op)'.
        pure: the transform's pure function (its variables, in the order of `lent`).
        lent: the values lent to the call.
        error: what the call raised.

    Returns:
        A RuntimeError naming the variables whose values are lost and how to recover, or None.
    """
    lost = [v for v, x in zip(pure.variables, lent) if isinstance(x, jax.Array) and x.is_deleted()]
    if not lost:
        return None
    names = [pure.describe(v) if pure.describe else None for v in lost]
    shown = ', '.join(n or v._label() for n, v in zip(names, lost[:8])) + (' ...' if len(lost) > 8 else '')
    first = str(error).strip().split('\n', 1)[0][:200]
    return RuntimeError(f'{owner} failed while its compiled program ran ({type(error).__name__}: {first}), after '
                        f'the program had taken the buffers of {len(lost)} donated variable value(s): {shown}. '
                        f'Those values are lost: assign them again (e.g. restore the last checkpoint). Pass '
                        f'donate=False to keep the old values through failing calls.')


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

    It holds the wrapped module, the collection the programs run with, their pure function (`_pure`) and the
    `_lending` of their variables to donating calls, and rebuilds them when the module structure changes: a
    transform built from a module alone (no `vc`) collects the module's variables again and starts over if they
    differ; one given an explicit collection starts over with it (new programs; variables outside it are still
    warned about once each) when the change concerns it: a change of the wrapped module, of a module holding (or
    having held, in the part replaced) a variable of the collection or one f read outside it, or a change of unknown
    reach. A subclass builds its programs in `_compile` and calls `_refresh` when `structure.GENERATION` differs
    from `_generation`.

    The layouts objax.sharding recorded for the variables when the programs were built are in `_layouts`; a
    subclass compiling with them calls `_layouts_changed()` when `layout.VERSION` differs from
    `_layout_version`, and starts over only when one of its own variables was laid out anew.

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
        self._lending = Lending(self._pure.variables, self._lock)
        self._layout_version = layout.VERSION  # read first: a layout recorded meanwhile is noticed next call
        self._layouts = layout.layouts(self._pure.variables)
        self._compile()

    def _layouts_changed(self) -> bool:
        """Whether objax.sharding recorded another layout for one of the variables since the programs were built
        (the layouts of other collections do not matter); notes that the current layouts were checked."""
        self._layout_version = layout.VERSION
        return layout.layouts(self._pure.variables) != self._layouts

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
        elif self._concerned_since(self._generation):
            self._use(self.vc, self._pure.warned)
        self._generation = generation

    def _concerned_since(self, generation: int) -> bool:
        """Whether a structure change made after `generation` may change which variables f uses (see the class
        docstring): the other changes leave its programs as they are."""
        changes = structure.changes_since(generation)
        if changes is None:
            return True
        own: Optional[Set[int]] = None
        for module, held in changes:
            if module is None or module is self.__wrapped__:
                return True
            if own is None:
                own = set(self._pure.warned)
                own.update(i for v in self.vc.values() for i in (id(v), id(v._storage())))
            if not own.isdisjoint(held):
                return True
            try:
                now = list(module.vars().values())
            except Exception:  # a module graph with a cycle, a vars() of its own that fails
                return True
            if any(id(v) in own or id(v._storage()) in own for v in now):
                return True
        return False
