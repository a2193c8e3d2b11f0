"""Helpers that read function signatures: argument names and positions, keyword filtering and overriding."""

import functools
import inspect
from typing import Callable, Iterable, List, Tuple

from objax._core import reprs
from objax._core.modules import force_positional

__all__ = ['args_indexes', 'local_kwargs', 'override_args_kwargs', 'positional_args_names', 're_sign',
           'repr_function']

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _parameters(f: Callable, caller: str):
    try:
        return inspect.signature(f).parameters
    except (TypeError, ValueError) as e:
        raise ValueError(f'{caller}: cannot read the signature of {f!r}: {e}') from None


def positional_args_names(f: Callable) -> List[str]:
    """Names of the parameters of f that can be given by position, in order.

    Args:
        f: any callable with an introspectable signature.

    Returns:
        The list of names (positional-only and positional-or-keyword parameters, not *args).

    Raises:
        ValueError: the signature of f cannot be read (e.g. some builtins).
    """
    return [k for k, p in _parameters(f, 'positional_args_names').items() if p.kind in _POSITIONAL]


def args_indexes(f: Callable, args: Iterable[str]) -> Iterable[int]:
    """Positions of the named arguments `args` among f's positional parameters (a tuple of ints).

    Args:
        f: any callable with an introspectable signature.
        args: names of positional parameters of f, or a single name.

    Returns:
        A tuple of ints, one position per name, in the order of `args`.

    Raises:
        ValueError: a name is not a positional parameter of f, or f's signature cannot be read.
    """
    if isinstance(args, str):
        args = (args,)
    positions = {name: i for i, name in enumerate(positional_args_names(f))}
    missing = [name for name in args if name not in positions]
    if missing:
        raise ValueError(f'args_indexes: {getattr(f, "__qualname__", f)!r} has no positional argument named '
                         f'{", ".join(map(repr, missing))} (positional arguments: {list(positions)})')
    return tuple(positions[name] for name in args)


def local_kwargs(kwargs: dict, f: Callable) -> dict:
    """The entries of kwargs that f accepts as keyword arguments (all of them if f takes **kwargs).

    Args:
        kwargs: keyword arguments, by name.
        f: any callable with an introspectable signature.

    Returns:
        A new dict holding the entries of kwargs whose names f accepts by keyword.

    Raises:
        ValueError: the signature of f cannot be read.
    """
    params = _parameters(f, 'local_kwargs')
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    accepted = {k for k, p in params.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in accepted}


def override_args_kwargs(f: Callable, args: Iterable, kwargs: dict, new_kwargs: dict) -> Tuple[List, dict]:
    """The arguments for calling `f` with `new_kwargs` overriding `args` and `kwargs` (names are never checked).

    Each of the first `len(args)` parameters of `f` (up to the first that cannot be given by position) whose name is
    in `new_kwargs` gets its new value in place; every other entry of `new_kwargs` is merged over `kwargs`.

    Args:
        f: the function whose signature gives the names of the positional arguments.
        args: the positional arguments.
        kwargs: the keyword arguments.
        new_kwargs: the values to force, by name.

    Returns:
        (list of positional arguments, dict of keyword arguments).
    """
    return force_positional(f, args, kwargs, new_kwargs)


def re_sign(f: Callable) -> Callable:
    """Decorator: `re_sign(f)(g)` behaves as g but shows f's signature (for inspect.signature and help).

    Args:
        f: the callable whose signature is shown.

    Returns:
        A decorator mapping g to a wrapper of g (with g's name and docstring) whose __signature__ is f's.

    Raises:
        TypeError, ValueError: (when the decorator is applied to g) f is not callable or its signature cannot
            be read, as raised by inspect.signature.
    """

    def decorate(g: Callable) -> Callable:
        @functools.wraps(g)
        def wrapper(*args, **kwargs):
            return g(*args, **kwargs)

        wrapper.__signature__ = inspect.signature(f)
        return wrapper

    return decorate


def repr_function(f: Callable) -> str:
    """A function as Objax 1.8 shows it in reprs: its name, with its keyword defaults if it has any.

    E.g. `xavier_normal(*, gain=1)`; default values are shown with `str()`. A functools.partial shows the name of
    the function it wraps with the partial's effective defaults (`leaky_relu(*, negative_slope=0.5)`); a callable
    object without `__name__` shows its class name.

    Args:
        f: a function, a functools.partial or a callable object.

    Returns:
        The text, e.g. 'leaky_relu(*, negative_slope=0.01)'.
    """
    return reprs.function_repr(f)
