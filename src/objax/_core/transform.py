"""What the module transforms share: taking a module or a function with its collection, their labels in
messages, (for Jit and Parallel, which compile their function) the collection they run with, rebuilt after
a change of the module structure or of the variables' layouts that concerns them, and (for Remat and the
control flow, which run their functions in place) the pure function of their collection."""

import threading
from typing import Callable, Dict, Optional, Sequence, Set, Tuple, Union

import jax

from objax._core import layout, reprs, structure
from objax._core.collection import VarCollection
from objax._core.functions import Function
from objax._core.introspect import variable_namer
from objax._core.lending import Lending
from objax._core.modules import Module, module_or_function_repr
from objax._core.pure import Pure

__all__ = ['CompiledTransform', 'InPlaceTransform', 'call_given', 'calls_back', 'lost_values_error', 'module_and_vars',
           'owner_label', 'values_first']


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
        self._lending = Lending(self._pure.variables)
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


def call_given(fn: Callable, *args, **kwargs):
    """`fn(*args, **kwargs)`: the function of the Pure of an InPlaceTransform, which runs any of its functions.

    Args:
        fn: the function to run.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Returns:
        What fn returns.
    """
    return fn(*args, **kwargs)


class InPlaceTransform(Module):
    """Base of the transforms that run their functions where they are called, inside the caller's trace (Remat,
    Scan, Cond, WhileLoop, ForiLoop): they compile nothing of their own.

    Each holds one Pure over its collection whose function runs the function it is given (`call_given`):
    `self._pure(values, fn, *args)`. Reading a variable outside the collection looks through to the enclosing
    transforms (or the variable's storage); writing one raises objax.VariableOutsideCollectionError. Without
    `vc` the collection is the functions' vars() and follows them after a structure change; subclasses call
    `_current()` to get the Pure of the current structure, and reset what they learnt of it in `_renewed`.

    Args:
        name: the transform's name, for messages.
        functions: {attribute name: function}; one function is kept as `__wrapped__` (whatever the name),
            several under their names (plain functions as objax.Function of vc).
        vc: the variables the functions read or write; None: their vars() (then they must be Modules).

    Raises:
        TypeError: a function is not callable or `vc` is not a VarCollection.
        ValueError: `vc` is None and a function is not a Module.
    """

    def __init__(self, name: str, functions: Dict[str, Callable], vc: Optional[VarCollection]):
        self._name = name
        self._follows_module = vc is None
        if len(functions) == 1:
            f, vc = module_and_vars(name, next(iter(functions.values())), vc)
            self.__wrapped__ = f
            self._functions = {'__wrapped__': f}
        else:
            made = {}
            for key, f in functions.items():
                made[key], _ = module_and_vars(name, f, vc if vc is not None else None)
                setattr(self, key, made[key])
            self._functions = made
            vc = self._collect() if vc is None else vc
        self._use(vc)

    def _collect(self) -> VarCollection:
        """The functions' variables now (each named after its attribute when there are several)."""
        if len(self._functions) == 1:
            return self.__wrapped__.vars()
        vc = VarCollection()
        for key, f in self._functions.items():
            vc.update(f.vars(key))
        return vc

    def _use(self, vc: VarCollection):
        self.vc = vc
        functions = list(self._functions.values())
        namers = [variable_namer(f, vc) for f in functions]

        def describe(var) -> Optional[str]:
            return next((name for name in (namer(var) for namer in namers) if name), None)

        self._pure = Pure(call_given, vc, owner_label(self._name, functions[0]), describe)
        self._pure.open_reads = True
        self._generation = structure.GENERATION
        self._renewed()

    def _renewed(self):
        """Forgets what was learnt of the previous collection (called with each new Pure)."""

    def _current(self) -> Pure:
        """The Pure of the current collection (collected again after a structure change, without vc)."""
        if self._follows_module and self._generation != structure.GENERATION:
            vc = self._collect()
            if [(k, id(v)) for k, v in vc.items()] != [(k, id(v)) for k, v in self.vc.items()]:
                self._use(vc)
            self._generation = structure.GENERATION
        return self._pure

    def __repr__(self):
        functions = ', '.join(f'{"f" if k == "__wrapped__" else k}={module_or_function_repr(f)}'
                              for k, f in self._functions.items())
        return f'{reprs.class_path(self)}({functions})'
