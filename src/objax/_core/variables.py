"""Variables: the only place where module state lives."""

import abc
from typing import Callable, Iterable, List, Optional, Tuple

import jax
import jax.numpy as jn

from objax._core import display, frames, refs, reprs
from objax._core.array_ops import ArrayOps, register_pytree
from objax.typing import JaxArray

_LOCAL = frames.LOCAL
_Loan = frames.Loan
_Ref = refs.Ref
_Tracer = refs.Tracer
_MISSING = frames.MISSING
_FROZEN = frames.FROZEN
_tracing = refs.jax_tracing
_top_trace = refs.current_trace
_EVAL_TRACE = refs.EVAL_TRACE

__all__ = ['BaseVar', 'BaseState', 'TrainVar', 'StateVar', 'TrainRef', 'RandomState', 'reduce_mean',
           'AssignmentError', 'reduce_first', 'storage_groups', 'record_name', 'name_of', 'record_spec', 'spec_of',
           'record_layout', 'layout_of', 'record_tracked', 'tracked_of', 'EXPOSED']

# How many times a variable's stored array became exposed: known to user code, which read it eagerly (outside
# any transform) or assigned it, and may hold other jax.Arrays on its buffer. A donating call looks for such
# arrays before donating an exposed value (see objax._core.lending), and checks the variables' marks only when
# this count changed since it last did.
EXPOSED = [0]


class AssignmentError(ValueError, AssertionError):
    """A checked `assign` got a value of another shape, or a Python list/tuple instead of an array.

    Catchable as ValueError and, as in Objax 1.8, as AssertionError.
    """


def reduce_mean(x: JaxArray) -> JaxArray:
    """Averages the copies of a value stacked on axis 0 (default merge for per-device/per-example values).

    Args:
        x: the copies, shape (n, *value_shape).

    Returns:
        Their mean, shape value_shape.
    """
    return x.mean(0)


def reduce_first(x: JaxArray) -> JaxArray:
    """Keeps the first of the copies stacked on axis 0 (random keys, counters: identical on every device).

    Args:
        x: the copies, shape (n, *value_shape).

    Returns:
        The first copy, shape value_shape.
    """
    return x[0]


def _as_array(tensor, var: 'BaseVar'):
    if isinstance(tensor, BaseVar):
        tensor = tensor.value
    if isinstance(tensor, _Tracer) and not _tracing():
        raise refs.leaked_tracer_error(var._label())
    if not isinstance(tensor, jax.Array):
        try:
            tensor = jn.asarray(tensor)
        except TypeError as e:
            raise TypeError(f'Cannot assign a {type(tensor).__name__} to {var._label()}: expected an array') from e
    return _strong(tensor)


def _strong(x: JaxArray) -> JaxArray:
    """x without JAX's weak type (e.g. from a Python float): a variable's dtype never depends on what it is
    combined with, and compiled functions see the same input types on every call."""
    return jax.lax.convert_element_type(x, x.dtype) if x.aval.weak_type else x


class BaseVar(ArrayOps, abc.ABC):
    """Abstract base of all variables.

    Args:
        reduce: merges copies of the value stacked on axis 0, shape (n, *shape), into one value; called by
            `reduce()` when Vectorize or Parallel stores the values their function gave the copies. None: the
            variable is never merged.
    """

    # Recorded by the rest of objax through the functions at the end of this file (never set directly):
    _name: Optional[str] = None  # the name vars() last gave the variable, for messages
    _spec = None  # the jax.sharding.PartitionSpec objax.sharding gave it
    _layout = None  # the jax.sharding.NamedSharding objax.sharding.shard laid its value out with
    _tracked = None  # the variable this one (an optimizer slot) tracks: it is laid out like that variable

    def __init__(self, reduce: Optional[Callable[[JaxArray], JaxArray]]):
        self._reduce = reduce
        frames.allow(self)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        register_pytree(cls)

    @property
    @abc.abstractmethod
    def value(self) -> JaxArray:
        raise NotImplementedError

    @value.setter
    @abc.abstractmethod
    def value(self, tensor: JaxArray):
        raise NotImplementedError

    def assign(self, tensor: JaxArray, check: bool = True):
        """Sets the value; with `check` the new value must be an array of the variable's shape.

        Args:
            tensor: the new value (an array, or a variable whose value is taken).
            check: refuse a value of another shape, or a Python list/tuple (the dtype is not checked).

        Raises:
            AssignmentError: (a ValueError and an AssertionError) with `check`, for another shape or a list.
            TypeError: `tensor` cannot be converted to an array.
        """
        self.value = tensor

    def reduce(self, tensors: JaxArray):
        """Replaces the value by `reduce(tensors)` unchecked (shape and dtype may change), merging per-device
        or per-example copies stacked on axis 0; does nothing when the variable has no reduce function.

        Args:
            tensors: the copies, shape (n, *value_shape).
        """
        if self._reduce is not None:
            self.assign(self._reduce(tensors), check=False)

    def __round__(self, ndigits: Optional[int] = None):
        """`round(v)` / `round(v, ndigits)`: the value rounded, as `round` of the array gives it."""
        return round(self.value, ndigits)

    def _storage(self) -> 'BaseVar':
        """The variable that actually holds the data (itself, except for references)."""
        return self

    def _label(self) -> str:
        name = self._name
        return f'{type(self).__name__} "{name}"' if name else type(self).__name__

    def _check_assign(self, tensor) -> JaxArray:
        """`tensor` as an array after the checks of a checked assign: an array (not a Python list or tuple)
        of the variable's shape (Objax 1.8 checks the shape only, not the dtype)."""
        if isinstance(tensor, (list, tuple)):
            raise AssignmentError(f'Cannot assign a {type(tensor).__name__} to {self._label()}: expected an array '
                                  f'(e.g. jax.numpy.asarray(value))')
        tensor = _as_array(tensor, self)
        # The shape f sees: inside a running transform, the value it gave the variable (one device's copy inside
        # Parallel under replicate()), looked up without the outside-collection warning of a read.
        storage = self._storage()
        old = next((frame.values[id(storage)] for frame in reversed(_LOCAL.frames) if id(storage) in frame.values),
                   None)
        if old is None:
            old = storage._stored()  # an array or a jax.Ref: both have the shape
        elif old.__class__ is frames.FrameRef:
            old = old.ref
        if old.shape != tensor.shape:
            raise AssignmentError(f'Cannot assign to {self._label()}: shape {tuple(tensor.shape)} does not match '
                                  f'the variable shape {tuple(old.shape)}')
        return tensor

    def _shown_value(self) -> Optional[JaxArray]:
        """The value as the reprs show it, read without entering any transform (None: no value yet)."""
        value = self._storage().__dict__.get('_value')
        if value.__class__ is _Loan and value.make is not None:
            value = self._storage()._stored()
        if value.__class__ is _Ref:
            with refs.at_top():
                value = value[...]
        return value

    def __treescope_repr__(self, path: Optional[str], subtree_renderer: Callable):
        """The rendering treescope shows (see objax._core.display): the variable's kind, its value summarized
        (dtype, shape, mean, spread, range) and its sharding.

        Args:
            path: the variable's path from the rendered root.
            subtree_renderer: treescope's renderer of the parts.

        Returns:
            A treescope rendering.
        """
        value, details = self._shown_value(), {}
        where = display.sharding_text(value)
        if where is not None:
            details['sharding'] = where
        if self._storage()._spec is not None:
            details['spec'] = str(self._storage()._spec)
        return display.render_variable(reprs.class_path(self), value, details, path, subtree_renderer)

    def __repr__(self):
        value = self._shown_value()
        if value is None:
            return f'{reprs.class_path(self)}(<uninitialized>)'
        if self._reduce is None or isinstance(self, RandomState):
            return f'{reprs.class_path(self)}({reprs.array_repr(value)})'
        return f'{reprs.class_path(self)}({reprs.array_repr(value)}, reduce={reprs.function_repr(self._reduce)})'


class _OwnValue:
    """Mixin of the variables that hold their own value (all but references).

    The storage `_value` holds an array; a Loan while a donating compiled call borrows it; or, once the variable
    was used while a JAX transformation (jax.jit, grad, vmap, lax.scan...) traced code outside any objax
    transform holding it, a JAX array reference (jax.Ref) that the traced programs read and write (see
    objax._core.refs). A variable created while a transformation traces may hold that trace's tracer.
    """

    _ref_kind = refs.STATE_KIND  # kind of a FrameRef holding this variable (see objax._core.refs)
    _exposed = True  # the stored array may be known to user code (see EXPOSED); a donating call clears it

    def __init__(self, tensor: JaxArray, reduce: Optional[Callable[[JaxArray], JaxArray]] = reduce_mean):
        self._value = _as_array(tensor, self)
        super().__init__(reduce)

    def _read(self) -> JaxArray:
        """The current value: the one a running transform of this thread gave it, else its own."""
        if _LOCAL.frames:
            x = frames.lookup(self)
            if x is not _MISSING:
                return self._frozen() if x is _FROZEN else x
        x = self._value
        if x.__class__ is _Loan:
            x = self._stored()
        if _top_trace(()) is not _EVAL_TRACE:  # a JAX transformation traces (refs.jax_tracing, inlined)
            if x.__class__ is not _Ref:
                if isinstance(x, _Tracer):  # created while this transformation traces: the value is its own
                    return x
                x = self._as_ref()
            y = frames.recall(self)
            return refs.ref_get(x, self._label()) if y is _MISSING else y
        if _LOCAL.written:
            _LOCAL.written.clear()  # nothing traces now: the values remembered from the traces are done with
        if x.__class__ is _Ref:
            return refs.ref_get(x, self._label())
        if not self._exposed:
            self._expose()
        return x

    def _expose(self):
        """Marks the stored array exposed (see EXPOSED)."""
        self._exposed = True  # the mark first, then the count: whoever reads the count next sees the mark
        EXPOSED[0] += 1

    def _stored(self) -> JaxArray:
        """The storage (an array, or a jax.Ref), once any compiled call that borrowed it (donation) has stored
        its new value."""
        x = self._value
        while x.__class__ is _Loan:
            x = x.wait(self)
            if x is _MISSING:
                x = self._value
        return x

    def _frozen(self) -> JaxArray:
        """The concrete value, for a compiled transform that reads this variable outside its collection."""
        x = self._stored()
        if x.__class__ is _Ref:
            with refs.at_top():
                x = x[...]
        return x

    def _as_ref(self):
        """The storage as a JAX array reference, made from the current value if it is not one yet."""
        while True:
            with refs.STORAGE_LOCK:  # not while a donating call has the value (lend takes this lock)
                x = self._value
                if x.__class__ is _Ref:
                    return x
                if x.__class__ is not _Loan:
                    x = self._value = refs.new_ref(x, self._label())
                    refs.REFS[0] += 1
                    return x
            if x.wait(self) is not _MISSING:
                raise RuntimeError(f'objax: {self._label()} was used inside a JAX transformation while this '
                                   f'thread lends it to a compiled call')

    def _write(self, tensor: JaxArray, given: bool = False):
        """Stores `tensor` (already checked) where `_read` finds it; `given`: the array comes from user code
        (assign, `.value =`), so once stored it is exposed (see EXPOSED)."""
        if _LOCAL.frames and frames.store(self, tensor):
            return
        x = self._value
        if x.__class__ is _Loan:
            x = self._stored()
        if x.__class__ is _Ref:
            if _tracing():
                refs.ref_set(x, tensor, self._label())
                frames.remember(self, tensor)
                return
            if isinstance(tensor, _Tracer) or (tensor.shape == x.shape and tensor.dtype == x.dtype
                                               and tensor.sharding == x.sharding):
                refs.ref_set(x, tensor, self._label())
                return
            # Eager change of shape, dtype or placement (e.g. laid out on a mesh): the reference is dropped, unless
            # a JAX program still holds it.
            self._value = tensor
            if given:
                self._expose()
            box = [x]
            del x
            if not refs.sole_holder(box):
                with refs.STORAGE_LOCK:
                    self._value = box[0]
                    refs.REFS[0] += 1
                refs.ref_set(box[0], tensor, self._label())  # raises: the program reads this shape
            return
        if _tracing():
            if isinstance(x, _Tracer):  # created while this transformation traces: the value is its own
                self._value = tensor
            else:
                refs.ref_set(self._as_ref(), tensor, self._label())
                frames.remember(self, tensor)
            return
        if isinstance(tensor, _Tracer):
            raise refs.leaked_tracer_error(self._label())
        with refs.STORAGE_LOCK:
            if self._value.__class__ is not _Ref:
                self._value = tensor
                if given:
                    self._expose()
                return
        self._write(tensor, given)  # another thread's JAX transformation made it a reference meanwhile

    def assign(self, tensor: JaxArray, check: bool = True):
        """Sets the value; with `check` the new value must be an array of the variable's shape.

        Args:
            tensor: the new value (an array, or a variable whose value is taken).
            check: refuse a value of another shape, or a Python list/tuple (the dtype is not checked).

        Raises:
            AssignmentError: (a ValueError and an AssertionError) with `check`, for another shape or a list.
            TypeError: `tensor` cannot be converted to an array.
            VariableOutsideCollectionError: called inside a compiled transform (Jit, Parallel) whose collection
                does not hold this variable.
        """
        self._write(self._check_assign(tensor) if check else _as_array(tensor, self), given=True)


class TrainVar(_OwnValue, BaseVar):
    """A trainable variable: gradient transforms differentiate it. Its `.value` is read-only; use `assign`
    (setting `.value` raises ValueError).

    Args:
        tensor: the initial value (an array of any shape; Python numbers are converted, without weak type).
        reduce: merges copies stacked on axis 0, shape (n, *shape), into one value; None never merges.

    Raises:
        TypeError: `tensor` cannot be converted to an array.
    """

    _ref_kind = None  # what a JAX transformation nested in objax.Grad reads of it is differentiated

    def _refuse(self, tensor: JaxArray):
        raise ValueError(f'{self._label()}.value is read-only: TrainVars are changed through their gradients. '
                         f'Use .assign(new_value) if you know what you are doing.')

    value = property(_OwnValue._read, _refuse)


class BaseState(BaseVar):
    """Abstract base of the non-trainable variables (gradient transforms ignore them).

    Args:
        reduce: merges copies of the value stacked on axis 0, shape (n, *shape), into one value; None never
            merges.
    """


class StateVar(_OwnValue, BaseState):
    """A non-trainable variable whose value can be written directly (running statistics, counters...).

    Setting `.value` is unchecked (the shape may change); `assign` checks it.

    Args:
        tensor: the initial value (an array of any shape; Python numbers are converted, without weak type).
        reduce: merges copies stacked on axis 0, shape (n, *shape), into one value; None never merges.

    Raises:
        TypeError: `tensor` cannot be converted to an array.
    """

    def _set_value(self, tensor: JaxArray):
        # Unchecked, as in Objax 1.8: StateVar(jn.array(0)).value += 0.5 holds 0.5.
        self._write(_as_array(tensor, self), given=True)

    value = property(_OwnValue._read, _set_value)


class TrainRef(BaseState):
    """A state variable that reads and writes the TrainVar it refers to (used by optimizers).

    Args:
        ref: the TrainVar whose value this reference reads and writes.

    Raises:
        TypeError: `ref` is not a TrainVar.
    """

    def __init__(self, ref: TrainVar):
        if not isinstance(ref, TrainVar):
            raise TypeError(f'TrainRef(ref) expects a TrainVar, got {type(ref).__name__}')
        self.ref = ref
        super().__init__(None)

    @property
    def value(self) -> JaxArray:
        return self.ref.value

    @value.setter
    def value(self, tensor: JaxArray):
        self.ref.assign(tensor)

    def assign(self, tensor: JaxArray, check: bool = True):
        """Writes the referenced TrainVar (as its `assign`).

        Args:
            tensor: the new value, shape of the TrainVar.
            check: refuse a value of another shape, or a Python list/tuple.

        Raises:
            AssignmentError: (a ValueError and an AssertionError) with `check`, for another shape or a list.
        """
        self.ref.assign(tensor, check)

    def _storage(self) -> BaseVar:
        return self.ref._storage()

    def _label(self) -> str:
        return f'TrainRef to {self.ref._label()}'

    def __repr__(self):
        return f'{reprs.class_path(self)}(ref={self.ref!r})'


class RandomState(StateVar):
    """A random key (classic threefry, as Objax 1.x) that advances each time it is split.

    Its value is a uint32 key of shape (2,). Copies are never merged (`reduce` does nothing).

    Args:
        seed: the key is `jax.random.PRNGKey(seed)`.
    """

    def __init__(self, seed: int):
        super().__init__(jax.random.PRNGKey(seed), reduce_first)

    @classmethod
    def on_first_use(cls, seed: int) -> 'RandomState':
        """A RandomState whose key `PRNGKey(seed)` is made when the state is first read or written, not now:
        creating it touches no device, so a module-level generator lets `jax.distributed.initialize()` run after
        `import objax`.

        Args:
            seed: the key is `jax.random.PRNGKey(seed)`.

        Returns:
            The state, equal in every use to `RandomState(seed)`.
        """
        state = cls.__new__(cls)
        loan = _Loan({}, make=lambda var: _make_key(var, loan, seed))
        state._value = loan
        BaseVar.__init__(state, reduce_first)
        return state

    def seed(self, seed: int):
        """Resets the key to `PRNGKey(seed)`.

        Args:
            seed: the new seed.
        """
        self.assign(jax.random.PRNGKey(seed))

    def reduce(self, tensors: JaxArray):
        """Does nothing: as in Objax 1.8, a random key is never merged from copies (transforms give each copy
        its own key and advance this state themselves).

        Args:
            tensors: the copies, shape (n, 2); ignored.
        """

    def split(self, n: int) -> JaxArray:
        """Draws new keys and advances this state.

        Args:
            n: how many keys.

        Returns:
            n keys, shape (n, 2), uint32.
        """
        with jax.threefry_partitionable(False):
            keys = jax.random.split(self.value, n + 1)
        self._write(keys[0])
        return keys[1:]


def _make_key(var: RandomState, loan, seed: int) -> None:
    """Stores the key of a RandomState made on first use, unless another thread has stored it already."""
    if var._value is loan:
        if _tracing():  # first used while a function traces: the key is still made concretely
            with jax.ensure_compile_time_eval():
                var._value = jax.random.PRNGKey(seed)
        else:  # as at construction (the same compiled programs, found in JAX's caches)
            var._value = jax.random.PRNGKey(seed)


def storage_groups(items: Iterable[Tuple[str, BaseVar]]) -> List[Tuple[BaseVar, List[str]]]:
    """The distinct variables holding the data of named variables, each with its names (a TrainRef stands for
    the TrainVar it refers to), in order of first appearance.

    Args:
        items: (name, variable) pairs, e.g. `vc.items()`.

    Returns:
        A list of (variable holding the data, [its names in the order met]).
    """
    groups = {}
    for name, var in items:
        storage = var._storage()
        groups.setdefault(id(storage), (storage, []))[1].append(name)
    return list(groups.values())


def record_name(var: BaseVar, name: str) -> None:
    """Records the name under which Module.vars() collected `var` (used in messages).

    Args:
        var: the variable.
        name: its name.
    """
    var._name = name


def name_of(var: BaseVar) -> Optional[str]:
    """The name last recorded for `var` by `record_name`, None if none.

    Args:
        var: the variable.

    Returns:
        The name, or None.
    """
    return var._name


def record_spec(var: BaseVar, spec) -> None:
    """Records the sharding spec of `var` (objax.sharding.set_spec and apply_rules check it first).

    Args:
        var: the variable holding the data (not a TrainRef).
        spec: a jax.sharding.PartitionSpec, or None for no spec of its own.
    """
    var._spec = spec


def spec_of(var: BaseVar):
    """The sharding spec recorded for `var` itself (a TrainRef has none: ask its storage).

    Args:
        var: the variable.

    Returns:
        A jax.sharding.PartitionSpec, or None.
    """
    return var._spec


def record_layout(var: BaseVar, layout) -> None:
    """Records the sharding `var`'s value was laid out with (objax.sharding.shard; None: forgotten).

    Args:
        var: the variable holding the data (not a TrainRef).
        layout: a jax.sharding.NamedSharding, or None.
    """
    var._layout = layout


def layout_of(var: BaseVar):
    """The sharding recorded for `var` itself by `record_layout`, None if none.

    Args:
        var: the variable.

    Returns:
        A jax.sharding.NamedSharding, or None.
    """
    return var._layout


def record_tracked(slot: BaseVar, var: Optional[BaseVar]) -> None:
    """Records that `slot` (an optimizer's moment, an average...) tracks `var`: it holds a value of var's shape
    and, without a sharding spec of its own, objax.sharding lays it out as `var`.

    Args:
        slot: the variable holding the tracking value.
        var: the variable holding the data it tracks (not a TrainRef), or None to forget the link.
    """
    slot._tracked = var


def tracked_of(slot: BaseVar) -> Optional[BaseVar]:
    """The variable `slot` tracks (see `record_tracked`), None if none was recorded.

    Args:
        slot: the variable.

    Returns:
        The tracked variable, or None.
    """
    return slot._tracked
