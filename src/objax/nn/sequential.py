"""Sequential: a list of layers applied one after the other."""

import inspect
from typing import Callable, Dict, FrozenSet, List, Optional, Union

from objax.module import ModuleList
from objax.typing import JaxArray

__all__ = ['Sequential']


def _accepted_kwargs(f: Callable) -> Optional[FrozenSet[str]]:
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
    """Calls its layers in order, each on the outputs of the previous one (a tuple output is spread over the
    next layer's positional arguments). Keyword arguments go to the layers whose __call__ accepts them."""

    def __call__(self, *args, **kwargs) -> Union[JaxArray, List[JaxArray]]:
        """The last layer's output: a single value, or a list when it returned several."""
        values = list(args)
        for i, layer in enumerate(self):
            values = self.run_layer(i, layer, values, kwargs)
        return values[0] if len(values) == 1 else values

    def run_layer(self, layer: int, f: Callable, args: List, kwargs: Dict):
        """Runs layer number `layer` (the callable f) on args and the kwargs it accepts; returns its outputs
        as a list. Errors are annotated with the layer's position."""
        accepted = self._accepted(f)
        if accepted is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        try:
            out = f(*args, **kwargs)
        except Exception as e:
            e.add_note(f'(raised by Sequential layer [{layer}]: {type(f).__name__})')
            raise
        return list(out) if isinstance(out, tuple) else [out]

    def _accepted(self, f: Callable) -> Optional[FrozenSet[str]]:
        # Signatures are inspected once per layer object; the cache keeps the layer to detect replaced items.
        cache = self.__dict__.setdefault('_kwargs_cache', {})
        hit = cache.get(id(f))
        if hit is None or hit[0] is not f:
            hit = cache[id(f)] = (f, _accepted_kwargs(f))
        return hit[1]

    def __getitem__(self, key: Union[int, slice]):
        """The layer at `key`, or a Sequential of the layers in a slice."""
        value = list.__getitem__(self, key)
        return Sequential(value) if isinstance(key, slice) else value
