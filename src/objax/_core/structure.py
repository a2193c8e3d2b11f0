"""A generation number of the module structure, so compiled transforms notice when it changes, and a record of
the recent changes, so that each transform rebuilds only for changes that concern it.

`GENERATION` changes whenever an attribute of a module that holds a variable or a module is replaced or
deleted, a variable or module attribute is added to a module already collected by vars(), or a collected
ModuleList changes. A transform compares it with the number it saw last (one integer comparison per call)
and, when it differs, reads the changes since then (`changes_since`: which module changed, which variables
it held before) to see whether its own variables are concerned (see objax._core.transform).
"""

import collections
import itertools
import threading
import weakref
from typing import FrozenSet, Iterable, List, Optional, Tuple

__all__ = ['GENERATION', 'bump', 'changes_since', 'is_seen', 'mark_seen']

_COUNTER = itertools.count(1)
GENERATION = 0
_SEEN = weakref.WeakValueDictionary()  # {id(module): module} of the modules vars() has collected
_CHANGES = collections.deque(maxlen=1024)  # (generation, weak reference to the module or None, ids it held)
_LOCK = threading.Lock()


def bump(module=None, held: Optional[Iterable[int]] = ()) -> None:
    """Marks a structure change (each change gets a number never used before, also across threads).

    Args:
        module: the module whose structure changed; None when not known (the change then concerns every
            transform).
        held: ids of the variables the changed part held before the change (the variables of a replaced or
            deleted attribute, of a ModuleList's items); None when not known (concerns every transform).
    """
    global GENERATION
    try:
        ref = None if module is None or held is None else weakref.ref(module)
    except TypeError:  # not weak-referenceable: a change of unknown reach
        ref = None
    with _LOCK:
        GENERATION = next(_COUNTER)
        _CHANGES.append((GENERATION, ref, frozenset(held or ())))


def changes_since(generation: int) -> Optional[List[Tuple[object, FrozenSet[int]]]]:
    """The structure changes made after `generation`, oldest first, without those of modules since deleted.

    Args:
        generation: a value `GENERATION` had.

    Returns:
        A list of (the module changed, or None when not known; ids of the variables its changed part held
        before), or None when the record no longer reaches back to `generation` (treat as: anything changed).
    """
    with _LOCK:
        if GENERATION == generation:
            return []
        if not _CHANGES or _CHANGES[0][0] > generation + 1:
            return None
        entries = [entry for entry in _CHANGES if entry[0] > generation]
    out = []
    for _, ref, held in entries:
        if ref is None:
            out.append((None, held))
            continue
        module = ref()
        if module is not None:  # a deleted module no longer affects anything
            out.append((module, held))
    return out


def mark_seen(module) -> None:
    """Records that vars() collected `module`: adding variables to it from now on is a structure change."""
    try:
        _SEEN[id(module)] = module
    except TypeError:  # not weak-referenceable: then only replacements and deletions are noticed
        pass


def is_seen(module) -> bool:
    """Whether vars() has collected `module` (see mark_seen)."""
    return _SEEN.get(id(module)) is module
