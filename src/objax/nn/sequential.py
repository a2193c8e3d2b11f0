"""Sequential: a list of layers applied one after the other."""

import inspect
from typing import Callable, Dict, FrozenSet, List, Optional, Union

from objax.module import Module, ModuleList
from objax.nn._format import class_path, format_function
from objax.typing import JaxArray

__all__ = ['Sequential']


def accepted_kwargs(f: Callable) -> Optional[FrozenSet[str]]:
    """Names of the keyword arguments f accepts; None when it takes **kwargs (accepts all)."""
    try:
        parameters = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: give it every keyword
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters
                     if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))


class Sequential(ModuleList):
    """Calls its layers in order, each on the output of the previous one.

    A tuple output is spread over the next layer's positional arguments; any other output (a list included) is
    the next layer's single argument. Keyword arguments go to the layers whose __call__ accepts them.
    """

    def __call__(self, *args, **kwargs) -> Union[JaxArray, List[JaxArray]]:
        """Runs the layers in order on args and returns exactly what the last one returned.

        Args:
            *args: the first layer's positional arguments.
            **kwargs: given to every layer that accepts them by name (or takes **kwargs).

        Returns:
            The last layer's output (a tuple stays a tuple). With no layers: the single argument, or the tuple
            of arguments when there are several.
        """
        if not len(self):
            return args[0] if len(args) == 1 else args
        out = None
        for i, layer in enumerate(self):
            out = self.run_layer(i, layer, args, kwargs)
            args = out if isinstance(out, tuple) else (out,)
        return out

    def run_layer(self, layer: int, f: Callable, args: List, kwargs: Dict):
        """Runs layer number `layer` (the callable f) on args and the kwargs it accepts, and returns its output.

        Args:
            layer: the position of f in the Sequential, used in the note added to its errors.
            f: the layer, any callable.
            args: its positional arguments.
            kwargs: the keyword arguments of the Sequential call; only those f accepts by name are passed
                (all of them when f takes **kwargs or has no introspectable signature).

        Returns:
            What f returned.

        Raises:
            Exception: whatever f raises, re-raised with a note naming the layer's position and type.
        """
        accepted = self._accepted(f)
        if accepted is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        try:
            return f(*args, **kwargs)
        except Exception as e:
            e.add_note(f'(raised by Sequential layer [{layer}]: {type(f).__name__})')
            raise

    def _accepted(self, f: Callable) -> Optional[FrozenSet[str]]:
        # Signatures are inspected once per layer object; the cache keeps the layer to detect replaced items.
        cache = self.__dict__.setdefault('_kwargs_cache', {})
        hit = cache.get(id(f))
        if hit is None or hit[0] is not f:
            hit = cache[id(f)] = (f, accepted_kwargs(f))
        return hit[1]

    def __getitem__(self, key: Union[int, slice]):
        """The layer at `key`, or a Sequential of the layers in a slice."""
        value = list.__getitem__(self, key)
        return Sequential(value) if isinstance(key, slice) else value

    def __repr__(self):
        lines = [f'{class_path(type(self))}(']
        for i, layer in enumerate(self):
            text = format_function(layer) if callable(layer) and not isinstance(layer, Module) else repr(layer)
            lines.append(f'  [{i}] ' + text.replace('\n', '\n  '))
        return '\n'.join(lines + [')'])
