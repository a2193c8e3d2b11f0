"""Modules: plain Python objects whose variables (and sub-modules' variables) `vars()` collects by name."""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from objax.varcollection import VarCollection
from objax.variable import BaseVar

__all__ = ['Module', 'ModuleList', 'Function', 'ForceArgs', 'Jit', 'Parallel', 'Vectorize']

# ids of the modules whose vars() is being collected: a module met again while collecting is a cycle.
_COLLECTING: List[int] = []


class _Collecting:
    """Guards vars() against module graphs with cycles (which would otherwise recurse forever)."""

    def __init__(self, module: 'Module', scope: str):
        self.module, self.scope = module, scope

    def __enter__(self):
        if id(self.module) in _COLLECTING:
            raise ValueError(f'Module graph has a cycle: {type(self.module).__name__} at "{self.scope}" contains '
                             f'itself (directly or through its sub-modules); vars() cannot name its variables')
        _COLLECTING.append(id(self.module))

    def __exit__(self, *exc):
        _COLLECTING.pop()


def _add(vc: VarCollection, name: str, value: Any) -> None:
    if isinstance(value, BaseVar):
        dict.__setitem__(vc, name, value)
        value.__dict__['_name'] = name
    elif isinstance(value, Module):
        vc.update(value.vars(scope=name))


class Module:
    """A container of variables and sub-modules with methods that use them."""

    def vars(self, scope: str = '') -> VarCollection:
        """All variables of this module and its sub-modules, named `scope(Class).attribute...`."""
        vc = VarCollection()
        with _Collecting(self, scope):
            prefix = f'{scope}({type(self).__name__}).'
            for k, v in self.__dict__.items():
                _add(vc, prefix + k, v)
        return vc

    def __call__(self, *args, **kwargs):
        raise TypeError(f'{type(self).__name__} is a Module without a __call__ method')


class ModuleList(Module, list):
    """A list whose variables and modules are seen by vars() (a plain list's are not)."""

    def vars(self, scope: str = '') -> VarCollection:
        """Variables of the list items, named `scope(ModuleList)[i]...`, then of any attributes."""
        vc = VarCollection()
        with _Collecting(self, scope):
            prefix = f'{scope}({type(self).__name__})'
            for i, v in enumerate(self):
                _add(vc, f'{prefix}[{i}]', v)
            for k, v in self.__dict__.items():
                _add(vc, f'{prefix}.{k}', v)
        return vc

    def __getitem__(self, key: Union[int, slice]):
        value = list.__getitem__(self, key)
        if isinstance(key, slice):
            return type(self)(value)
        return value

    def __repr__(self):
        body = ',\n'.join('  ' + repr(v).replace('\n', '\n  ') for v in self)
        return f'{type(self).__name__}([\n{body}\n])' if len(self) else f'{type(self).__name__}([])'

    # Lists are not hashable; modules are (by identity), ModuleList needs the same for caching and sets.
    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


class Function(Module):
    """Turns a function that uses the variables `vc` into a Module (so that transforms can take it)."""

    def __init__(self, f: Callable, vc: VarCollection):
        if not callable(f):
            raise TypeError(f'Function(f, vc): f must be callable, got {type(f).__name__}')
        if not isinstance(vc, VarCollection):
            raise TypeError(f'Function(f, vc): vc must be a VarCollection, got {type(vc).__name__}')
        self.__wrapped__ = f
        self.vc = vc

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def vars(self, scope: str = '') -> VarCollection:
        """The collection given at construction, each name prefixed with `scope`."""
        return _prefixed(self.vc, scope) if scope else VarCollection(self.vc)

    @staticmethod
    def with_vars(vc: VarCollection):
        """Decorator: `@Function.with_vars(model.vars())` makes the decorated function a Function."""
        return lambda f: Function(f, vc)

    @staticmethod
    def auto_vars(f: Callable) -> 'Function':
        """A Function whose collection is found by inspecting which variables/modules `f` refers to."""
        from objax._introspect import find_used_variables
        return Function(f, find_used_variables(f))

    def __repr__(self):
        return f'{type(self).__name__}(f={getattr(self.__wrapped__, "__qualname__", self.__wrapped__)!r})'


class ForceArgs(Module):
    """Wraps a module so that some keyword arguments are always given specific values."""

    class ANY:
        """Matches any value in `ForceArgs.undo`."""

    def __init__(self, module: Module, **kwargs):
        if not callable(module):
            raise TypeError(f'ForceArgs(module): module must be callable, got {type(module).__name__}')
        self.__wrapped__ = module
        self.forced_kwargs: Dict[str, Any] = kwargs

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **{**kwargs, **self.forced_kwargs})

    def vars(self, scope: str = '') -> VarCollection:
        """The variables of the wrapped module, named as if it were not wrapped."""
        if isinstance(self.__wrapped__, Module):
            return self.__wrapped__.vars(scope)
        return VarCollection()

    @staticmethod
    def undo(module: Module, **kwargs):
        """Removes forced arguments in `module`'s tree, in place: all of them, or those matching kwargs
        (`name=value`, or `name=ForceArgs.ANY` for any value). Wrappers left with nothing to force go away."""

        def strip(wrapper: 'ForceArgs'):
            if not kwargs:
                wrapper.forced_kwargs = {}
            else:
                for k, v in kwargs.items():
                    if k in wrapper.forced_kwargs and (v is ForceArgs.ANY or wrapper.forced_kwargs[k] == v):
                        del wrapper.forced_kwargs[k]
            inner = unwrap(wrapper.__wrapped__)
            wrapper.__wrapped__ = inner
            return inner if not wrapper.forced_kwargs else wrapper

        def unwrap(m):
            if isinstance(m, ForceArgs):
                return strip(m)
            visit(m)
            return m

        visited = set()

        def visit(m):
            if not isinstance(m, Module) or id(m) in visited:
                return
            visited.add(id(m))
            for k, v in list(m.__dict__.items()):
                if isinstance(v, Module):
                    m.__dict__[k] = unwrap(v)
            if isinstance(m, list):
                for i, v in enumerate(list.__iter__(m)):
                    if isinstance(v, Module):
                        list.__setitem__(m, i, unwrap(v))

        visit(module)

    def __repr__(self):
        forced = ', '.join(f'{k}={v!r}' for k, v in self.forced_kwargs.items())
        return f'{type(self).__name__}({self.__wrapped__!r}, {forced})'


def _prefixed(vc: VarCollection, scope: str) -> VarCollection:
    """A new collection holding the variables of `vc`, each name prefixed with `scope`."""
    out = VarCollection()
    out.update((scope + k, v) for k, v in vc.items())
    return out


def _module_and_vars(owner: str, f: Union[Module, Callable],
                     vc: Optional[VarCollection]) -> Tuple[Module, VarCollection]:
    """What a transform named `owner` wraps: `f` as a Module (a function becomes a Function of `vc`) and the
    collection it runs with (a Module's own vars() when `vc` is None)."""
    if not isinstance(f, Module):
        if not callable(f):
            raise TypeError(f'{owner}(f, vc): f must be callable, got {type(f).__name__}')
        if vc is None:
            raise ValueError(f'{owner}(f, vc): vc is required when f is a function (not a Module): pass the '
                             f'VarCollection of the variables f uses, e.g. model.vars()')
    elif vc is None:
        vc = f.vars()
    if not isinstance(vc, VarCollection):
        raise TypeError(f'{owner}(f, vc): vc must be a VarCollection, got {type(vc).__name__}')
    return (f if isinstance(f, Module) else Function(f, vc)), vc


def _owner_label(owner: str, f: Module) -> str:
    """`owner(name of the wrapped function or module class)`, for error messages."""
    return f'{owner}({getattr(getattr(f, "__wrapped__", f), "__qualname__", type(f).__name__)})'


# Objax 1.8 defined the transforms in objax.module: `from objax.module import Jit` keeps working. They are
# imported on first access because their own modules import this one.
_TRANSFORMS = {'Jit': 'objax.jit', 'Parallel': 'objax.parallel', 'Vectorize': 'objax.vectorize'}


def __getattr__(name: str):
    if name in _TRANSFORMS:
        import importlib
        return getattr(importlib.import_module(_TRANSFORMS[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
