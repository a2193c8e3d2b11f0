"""Low-rank adapters (LoRA, Hu et al., 2021) for the Linear layers of any module: add, find and merge them."""

import math
import numbers
from typing import Dict, Iterable, Iterator, List, Set, Tuple, Union

import jax.numpy as jn

from objax import random
from objax.functional._checks import positive_int
from objax.module import Module
from objax.nn._format import layer_repr
from objax.nn.dropout import Dropout
from objax.nn.linear import Linear
from objax.nn.sequential import Sequential
from objax.nn.stack import Stack
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import BaseVar, TrainVar

__all__ = ['LoRALinear', 'add_lora', 'lora_layers', 'merge_lora']


def _checked_settings(owner: str, rank: int, alpha: float, dropout: float) -> int:
    """The rank, after checking rank, alpha and dropout."""
    rank = positive_int(owner, 'rank', rank)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(f'{owner}: alpha must be a positive number, got {alpha!r}')
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f'{owner}: dropout must be in [0, 1), got {dropout!r}')
    return rank


class LoRALinear(Module):
    """A Linear layer with a low-rank adapter: y = base(x) + scale * (dropout(x) . lora_a) . lora_b.

    `base` is the wrapped Linear itself (its variables are untouched: train only `lora_a` and `lora_b`);
    `lora_a` (nin, rank) is drawn as PEFT draws its A (PyTorch Linear's default, kaiming uniform with a = sqrt(5):
    U(-1/sqrt(nin), 1/sqrt(nin))) and `lora_b` (rank, nout) is zero, so that the layer computes base(x) until
    trained. scale = alpha / rank, or alpha / sqrt(rank) with `use_rslora`. The adapter is float32 whatever the
    base's dtype (as PEFT keeps it); its output is cast to the base's output dtype. PEFT stores A as (rank, nin)
    and B as (nout, rank): the transposes of lora_a and lora_b.
    """

    def __init__(self, base: Linear, rank: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False,
                 generator: random.Generator = random.DEFAULT_GENERATOR):
        """Wraps `base` with a new adapter.

        Args:
            base: the Linear layer to adapt.
            rank: the rank r of the adapter, a positive int.
            alpha: the scale numerator (PEFT's lora_alpha), > 0.
            dropout: probability of dropping an entry of the adapter's input while training.
            use_rslora: scale by alpha / sqrt(rank) instead of alpha / rank (rank-stabilized LoRA).
            generator: the random generator drawing lora_a (and the dropout masks).

        Raises:
            TypeError: base is not a Linear.
            ValueError: rank not a positive int, alpha not a positive number, or dropout outside [0, 1).
        """
        if not isinstance(base, Linear):
            raise TypeError(f'LoRALinear: base must be an objax.nn.Linear, got {type(base).__name__}')
        rank = _checked_settings('LoRALinear', rank, alpha, dropout)
        nin, nout = base.w.value.shape
        self.base = base
        bound = 1 / math.sqrt(nin)
        self.lora_a = TrainVar((random.uniform((nin, rank), generator=generator) * 2 - 1) * bound)
        self.lora_b = TrainVar(jn.zeros((rank, nout), jn.float32))
        self.rank, self.alpha, self.use_rslora, self.dropout = rank, alpha, bool(use_rslora), float(dropout)
        self.scale = alpha / math.sqrt(rank) if use_rslora else alpha / rank
        self.drop = Dropout(1 - dropout, generator) if dropout > 0 else None

    def __call__(self, x: JaxArray, training: bool = False) -> JaxArray:
        """base(x) plus the adapter's low-rank update.

        Args:
            x: input of shape (..., nin).
            training: apply the adapter's dropout.

        Returns:
            Shape (..., nout), the dtype of base(x).

        Raises:
            ValueError: the last axis of x is not nin.
        """
        y = self.base(x)
        h = x if self.drop is None else self.drop(x, training)
        update = jn.dot(jn.dot(h, self.lora_a.value), self.lora_b.value) * self.scale
        return y + update.astype(y.dtype)

    def merged_weight(self) -> JaxArray:
        """The base weight with the adapter folded in: w + scale * lora_a . lora_b (computed in float32).

        Returns:
            An array of the shape and dtype of base.w, (nin, nout).
        """
        w = self.base.w.value
        update = jn.dot(self.lora_a.value, self.lora_b.value) * self.scale
        return (w.astype(jn.promote_types(w.dtype, jn.float32)) + update).astype(w.dtype)

    def __repr__(self):
        nin, nout = self.base.w.value.shape
        return layer_repr(self, nin=nin, nout=nout, rank=self.rank, alpha=self.alpha, dropout=self.dropout,
                          use_rslora=self.use_rslora)


def _children(module: Module) -> Iterator[Tuple[str, Module, object]]:
    """(attribute name or list index as a string, holder, value) for the direct parts of `module`."""
    items = enumerate(module) if isinstance(module, list) else ()
    for i, value in items:
        yield str(i), module, value
    for name, value in list(vars(module).items()):
        yield name, module, value


def _walk(module: Module, path: str, seen: set) -> Iterator[Tuple[str, str, Module, object]]:
    """(dotted path, attribute name, holder, value) of every part reachable from `module`, each module once; the
    inside of a LoRALinear or of a Stack (whose layer is a template of stacked variables) is not walked."""
    if id(module) in seen:
        return
    seen.add(id(module))
    for name, holder, value in _children(module):
        if not isinstance(value, Module):
            continue
        where = f'{path}.{name}' if path else name
        yield where, name, holder, value
        if not isinstance(value, (LoRALinear, Stack)):
            yield from _walk(value, where, seen)


def _replace(holder: Module, name: str, value: Module):
    if isinstance(holder, list) and name.isdigit():
        holder[int(name)] = value
    else:
        setattr(holder, name, value)


def _has_lora(stack: Stack) -> bool:
    return any('(LoRALinear).' in name for name in stack.vars().keys())


def _restacked(stack: Stack, layers: Sequential) -> Stack:
    return Stack.from_layers(list(layers), remat=stack.remat, policy=stack.policy, unroll=stack.unroll)


def lora_layers(module: Module) -> Dict[str, LoRALinear]:
    """The adapted Linear layers of `module`, by their dotted attribute path (list items by index), e.g.
    `{'layers.0.self_attn.q_proj': LoRALinear(...)}`.

    Inside an objax.nn.Stack, layer i's adapters are named by its index (`layers.3.self_attn.q_proj`) and are
    copies holding that layer's values (`Stack.unstack`): read them; the Stack holds the variables.

    Args:
        module: any objax module.

    Returns:
        A dict path -> LoRALinear, in the order of the module's attributes.
    """
    out = {}
    for path, _, _, value in _walk(module, '', set()):
        if isinstance(value, LoRALinear):
            out[path] = value
        elif isinstance(value, Stack) and _has_lora(value):
            for i, layer in enumerate(value.unstack()):
                out.update((f'{path}.{i}.{k}', v) for k, v in lora_layers(layer).items())
    return out


def _linear_names(module: Module) -> Set[str]:
    """The attribute names of the Linear layers of `module`, the layers of its Stacks included."""
    out = set()
    for _, name, _, value in _walk(module, '', set()):
        if isinstance(value, Linear):
            out.add(name)
        elif isinstance(value, Stack):
            out |= _linear_names(value.unstack()[0])
    return out


def _add(module: Module, names: Set[str], settings: tuple) -> List[BaseVar]:
    """Wraps the target Linears of `module` (restacking the Stacks that hold some); returns the new adapter
    variables (for a Stack, its stacked ones)."""
    new = []
    for _, name, holder, value in list(_walk(module, '', set())):
        if isinstance(value, Linear) and name in names:
            adapter = LoRALinear(value, *settings)
            _replace(holder, name, adapter)
            new += [adapter.lora_a, adapter.lora_b]
        elif isinstance(value, Stack):
            layers = value.unstack()
            added = [_add(layer, names, settings) for layer in layers]
            if added[0]:
                inside = {id(v) for v in added[0]}
                names_in_layer = {k for k, v in layers[0].vars().items() if id(v) in inside}
                stack = _restacked(value, layers)
                _replace(holder, name, stack)
                prefix = f'({type(stack).__name__}).layer'
                new += [v for k, v in stack.vars().items() if k[len(prefix):] in names_in_layer]
    return new


def add_lora(module: Module, rank: int, alpha: float, targets: Union[str, Iterable[str]], dropout: float = 0.0,
             use_rslora: bool = False) -> VarCollection:
    """Wraps every Linear of `module` held in an attribute named in `targets` with a LoRALinear adapter.

    The model computes what it computed before until the adapters are trained (their B is zero). Train the
    returned collection alone: hand it to `objax.GradValues` and the optimizer; the base weights are then never
    written and stay bit-identical. `merge_lora` folds the adapters into the weights.

    An objax.nn.Stack whose layer holds targets is rebuilt (unstacked, adapted layer by layer, stacked again,
    with stacked adapters of shape (n, nin, rank) and (n, rank, nout)): collections made from the module before
    refer to the old Stack's variables.

    Args:
        module: any objax module (a zoo model, a user's own).
        rank: the adapters' rank, a positive int.
        alpha: the scale numerator (PEFT's lora_alpha): each adapter adds alpha / rank * x . A . B.
        targets: attribute names of the Linear layers to adapt, e.g. ('q_proj', 'v_proj') for Llama or
            ('query', 'value') for objax.nn.MultiHeadAttention; one name may be given as a string.
        dropout: dropout probability on each adapter's input while training (applied when the layer is called
            with training=True, as objax.zoo.llama.Llama does).
        use_rslora: scale by alpha / sqrt(rank) (rank-stabilized LoRA).

    Returns:
        A VarCollection of the new adapters' TrainVars (lora_a and lora_b of each), named as in module.vars().

    Raises:
        ValueError: no Linear is held under any of the names in `targets` (the names of the module's Linear
            layers are listed), or a bad rank, alpha or dropout.
    """
    names = {targets} if isinstance(targets, str) else set(targets)
    rank = _checked_settings('add_lora', rank, alpha, dropout)  # before anything changes
    new = _add(module, names, (rank, alpha, dropout, use_rslora))
    if not new:
        raise ValueError(f'add_lora: no Linear layer of {type(module).__name__} is named {sorted(names)}; its '
                         f'Linear layers are named {sorted(_linear_names(module))}')
    ids = {id(v) for v in new}
    return VarCollection((k, v) for k, v in module.vars().items() if id(v) in ids)


def merge_lora(module: Module) -> int:
    """Folds every adapter of `module` into its Linear (w += scale * lora_a . lora_b) and puts that Linear back
    in place of the LoRALinear, so that the module holds plain Linear layers again (e.g. to save the merged
    weights with a model's save_pretrained). A Stack holding adapters is rebuilt (see add_lora).

    Args:
        module: a module holding LoRALinear layers.

    Returns:
        The number of adapters merged (for a Stack, one per layer).
    """
    merged = 0
    for _, name, holder, value in list(_walk(module, '', set())):
        if isinstance(value, LoRALinear):
            value.base.w.assign(value.merged_weight())
            _replace(holder, name, value.base)
            merged += 1
        elif isinstance(value, Stack) and _has_lora(value):
            layers = value.unstack()
            merged += sum(merge_lora(layer) for layer in layers)
            _replace(holder, name, _restacked(value, layers))
    return merged
