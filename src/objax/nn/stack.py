"""Stack: n layers of one structure whose variables are stacked on a leading axis, applied by one scanned body.

A Python loop (or a Sequential) of n layers is traced and compiled layer by layer: compile time grows with the
depth. A Stack keeps one template layer and, for each of its variables, one variable holding the n layers'
values stacked on a new leading axis; a call runs jax.lax.scan over the stacked values, tracing the template
once whatever n is.
"""

import copy
import numbers
from typing import Callable, Iterator, List, Optional, Sequence, Set, Union

import jax
import jax.numpy as jn
import numpy as np

from objax._core.control_flow import Carried, scan_pure
from objax._core.pure import Pure
from objax._core.remat import Remat
from objax._core.transform import call_given
from objax._core.variables import record_name, reduce_first, storage_groups
from objax.module import Module
from objax.nn._format import layer_repr
from objax.nn.sequential import Sequential, accepted_kwargs
from objax.varcollection import VarCollection
from objax.variable import BaseVar, RandomState, StateVar, TrainVar

__all__ = ['Stack']


class Stack(Module):
    """n layers of identical structure applied in order (as `Sequential`), their variables stacked: each variable
    of the layer is one variable of shape (n, ...) holding the n layers' values (a TrainVar stays a TrainVar,
    a StateVar a StateVar; a layer's RandomState becomes a StateVar of its n keys). Calling the Stack runs one
    jax.lax.scan whose body is one layer, so tracing and compiling cost the same at any depth.

    `vars()` names each stacked variable after the layer's variable: `(Stack).layer(Linear).w` has shape
    (n, nin, nout). A variable that all layers share (the same object in each, such as the key of the default
    random generator that Dropout uses) is not stacked: it keeps its name in the layer and, when the layers write
    it (a random key), each layer reads what the previous one wrote, as in the Sequential. Each layer's random key
    (a generator of its own) is stacked and advances per layer; either way, each layer and each call draws new
    numbers. BatchNorm statistics are updated per layer while training.

    Each layer gets the output of the previous one (a tuple spread over its positional arguments) and the
    keyword arguments of the call that it accepts (as `Sequential`); a layer returns what it takes: the same
    structure, shapes and dtypes.

    Args:
        make_layer: called n times without arguments, returns a new layer (a Module) each time; every layer has
            the same variables (names, classes, shapes, dtypes). The Stack's attributes other than variables
            (activation, keep probability...) are those of the first layer.
        n: the number of layers, >= 1.
        remat: recompute each layer's activations in the backward pass (objax.Remat per layer, i.e.
            jax.checkpoint around the scanned body) instead of keeping them: less memory, more compute.
        policy: with remat, which intermediate values may be saved (one of `jax.checkpoint_policies`).
        unroll: how many layers one iteration of the scan runs (lax.scan's `unroll`).

    Raises:
        TypeError: make_layer is not callable or does not return a Module.
        ValueError: n < 1, a policy without remat, or layers that differ (the first difference is named).
    """

    def __init__(self, make_layer: Callable[[], Module], n: int, remat: bool = False,
                 policy: Optional[Callable] = None, unroll: Union[int, bool] = 1):
        if not callable(make_layer):
            raise TypeError(f'Stack(make_layer, n): make_layer must be callable, got {type(make_layer).__name__}')
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f'Stack(make_layer, n): n must be an int >= 1, got {n!r}')
        self._build([make_layer() for _ in range(int(n))], remat, policy, unroll)

    @classmethod
    def from_layers(cls, layers: Sequence[Module], remat: bool = False, policy: Optional[Callable] = None,
                    unroll: Union[int, bool] = 1) -> 'Stack':
        """A Stack holding copies of the values of `layers` (e.g. a Sequential of identical layers, or the
        result of `unstack`); the layers themselves are not changed.

        Args:
            layers: one or more layers of identical structure (same variable names, classes, shapes, dtypes).
            remat: as for the constructor.
            policy: as for the constructor.
            unroll: as for the constructor.

        Returns:
            The Stack, its layer i holding the values of layers[i].

        Raises:
            TypeError: a layer is not a Module.
            ValueError: no layers, or layers that differ (the first difference is named).
        """
        stack = cls.__new__(cls)
        stack._build(list(layers), remat, policy, unroll)
        return stack

    def _build(self, layers: List[Module], remat: bool, policy: Optional[Callable], unroll: Union[int, bool]):
        if policy is not None and not remat:
            raise ValueError('Stack: a checkpoint policy was given without remat=True')
        groups = _check_same(layers)
        self.n, self.remat, self.policy, self.unroll = len(layers), bool(remat), policy, unroll
        memo, stacked, self._sliced, self._shared = {}, [], [], []
        for k, (var, names) in enumerate(groups):
            own = [dict(layer.vars().items())[names[0]]._storage() for layer in layers]
            if len(layers) > 1 and all(v is var for v in own):  # the same variable in every layer: shared
                memo[id(var)] = var
                self._shared.append(k)
                continue
            values = jn.stack([v.value for v in own])
            memo[id(var)] = _fresh(var, values[0])
            stacked.append(_stacked_like(var, values))
            self._sliced.append(k)
        for module in _modules_holding_only(layers[0], {id(var) for k, (var, _) in enumerate(groups)
                                                        if k in self._shared}):
            memo[id(module)] = module
        self._template = copy.deepcopy(layers[0], memo)
        tvars = [memo[id(var)] for var, _ in groups]
        self._public = {id(t): s for t, s in zip((tvars[k] for k in self._sliced), stacked)}
        self._public.update((id(tvars[k]), tvars[k]) for k in self._shared)
        self._layer = Remat(self._template, self._template.vars(), policy, prevent_cse=False) if remat \
            else self._template
        self._body = Pure(call_given, tvars, f'Stack({type(layers[0]).__name__})', self._describe)
        self._body.open_reads = True
        self._carried = Carried(self._body)
        self._outer = Pure(None, stacked + [tvars[k] for k in self._shared])
        self._kwargs = accepted_kwargs(self._template)

    def _describe(self, var: BaseVar) -> Optional[str]:
        public = self._public.get(id(var), var)
        return self.vars().names().get(id(public))

    def vars(self, scope: str = '') -> VarCollection:
        """The stacked variables (and the shared ones), named `scope(Stack).layer` + their name in the layer.

        Args:
            scope: prefix of every name.

        Returns:
            A new VarCollection {name: variable}; a stacked variable has shape (n, *shape in the layer).
        """
        vc = VarCollection()
        for name, var in self._template.vars(f'{scope}({type(self).__name__}).layer').items():
            public = self._public[id(var._storage())]
            vc.update([(name, public)])
            record_name(public, name)
        return vc

    def __call__(self, *args, **kwargs):
        """Applies the n layers in order.

        Args:
            *args: the first layer's positional arguments (arrays or pytrees of arrays).
            **kwargs: given to the layer if it accepts them by name (constants of the traced body).

        Returns:
            The last layer's output (a tuple stays a tuple).

        Raises:
            ValueError: the layer returns other shapes or dtypes than it takes, or changes a variable's.
            objax.VariableOutsideCollectionError: the layer writes a variable that is not its own.
        """
        if self._kwargs is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in self._kwargs}
        values = self._outer.values()
        call = [None] * len(self._body.variables)
        sliced = dict(zip(self._sliced, values))
        for k, x in zip(self._shared, values[len(self._sliced):]):
            call[k] = x
        layer, single = self._layer, []

        def step(carry, _):
            out = layer(*carry, **kwargs)
            new = out if isinstance(out, tuple) else (out,)
            _check_carry(self._body.owner, carry, new)
            single[:] = [not isinstance(out, tuple)]
            return new, None

        carry, _, changes = scan_pure(self._carried, call, step, tuple(args), None, self.n, unroll=self.unroll,
                                      sliced=sliced)
        index = {k: j for j, k in enumerate(self._sliced + self._shared)}
        self._outer.write({index[k]: x for k, x in changes.items()})
        return carry[0] if single[0] else carry

    def unstack(self) -> Sequential:
        """A Sequential of n new layers holding the Stack's current values (layer i: slice i of each stacked
        variable); variables shared by all layers stay shared. `Stack.from_layers` converts back.

        Returns:
            The Sequential.
        """
        values = self._outer.values()
        tvars = self._body.variables
        keep = {id(tvars[k]) for k in self._shared}
        layers = []
        for i in range(self.n):
            memo = {id(m): m for m in _modules_holding_only(self._template, keep)}
            memo.update((id(tvars[k]), tvars[k]) for k in self._shared)
            memo.update((id(tvars[k]), _fresh(tvars[k], x[i])) for k, x in zip(self._sliced, values))
            layers.append(copy.deepcopy(self._template, memo))
        return Sequential(layers)

    def __len__(self) -> int:
        return self.n

    def __repr__(self):
        layer = repr(self._template).replace('\n', '\n  ')
        return f'{layer_repr(self, n=self.n, remat=self.remat)[:-1]}, layer={layer})'


def _check_same(layers: List[Module]) -> list:
    """The storage groups of the first layer's vars() (see storage_groups), after checking that every layer is
    a Module with the same variables (names, classes, shapes, dtypes, sharing) as the first one."""
    if not layers:
        raise ValueError('Stack.from_layers: no layers given')
    bad = next((i for i, layer in enumerate(layers) if not isinstance(layer, Module)), None)
    if bad is not None:
        raise TypeError(f'Stack: layer {bad} is a {type(layers[bad]).__name__}, not a Module')
    first = layers[0].vars()
    groups = storage_groups(first.items())
    for i, layer in enumerate(layers[1:], 1):
        where = f'Stack: layer {i} differs from layer 0'
        if type(layer) is not type(layers[0]):
            raise ValueError(f'{where}: it is a {type(layer).__name__}, layer 0 a {type(layers[0]).__name__}')
        vc = layer.vars()
        names = list(first.keys()) + list(vc.keys())
        missing = next((name for name in names if name not in first or name not in vc), None)
        if missing is not None:
            holder = 'layer 0' if missing in first else f'layer {i}'
            raise ValueError(f'{where}: only {holder} has the variable "{missing}"')
        for name, a in first.items():
            b = vc[name]
            for what, x, y in (('class', type(a).__name__, type(b).__name__), ('shape', np.shape(a), np.shape(b)),
                               ('dtype', a.dtype, b.dtype)):
                if x != y:
                    raise ValueError(f'{where} at "{name}": {what} {y} instead of {x}')
        if [names for _, names in storage_groups(vc.items())] != [names for _, names in groups]:
            raise ValueError(f'{where}: its variables are shared between other names')
    return groups


def _fresh(var: BaseVar, value) -> BaseVar:
    """A new variable of var's class holding `value` (for a layer's copy)."""
    if type(var) in (TrainVar, StateVar):
        return type(var)(value, var._reduce)
    if type(var) is RandomState:
        new = RandomState(0)
        new.assign(value)
        return new
    new = copy.deepcopy(var)
    new.assign(value, check=False)
    return new


def _stacked_like(var: BaseVar, values) -> BaseVar:
    """The variable holding the n layers' values of `var` (stacked on axis 0)."""
    if isinstance(var, TrainVar):
        return TrainVar(values, var._reduce)
    return StateVar(values, reduce_first if isinstance(var, RandomState) else var._reduce)


def _submodules(module: Module, seen: Set[int]) -> Iterator[Module]:
    """The modules held by `module` (attributes and list items), recursively, each once."""
    items = list(module.__dict__.values()) + (list(module) if isinstance(module, list) else [])
    for item in items:
        if isinstance(item, Module) and id(item) not in seen:
            seen.add(id(item))
            yield item
            yield from _submodules(item, seen)


def _modules_holding_only(root: Module, shared: Set[int]) -> List[Module]:
    """The sub-modules of root whose variables are all in `shared` (ids): copies of root keep them as they are."""
    out = []
    for module in _submodules(root, {id(root)}):
        ids = {id(v._storage()) for v in module.vars().values()}
        if ids and ids <= shared:
            out.append(module)
    return out


def _check_carry(owner: str, before: tuple, after: tuple) -> None:
    """Raises unless the layer returned what it took (structure, shapes, dtypes)."""
    a, b = jax.tree.structure(before), jax.tree.structure(after)
    shapes = [(np.shape(x), jn.result_type(x)) for x in jax.tree.leaves(before)]
    if a != b or shapes != [(np.shape(x), jn.result_type(x)) for x in jax.tree.leaves(after)]:
        show = lambda tree: jax.tree.map(lambda x: f'{jn.result_type(x).name}{list(np.shape(x))}', tree)  # noqa
        raise ValueError(f'{owner}: the layer takes {show(before)} and returns {show(after)}; the layers of a '
                         f'Stack return what they take (same structure, shapes and dtypes)')

