"""Rich display of modules, variables and VarCollections with treescope (an optional package: `objax[display]`).

The core classes define `__treescope_repr__`, which treescope calls when it renders them (in a notebook, or with
treescope.render_to_html / render_to_text); those methods hand their parts to the functions here. treescope is
imported only when it renders something, never by `import objax`.

A module renders as a foldable tree of its attributes, a variable as its kind with its value (treescope's array
summary: dtype, shape, mean, spread, range) and where the value lives (sharding), and a module or collection
shows its parameter count when expanded.
"""

import importlib
import math
from typing import Any, Callable, Dict, Iterable, NamedTuple, Optional, Tuple

import jax
from jax.sharding import NamedSharding

from objax._core import reprs

__all__ = ['Counts', 'human_bytes', 'sharding_text', 'render_variable', 'render_attributes']

Renderer = Callable[..., Any]  # treescope's subtree renderer: (value, path=...) -> a rendering


class Counts(NamedTuple):
    """The sizes of a set of distinct variables (a TrainRef counted as its TrainVar, once)."""
    parameters: int  # elements of the TrainVars
    state: int  # elements of the other variables (running statistics, random keys...)
    bytes: int  # memory of all their values
    variables: int  # how many distinct variables

    def describe(self) -> str:
        """A one-line summary, e.g. '1,234 parameters, 10 state elements, 4.9 KiB in 7 variables'."""
        return (f'{self.parameters:,} parameters, {self.state:,} state elements, {human_bytes(self.bytes)} in '
                f'{self.variables:,} variable{"s" if self.variables != 1 else ""}')


def human_bytes(n: int) -> str:
    """A byte count in binary units: '512 B', '4.9 KiB', '1.3 MiB'.

    Args:
        n: the number of bytes.

    Returns:
        The count rounded to one decimal in the largest unit under which it is at least 1.
    """
    if n < 1024:
        return f'{n} B'
    for unit in ('KiB', 'MiB', 'GiB', 'TiB'):
        n /= 1024
        if n < 1024 or unit == 'TiB':
            return f'{n:.1f} {unit}'


def sharding_text(value: Any) -> Optional[str]:
    """Where an array lives, briefly: 'cpu:0' on one device, else its partition spec and mesh shape.

    Args:
        value: a jax.Array (anything else, e.g. a tracer or a numpy array, gives None).

    Returns:
        The description, or None.
    """
    sharding = getattr(value, 'sharding', None) if isinstance(value, jax.Array) else None
    if sharding is None or isinstance(value, jax.core.Tracer):
        return None
    if len(sharding.device_set) == 1:
        device, = sharding.device_set
        return f'{device.platform}:{device.id}'
    if isinstance(sharding, NamedSharding):
        return f'{sharding.spec} over mesh {dict(sharding.mesh.shape)}'
    return f'{type(sharding).__name__} over {len(sharding.device_set)} devices'


def _parts():
    return importlib.import_module('treescope.rendering_parts')


def _comma(rp, last: bool):
    """The comma after a child, as treescope's constructor renderings show it (the last one only when expanded)."""
    if last:
        return rp.fold_condition(expanded=rp.text(','))
    return rp.siblings(',', rp.fold_condition(collapsed=rp.text(' ')))


def _child(rp, key: str, value: Any, path: Optional[str], renderer: Renderer, last: bool):
    """One line `key value,` of a foldable node."""
    return rp.build_full_line_with_annotations(rp.siblings_with_annotations(key, renderer(value, path=path)),
                                               _comma(rp, last))


def _color(kind: str) -> str:
    return importlib.import_module('treescope.formatting_util').color_from_string(kind)


def render_variable(kind: str, value: Any, details: Dict[str, str], path: Optional[str], renderer: Renderer):
    """The treescope rendering of a variable: `kind(value=<array summary>, sharding=..., spec=...)`.

    Args:
        kind: the variable's class as shown, e.g. 'objax.TrainVar'.
        value: its value (rendered by treescope, which summarizes arrays).
        details: more `name=text` entries shown after the value (e.g. sharding), in order.
        path: the variable's path from the rendered root (treescope's), None if unknown.
        renderer: treescope's subtree renderer.

    Returns:
        A treescope rendering.
    """
    rp = _parts()
    children = [_child(rp, 'value=', value, None if path is None else f'{path}.value', renderer, not details)]
    for i, (key, text) in enumerate(details.items()):
        line = rp.siblings(f'{key}=', rp.comment_color(rp.text(text)))
        children.append(rp.build_full_line_with_annotations(line, _comma(rp, i == len(details) - 1)))
    shape, dtype = getattr(value, 'shape', None), getattr(value, 'dtype', None)
    annotation = None if shape is None or dtype is None else rp.comment_color(
        rp.text(f'  # {dtype}{tuple(shape)}, {math.prod(shape):,} elements'))
    return rp.build_foldable_tree_node_from_children(prefix=f'{kind}(', children=children, suffix=')', path=path,
                                                     background_color=_color(kind), first_line_annotation=annotation)


def render_attributes(obj: Any, items: Iterable[Tuple[str, str, Any]], brackets: Tuple[str, str],
                      counts: Optional[Counts], path: Optional[str], renderer: Renderer):
    """The treescope rendering of a module or collection: `Class(key=value, ...)` as a foldable tree.

    Args:
        obj: the object rendered (its class is shown by its public path, e.g. objax.nn.Linear).
        items: (shown key such as 'w=' or "'name': ", path suffix such as '.w' or "['name']", value) per child.
        brackets: the texts around the children after the class name, e.g. ('(', ')') or ('({', '})').
        counts: the sizes of its variables, shown (when expanded) on the first line; None shows nothing.
        path: the object's path from the rendered root, None if unknown.
        renderer: treescope's subtree renderer.

    Returns:
        A treescope rendering.
    """
    rp = _parts()
    items = list(items)
    children = [_child(rp, key, value, None if path is None else path + suffix, renderer, i == len(items) - 1)
                for i, (key, suffix, value) in enumerate(items)]
    annotation = None if counts is None else rp.comment_color(rp.text(f'  # {counts.describe()}'))
    return rp.build_foldable_tree_node_from_children(
        prefix=f'{reprs.class_path(obj)}{brackets[0]}', children=children, suffix=brackets[1], path=path,
        background_color=_color(type(obj).__name__), first_line_annotation=annotation)
