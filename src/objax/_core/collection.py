"""VarCollection: a {name: variable} dictionary with bulk read/write of the (deduplicated) variables."""

from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from objax._core import replicate
from objax._core.display import Counts, render_attributes
from objax._core.variables import AssignmentError, BaseVar, TrainVar, storage_groups
from objax.typing import JaxArray

__all__ = ['VarCollection', 'count']

_Types = Optional[Union[type, Tuple[type, ...]]]


class VarCollection(Dict[str, BaseVar]):
    """A dictionary {name: variable}. Iterating it yields each distinct variable once, in insertion order."""

    def __add__(self, other: 'VarCollection') -> 'VarCollection':
        """Union of two collections; a name bound to two different variables raises ValueError."""
        out = VarCollection(self)
        out.update(other)
        return out

    def __iter__(self) -> Iterator[BaseVar]:
        """Yields each distinct variable once (shared variables are not repeated)."""
        seen = set()
        for v in self.values():
            if id(v) not in seen:
                seen.add(id(v))
                yield v

    def update(self, other: Union['VarCollection', Iterable[Tuple[str, BaseVar]]] = (), **kwargs):
        """Adds entries; refuses (changing nothing) if a name is already bound to a different variable.

        Args:
            other: a dictionary {name: variable} or an iterable of (name, variable) pairs.
            **kwargs: more entries, name=variable.

        Raises:
            TypeError: a value is not a variable.
            ValueError: a name is already bound to a different variable (re-binding the same one is fine).
        """
        items = list(other.items() if isinstance(other, dict) else other) + list(kwargs.items())
        conflicts, bad = [], []
        for k, v in items:
            if not isinstance(v, BaseVar):
                bad.append(f'{k!r} ({type(v).__name__})')
            elif k in self and dict.__getitem__(self, k) is not v:
                conflicts.append(k)
        if bad:
            raise TypeError(f'VarCollection values must be variables; got {", ".join(bad)}')
        if conflicts:
            raise ValueError(f'Name conflicts when combining VarCollections: {", ".join(map(repr, conflicts))} '
                             f'are bound to different variables (use vars(scope) to give distinct prefixes)')
        for k, v in items:
            dict.__setitem__(self, k, v)

    def names(self) -> Dict[int, str]:
        """Maps id(variable) to the first name under which it appears."""
        out = {}
        for k, v in self.items():
            out.setdefault(id(v), k)
        return out

    def tensors(self, is_a: _Types = None) -> List[JaxArray]:
        """The values of the distinct variables, in iteration order.

        Args:
            is_a: a variable class (or tuple of classes): keep only its instances; None keeps all.

        Returns:
            One array per distinct variable kept, each of its variable's shape.
        """
        return [v.value for v in self if is_a is None or isinstance(v, is_a)]

    def assign(self, tensors: List[JaxArray]):
        """Assigns one tensor per distinct variable; all of them are checked (shape, array type) before any write.

        Args:
            tensors: one array per distinct variable, in iteration order (as `tensors()` returns them), each of
                its variable's shape.

        Raises:
            ValueError: the number of tensors differs from the number of distinct variables; nothing changes.
            AssignmentError: (a ValueError and an AssertionError) naming every refused variable; nothing changes.
        """
        variables = list(self)
        tensors = list(tensors)
        if len(tensors) != len(variables):
            raise ValueError(f'VarCollection.assign expected {len(variables)} tensors (one per distinct '
                             f'variable), got {len(tensors)}')
        names = self.names()
        checked, errors = [], []
        for v, t in zip(variables, tensors):
            try:
                checked.append(v._check_assign(t))
            except (ValueError, TypeError) as e:
                errors.append(f'{names[id(v)]}: {e}')
        if errors:
            raise AssignmentError('VarCollection.assign refused, nothing was changed:\n  ' + '\n  '.join(errors))
        for v, t in zip(variables, checked):
            v.assign(t, check=False)

    def subset(self, is_a: _Types = None, is_not: _Types = None) -> 'VarCollection':
        """The entries whose variable is an instance of `is_a` and not of `is_not`.

        Args:
            is_a: a variable class (or tuple of classes) to keep; None keeps all.
            is_not: a variable class (or tuple of classes) to leave out; None leaves out none.

        Returns:
            A new VarCollection holding the same variables under the same names.
        """
        out = VarCollection()
        for k, v in self.items():
            if (is_a is None or isinstance(v, is_a)) and (is_not is None or not isinstance(v, is_not)):
                dict.__setitem__(out, k, v)
        return out

    def rename(self, renamer: Callable[[str], str]) -> 'VarCollection':
        """A new collection with every name passed through `renamer` (e.g. an objax.util.Renamer).

        Args:
            renamer: maps an old name to a new one.

        Returns:
            A new VarCollection holding the same variables under the new names.

        Raises:
            ValueError: two entries holding different variables are renamed to the same name.
        """
        out = VarCollection()
        out.update((renamer(k), v) for k, v in self.items())
        return out

    def replicate(self):
        """Context manager of Objax 1.8's Parallel style: inside it each value is stacked per device (one copy
        per device) and objax.Parallel keeps each device's copy; on exit each variable becomes its own reduce of
        its copies. See objax.Parallel and objax._core.replicate."""
        return replicate.replicate(self)

    def __str__(self, max_width: int = 100) -> str:
        width = min(max_width, max([20] + [len(k) for k in self.keys()]))
        lines, total = [], 0
        for name, v in self.items():
            shape = tuple(v.value.shape)
            size = int(np.prod(shape)) if shape else 1
            total += size
            lines.append(f'{name:{width}} {size:8d} {shape}')
        lines.append(f'{"+Total(" + str(len(self)) + ")":{width}} {total:8d}')
        return '\n'.join(lines)

    def __treescope_repr__(self, path: Optional[str], subtree_renderer: Callable):
        """The rendering treescope shows (see objax._core.display): a foldable {name: variable} tree, with the
        parameter count on its first line.

        Args:
            path: the collection's path from the rendered root.
            subtree_renderer: treescope's renderer of the parts.

        Returns:
            A treescope rendering.
        """
        items = [(f'{k!r}: ', f'[{k!r}]', v) for k, v in self.items()]
        return render_attributes(self, items, ('({', '})'), count(self), path, subtree_renderer)

    def print(self, max_width: int = 100):
        """Prints one line per entry (name, size, shape) and the total, as Objax does.

        Args:
            max_width: the widest the name column may get (it fits the longest name, at least 20).
        """
        print(self.__str__(max_width))

    def __setitem__(self, key: str, value: BaseVar):
        """Binds `key` to the variable `value`.

        Raises:
            TypeError: `value` is not a variable.
            ValueError: `key` is already bound to a different variable (re-binding the same one is fine).
        """
        if not isinstance(value, BaseVar):
            raise TypeError(f'VarCollection[{key!r}] must be a variable, got {type(value).__name__}')
        if key in self and dict.__getitem__(self, key) is not value:
            raise ValueError(f'VarCollection[{key!r}] is already bound to a different variable; remove it first '
                             f'(del vc[{key!r}]) or use another name')
        dict.__setitem__(self, key, value)


def count(vc: VarCollection) -> Counts:
    """The sizes of the distinct variables of `vc` (a TrainRef counts as its TrainVar; each storage once).

    Args:
        vc: the collection.

    Returns:
        A Counts: elements of the TrainVars (parameters), of the other variables (state), the bytes of all
        values and the number of distinct variables.
    """
    parameters = state = nbytes = 0
    targets = [target for target, _ in storage_groups(vc.items())]
    for target in targets:
        value = target.value
        size = int(np.prod(value.shape))
        nbytes += size * np.dtype(value.dtype).itemsize
        if isinstance(target, TrainVar):
            parameters += size
        else:
            state += size
    return Counts(parameters, state, nbytes, len(targets))
