"""A generation number of the module structure, so compiled transforms notice when it changes.

`GENERATION` changes whenever an attribute of a module that holds a variable or a module is replaced or
deleted, a variable or module attribute is added to a module already collected by vars(), or a collected
ModuleList changes. A transform compares it with the number it saw last (one integer comparison per call)
and, when it differs, checks whether its own variables changed (see objax._core.transform).
"""

import itertools
import weakref

__all__ = ['GENERATION', 'bump', 'is_seen', 'mark_seen']

_COUNTER = itertools.count(1)
GENERATION = 0
_SEEN = weakref.WeakValueDictionary()  # {id(module): module} of the modules vars() has collected


def bump() -> None:
    """Marks a structure change (each change gets a number never used before, also across threads)."""
    global GENERATION
    GENERATION = next(_COUNTER)


def mark_seen(module) -> None:
    """Records that vars() collected `module`: adding variables to it from now on is a structure change."""
    try:
        _SEEN[id(module)] = module
    except TypeError:  # not weak-referenceable: then only replacements and deletions are noticed
        pass


def is_seen(module) -> bool:
    """Whether vars() has collected `module` (see mark_seen)."""
    return _SEEN.get(id(module)) is module
