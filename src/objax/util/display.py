"""A model at a glance in a terminal: objax.util.summary tables the sizes of its sub-modules.

(In a notebook, treescope renders modules and VarCollections as foldable trees: see objax._core.display.)
"""

import re
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from objax._core.collection import count
from objax._core.display import Counts, human_bytes
from objax.module import Module
from objax.varcollection import VarCollection

__all__ = ['summary']

_MODULE = re.compile(r'\([A-Za-z_][\w.]*\)')  # the '(Class)' of each module in a vars() name


def _modules_of(name: str) -> Tuple[List[str], str]:
    """(the module prefixes of a vars() name, outermost first; the variable's attribute).

    '(Net).block(Linear).w' gives (['(Net)', '(Net).block(Linear)'], '.w')."""
    ends = [m.end() for m in _MODULE.finditer(name)]
    return [name[:end] for end in ends], name[ends[-1]:] if ends else name


def _row(label: str, counts: Counts) -> List[str]:
    return [label, f'{counts.parameters:,}', f'{counts.state:,}', human_bytes(counts.bytes)]


def _table(rows: List[List[str]], header: List[str]) -> str:
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

    def line(r):
        return '  '.join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]).rstrip()

    rule = '-' * len(line(['-' * w for w in widths]))
    return '\n'.join([line(header), rule] + [line(r) for r in rows[:-1]] + [rule, line(rows[-1])])


def summary(model: Union[Module, VarCollection], depth: Optional[int] = 2, variables: bool = False) -> str:
    """A table of the sub-modules of `model` with their sizes, for printing: `print(objax.util.summary(model))`.

    Each row is a module, indented under its parent and named relative to it (as in vars(): `[1](WRNBlock)`,
    `.conv_1(Conv2D)`), with the elements of its TrainVars (Parameters), of its other variables (State) and the
    memory of their values, sub-modules included. The last row is the total of `model.vars()`, each variable
    counted once: its Parameters equal the sum of the TrainVars' sizes. Variables outside any module (in a
    hand-made VarCollection) are counted in the total only.

    Args:
        model: a module (its vars() is tabled) or a VarCollection.
        depth: how many levels of modules to show (1: the model alone; None: all).
        variables: also list each variable (its attribute, kind, dtype and shape, and its sizes) under its module.

    Returns:
        The table, one line per row, without a final newline.

    Raises:
        TypeError: `model` is neither a Module nor a VarCollection.
        ValueError: `depth` is below 1.
    """
    if isinstance(model, Module):
        vc = model.vars()
    elif isinstance(model, VarCollection):
        vc = model
    else:
        raise TypeError(f'summary(model): expected a Module or a VarCollection, got {type(model).__name__}')
    if depth is not None and depth < 1:
        raise ValueError(f'summary(depth): expected None or at least 1, got {depth}')
    members: Dict[str, VarCollection] = {}  # module prefix -> its variables, sub-modules included
    parents: Dict[str, Optional[str]] = {}
    listed: Dict[str, List[Tuple[str, str, object]]] = {}  # module prefix -> its own (name, attribute, variable)
    for name, var in vc.items():
        prefixes, attribute = _modules_of(name)
        for i, prefix in enumerate(prefixes[:depth]):
            members.setdefault(prefix, VarCollection())[name] = var
            parents.setdefault(prefix, prefixes[i - 1] if i else None)
        if prefixes and (depth is None or len(prefixes) <= depth):
            listed.setdefault(prefixes[-1], []).append((name, attribute, var))
    rows = []
    levels = {}
    for prefix in members:  # insertion order: each module after its parent
        parent = parents[prefix]
        levels[prefix] = 0 if parent is None else levels[parent] + 1
        rows.append(_row('  ' * levels[prefix] + prefix[len(parent or ''):], count(members[prefix])))
        for name, attribute, var in listed.get(prefix, []) if variables else []:
            value = var.value
            label = f'{attribute} {type(var).__name__} {np.dtype(value.dtype)}{list(value.shape)}'
            rows.append(_row('  ' * (levels[prefix] + 1) + label, count(VarCollection({name: var}))))
    total = count(vc)
    rows.append(_row(f'Total ({total.variables:,} variables)', total))
    return _table(rows, ['Module', 'Parameters', 'State', 'Bytes'])
