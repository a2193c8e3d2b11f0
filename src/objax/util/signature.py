"""Helpers that read function signatures: argument names and positions, keyword filtering and overriding."""

import functools
import inspect
from typing import Callable, Iterable, List, Tuple

__all__ = ['args_indexes', 'local_kwargs', 'override_args_kwargs', 'positional_args_names', 're_sign',
           'repr_function']

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _parameters(f: Callable, caller: str):
    try:
        return inspect.signature(f).parameters
    except (TypeError, ValueError) as e:
        raise ValueError(f'{caller}: cannot read the signature of {f!r}: {e}') from None


def positional_args_names(f: Callable) -> List[str]:
    """Names of the parameters of f that can be given by position, in order."""
    return [k for k, p in _parameters(f, 'positional_args_names').items() if p.kind in _POSITIONAL]


def args_indexes(f: Callable, args: Iterable[str]) -> Iterable[int]:
    """Positions of the named arguments `args` among f's positional parameters (a tuple of ints)."""
    if isinstance(args, str):
        args = (args,)
    positions = {name: i for i, name in enumerate(positional_args_names(f))}
    missing = [name for name in args if name not in positions]
    if missing:
        raise ValueError(f'args_indexes: {getattr(f, "__qualname__", f)!r} has no positional argument named '
                         f'{", ".join(map(repr, missing))} (positional arguments: {list(positions)})')
    return tuple(positions[name] for name in args)


def local_kwargs(kwargs: dict, f: Callable) -> dict:
    """The entries of kwargs that f accepts as keyword arguments (all of them if f takes **kwargs)."""
    params = _parameters(f, 'local_kwargs')
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    accepted = {k for k, p in params.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in accepted}


def override_args_kwargs(f: Callable, args: Iterable, kwargs: dict, new_kwargs: dict) -> Tuple[List, dict]:
    """(args, kwargs) for calling f where each `name=value` of new_kwargs replaces that argument, whether it was
    given by position or keyword (or not given)."""
    args, kwargs = list(args), dict(kwargs)
    params = _parameters(f, 'override_args_kwargs')
    names = list(params)
    var_keyword = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    positional = positional_args_names(f)
    for name in new_kwargs:
        index = positional.index(name) if name in positional else None
        if index is not None and index < len(args):
            continue
        if name not in names and not var_keyword:
            raise ValueError(f'override_args_kwargs: {getattr(f, "__qualname__", f)!r} has no argument named '
                             f'{name!r} (arguments: {names})')
        if name in params and params[name].kind == inspect.Parameter.POSITIONAL_ONLY:
            raise ValueError(f'override_args_kwargs: argument {name!r} of {getattr(f, "__qualname__", f)!r} is '
                             f'positional-only and was not given by position, so it cannot be overridden')
    for name, value in new_kwargs.items():
        index = positional.index(name) if name in positional else None
        if index is not None and index < len(args):
            args[index] = value
        else:
            kwargs[name] = value
    return args, kwargs


def re_sign(f: Callable) -> Callable:
    """Decorator: `re_sign(f)(g)` behaves as g but shows f's signature (for inspect.signature and help)."""

    def decorate(g: Callable) -> Callable:
        @functools.wraps(g)
        def wrapper(*args, **kwargs):
            return g(*args, **kwargs)

        wrapper.__signature__ = inspect.signature(f)
        return wrapper

    return decorate


def repr_function(f: Callable) -> str:
    """Readable name of a function with its keyword defaults, e.g. 'kaiming_normal(*, gain=1, fan_in=None)'; a
    functools.partial shows the name of the function it wraps, with the frozen keywords as defaults."""
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        params = ()
    defaults = ', '.join(f'{p.name}={p.default!r}' for p in params if p.default is not inspect.Parameter.empty)
    target = f
    while isinstance(target, functools.partial):
        target = target.func
    name = getattr(target, '__name__', None)
    if not isinstance(name, str):
        return repr(f)
    return f'{name}(*, {defaults})' if defaults else name
