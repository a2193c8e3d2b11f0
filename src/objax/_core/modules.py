"""Modules: plain Python objects whose variables (and sub-modules' variables) `vars()` collects by name."""

import inspect
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from objax._core import reprs, structure
from objax._core.collection import VarCollection, count
from objax._core.display import render_attributes
from objax._core.variables import BaseVar, record_name

__all__ = ['Module', 'ModuleList', 'ForceArgs', 'force_positional', 'module_or_function_repr', 'prefixed']


class _CollectingIds(threading.local):
    """ids of the modules whose vars() this thread is collecting: a module met again is a cycle."""

    def __init__(self):
        self.ids = []


_COLLECTING = _CollectingIds()


class _Collecting:
    """Guards vars() against module graphs with cycles (which would otherwise recurse forever)."""

    def __init__(self, module: 'Module', scope: str):
        self.module, self.scope = module, scope

    def __enter__(self):
        structure.mark_seen(self.module)
        if id(self.module) in _COLLECTING.ids:
            raise ValueError(f'Module graph has a cycle: {type(self.module).__name__} at "{self.scope}" contains '
                             f'itself (directly or through its sub-modules); vars() cannot name its variables')
        _COLLECTING.ids.append(id(self.module))

    def __exit__(self, *exc):
        _COLLECTING.ids.pop()


def _add(vc: VarCollection, name: str, value: Any) -> None:
    if isinstance(value, BaseVar):
        dict.__setitem__(vc, name, value)
        record_name(value, name)
    elif isinstance(value, Module):
        structure.mark_seen(value)
        vc.update(value.vars(scope=name))


class Module:
    """A container of variables and sub-modules with methods that use them."""

    def vars(self, scope: str = '') -> VarCollection:
        """All variables of this module and its sub-modules, named `scope(Class).attribute...`.

        Attributes are walked in insertion order; a module held in the attribute `__wrapped__` is named without
        the attribute name (`scope(Class)(Wrapped)...`), as in Objax 1.8.

        Args:
            scope: prefix of every name.

        Returns:
            A new VarCollection {name: variable}.

        Raises:
            ValueError: the module graph has a cycle (a module contains itself).
        """
        vc = VarCollection()
        with _Collecting(self, scope):
            _add_attributes(vc, f'{scope}({type(self).__name__})', self.__dict__)
        return vc

    def __call__(self, *args, **kwargs):
        """Subclasses define what calling the module computes; this default refuses.

        Args:
            *args: the subclass's positional arguments.
            **kwargs: the subclass's keyword arguments.

        Raises:
            TypeError: the subclass defines no `__call__`.
        """
        raise TypeError(f'{type(self).__name__} is a Module without a __call__ method')

    # Structure changes (see objax._core.structure): compiled transforms notice them and stop using old programs.
    def __setattr__(self, name: str, value: Any):
        old = self.__dict__.get(name, _ABSENT)
        if old is not value and (isinstance(value, _PARTS) or isinstance(old, _PARTS)) and (
                old is not _ABSENT or structure.is_seen(self)):
            structure.bump(self, _held(old))
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str):
        old = self.__dict__.get(name)
        if isinstance(old, _PARTS):
            structure.bump(self, _held(old))
        object.__delattr__(self, name)

    def __repr__(self):
        return f'{reprs.class_path(self)}()'

    def __treescope_repr__(self, path: Optional[str], subtree_renderer: Callable):
        """The rendering treescope shows (see objax._core.display): a foldable tree of the module's attributes
        (sub-modules, variables with their kind, value summary and sharding, other public values), with the
        parameter count of vars() on its first line. The variables of vars() that no attribute shows (those a
        module with its own vars(), such as objax.nn.Stack, makes) are shown under `vars()`.

        Args:
            path: the module's path from the rendered root.
            subtree_renderer: treescope's renderer of the parts.

        Returns:
            A treescope rendering.
        """
        vc = self.vars()
        items = [(f'{k}=', f'.{k}', v) for k, v in _shown_attributes(self)]
        shown = {id(v) for _, _, x in items for v in (x.vars().values() if isinstance(x, Module) else [x])}
        others = VarCollection((k, v) for k, v in vc.items() if id(v) not in shown)
        if others:
            items.append(('vars()=', '.vars()', others))
        return render_attributes(self, items, ('(', ')'), count(vc), path, subtree_renderer)


class ModuleList(Module, list):
    """A list whose variables and modules are seen by vars() (a plain list's are not)."""

    def vars(self, scope: str = '') -> VarCollection:
        """Variables of the list items, named `scope(ModuleList)[i]...` (other attributes are not collected).

        Args:
            scope: prefix of every name.

        Returns:
            A new VarCollection {name: variable}.

        Raises:
            ValueError: the module graph has a cycle (the list contains itself).
        """
        vc = VarCollection()
        with _Collecting(self, scope):
            prefix = f'{scope}({type(self).__name__})'
            for i, v in enumerate(self):
                _add(vc, f'{prefix}[{i}]', v)
        return vc

    def __getitem__(self, key: Union[int, slice]):
        value = list.__getitem__(self, key)
        if isinstance(key, slice):
            return type(self)(value)
        return value

    def __repr__(self):
        return _list_repr(self)

    def __treescope_repr__(self, path: Optional[str], subtree_renderer: Callable):
        """The rendering treescope shows: the items as a foldable list, with the parameter count of vars().

        Args:
            path: the list's path from the rendered root.
            subtree_renderer: treescope's renderer of the parts.

        Returns:
            A treescope rendering.
        """
        items = [('', f'[{i}]', v) for i, v in enumerate(self)]
        return render_attributes(self, items, ('([', '])'), count(self.vars()), path, subtree_renderer)

    def _changed(self):
        if structure.is_seen(self):
            structure.bump(self, _held(self))

    def __setitem__(self, key, value):
        self._changed()
        list.__setitem__(self, key, value)

    def __delitem__(self, key):
        self._changed()
        list.__delitem__(self, key)

    def __iadd__(self, other):
        self._changed()
        return list.__iadd__(self, other)

    def __imul__(self, n):
        self._changed()
        return list.__imul__(self, n)

    def append(self, value):
        """Adds an item at the end.

        Args:
            value: the item (a module, a variable or any other value).
        """
        self._changed()
        list.append(self, value)

    def extend(self, values):
        """Adds the items of `values` at the end.

        Args:
            values: an iterable of items.
        """
        self._changed()
        list.extend(self, values)

    def insert(self, index, value):
        """Inserts an item before position `index`.

        Args:
            index: the position, as for list.insert.
            value: the item.
        """
        self._changed()
        list.insert(self, index, value)

    def pop(self, index=-1):
        """Removes and returns the item at `index`.

        Args:
            index: the position (default: the last item).

        Returns:
            The removed item.

        Raises:
            IndexError: the list is empty or `index` is out of range.
        """
        self._changed()
        return list.pop(self, index)

    def remove(self, value):
        """Removes the first item equal to `value`.

        Args:
            value: the item to remove.

        Raises:
            ValueError: no item equals `value`.
        """
        self._changed()
        list.remove(self, value)

    def clear(self):
        """Removes all items."""
        self._changed()
        list.clear(self)

    def reverse(self):
        """Reverses the items in place."""
        self._changed()
        list.reverse(self)

    def sort(self, *args, **kwargs):
        """Sorts the items in place (as list.sort)."""
        self._changed()
        list.sort(self, *args, **kwargs)

    # Lists are not hashable; modules are (by identity), ModuleList needs the same for caching and sets.
    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


class ForceArgs(Module):
    """Wraps a module so that some keyword arguments are always given specific values.

    Args:
        module: the module (or callable) to wrap; its variables are named as if it were not wrapped.
        **kwargs: the forced arguments, name=value.

    Raises:
        TypeError: `module` is not callable.
    """

    class ANY:
        """Matches any value in `ForceArgs.undo`."""

    def __init__(self, module: Module, **kwargs):
        if not callable(module):
            raise TypeError(f'ForceArgs(module): module must be callable, got {type(module).__name__}')
        self.__wrapped__ = module
        self.forced_kwargs: Dict[str, Any] = kwargs

    def __call__(self, *args, **kwargs):
        """Calls the wrapped module with the forced arguments replacing those given, by position or keyword."""
        if args and self.forced_kwargs:
            args, kwargs = force_positional(self.__wrapped__, args, kwargs, self.forced_kwargs)
            return self.__wrapped__(*args, **kwargs)
        return self.__wrapped__(*args, **{**kwargs, **self.forced_kwargs})

    def vars(self, scope: str = '') -> VarCollection:
        """The variables of the wrapped module, named as if it were not wrapped.

        Args:
            scope: prefix of every name.

        Returns:
            A new VarCollection {name: variable} (empty when the wrapped callable is not a Module).
        """
        if isinstance(self.__wrapped__, Module):
            return self.__wrapped__.vars(scope)
        return VarCollection()

    @staticmethod
    def undo(module: Module, **kwargs):
        """Removes forced arguments in `module`'s tree, in place: all of them, or those matching kwargs
        (`name=value`, or `name=ForceArgs.ANY` for any value), including those of `module` itself when it is a
        ForceArgs (it then stays a ForceArgs, possibly forcing nothing). Wrappers held in attributes or
        ModuleLists that are left with nothing to force are replaced by the module they wrap.

        Args:
            module: the root of the module tree to change.
            **kwargs: which forced arguments to remove (none given: all of them).
        """

        def strip(wrapper: 'ForceArgs'):
            _drop_forced(wrapper, kwargs)
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
                    object.__setattr__(m, k, unwrap(v))  # one structure change for all, below
            if isinstance(m, list):
                for i, v in enumerate(list.__iter__(m)):
                    if isinstance(v, Module):
                        list.__setitem__(m, i, unwrap(v))

        if isinstance(module, ForceArgs):
            _drop_forced(module, kwargs)
        visit(module)
        structure.bump()  # the wrappers changed: compiled transforms must not keep the old forced arguments

    def __repr__(self):
        forced = ''.join(f', {k}={v!r}' for k, v in self.forced_kwargs.items())
        return f'{reprs.class_path(self)}(module={reprs.function_repr(self.__wrapped__)}{forced})'


def _drop_forced(wrapper: ForceArgs, filters: Dict[str, Any]) -> None:
    """Removes the forced arguments of `wrapper` that match `filters` (all of them when there are none)."""
    if not filters:
        wrapper.forced_kwargs = {}
        return
    for k, v in filters.items():
        if k in wrapper.forced_kwargs and (v is ForceArgs.ANY or wrapper.forced_kwargs[k] == v):
            del wrapper.forced_kwargs[k]


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def force_positional(f: Callable, args: tuple, kwargs: dict, forced: Dict[str, Any]) -> Tuple[list, dict]:
    """(args, kwargs) for calling f with `forced` overriding the caller: a forced name among the first len(args)
    positional parameters of f replaces that positional value, the others are given as keywords (ForceArgs'
    rule, and objax.util.override_args_kwargs).

    Args:
        f: the function whose signature names the positional parameters (none readable: keywords only).
        args: the caller's positional arguments.
        kwargs: the caller's keyword arguments (not changed).
        forced: the values to force, by name.

    Returns:
        (positional arguments as a new list, keyword arguments as a new dict).
    """
    args, kwargs = list(args), dict(kwargs)
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):  # no readable signature: keywords only
        params = []
    remaining = dict(forced)
    for i, p in enumerate(params[:len(args)]):
        if p.kind not in _POSITIONAL:
            break
        if p.name in remaining:
            args[i] = remaining.pop(p.name)
    kwargs.update(remaining)
    return args, kwargs


def _shown_attributes(module: Module) -> List[Tuple[str, Any]]:
    """The attributes a display of `module` shows: the public ones, and the private variables and modules that
    vars() collects (all of them when the class keeps Module.vars, else only a module in `__wrapped__`)."""
    walks = type(module).vars is Module.vars
    return [(k, v) for k, v in module.__dict__.items()
            if not k.startswith('_') or (isinstance(v, (BaseVar, Module)) and (walks or k == '__wrapped__'))]


def _add_attributes(vc: VarCollection, prefix: str, attributes: Dict[str, Any]) -> None:
    """Adds the variables of a module's attributes named `prefix.attribute...`; a module in `__wrapped__` is
    named `prefix...` (no attribute name)."""
    for k, v in attributes.items():
        if k == '__wrapped__' and isinstance(v, Module):
            _add(vc, prefix, v)
        else:
            _add(vc, f'{prefix}.{k}', v)


def _list_repr(items: list) -> str:
    """Multi-line repr `<class path>(`, one `  [i] <item>` line per item, `)`: a module item shows its repr
    with continuation lines indented two more spaces, any other callable the function format."""
    lines = []
    for i, x in enumerate(items):
        text = reprs.function_repr(x) if callable(x) and not isinstance(x, Module) else repr(x)
        lines.append(f'  [{i}] ' + text.replace('\n', '\n  '))
    return '\n'.join([f'{reprs.class_path(items)}('] + lines + [')'])


def module_or_function_repr(f: Any) -> str:
    """The repr of a Module, the function format of anything else (as the transforms show their `f`).

    Args:
        f: a Module or any callable.

    Returns:
        `repr(f)` for a Module, else `objax._core.reprs.function_repr(f)`.
    """
    return repr(f) if isinstance(f, Module) else reprs.function_repr(f)


_ABSENT = object()
_PARTS = (BaseVar, Module)


def _held(value: Any) -> Optional[Set[int]]:
    """ids of the variables `value` holds, for objax._core.structure: a variable and the one holding its data,
    or those of a module's vars(); None when they cannot be collected (a change of unknown reach)."""
    if isinstance(value, BaseVar):
        return {id(value), id(value._storage())}
    if not isinstance(value, Module):
        return set()
    try:
        variables = list(value.vars().values())
    except Exception:  # a module graph with a cycle, a vars() of its own that fails
        return None
    return {i for v in variables for i in (id(v), id(v._storage()))}


def prefixed(vc: VarCollection, scope: str) -> VarCollection:
    """A new collection holding the variables of `vc`, each name prefixed with `scope`.

    Args:
        vc: the collection.
        scope: the prefix.

    Returns:
        A new VarCollection.
    """
    out = VarCollection()
    out.update((scope + k, v) for k, v in vc.items())
    return out
