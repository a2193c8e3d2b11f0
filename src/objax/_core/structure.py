"""A generation number of the module structure, so compiled transforms notice when it changes.

`GENERATION` changes whenever an attribute of a module that holds a variable or a module is replaced or
deleted, a variable or module attribute is added to a module already collected by vars(), or a collected
ModuleList changes. A transform compares it with the number it saw last (one integer comparison per call)
and, when it differs, checks whether its own variables changed (see Jit and Parallel).
"""

import itertools
import weakref

__all__ = []

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
    return _SEEN.get(id(module)) is module


def refresh(transform) -> None:
    """Brings a compiled transform (Jit, Parallel) up to the current structure: one built from a module alone
    collects the module's variables again and starts over if they changed; one given an explicit collection
    starts over with it (new programs; variables outside it are warned about once per variable, as before)."""
    generation = GENERATION
    if transform._follows_module:
        vc = transform.__wrapped__.vars()
        if [(k, id(v)) for k, v in vc.items()] != [(k, id(v)) for k, v in transform.vc.items()]:
            transform._use(vc)
    else:
        transform._use(transform.vc, transform._pure._warned)
    transform._generation = generation
