"""PrivateGradValues: DP-SGD gradients, clipped per microbatch and noised with a Gaussian."""

import math
import numbers
from typing import Callable, List, Tuple, Union

import jax
import jax.numpy as jn

from objax._core.modules import module_or_function_repr, prefixed
from objax._core.pure import Pure
from objax.gradient import GradValues
from objax.module import Function, Module
from objax.random import DEFAULT_GENERATOR, Generator, normal
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import RandomState
from objax.vectorize import Vectorize

__all__ = ['PrivateGradValues']


def _as_list(outputs) -> Union[list, tuple]:
    """f's outputs as f returned them when a list or tuple (as GradValues returns them), else a 1-element list."""
    return outputs if isinstance(outputs, (list, tuple)) else [outputs]


def _global_norm(grads: List[JaxArray]) -> JaxArray:
    return jn.sqrt(sum(jn.sum(jn.square(g)) for g in grads))


def _clip_scale(grads: List[JaxArray], l2_norm_clip: float) -> JaxArray:
    """min(1, l2_norm_clip / global norm of grads); exactly 0 when l2_norm_clip is 0 (no 0 / 0)."""
    norm = _global_norm(grads)
    if l2_norm_clip == 0:
        return jn.zeros_like(norm)
    return l2_norm_clip / jn.maximum(norm, l2_norm_clip)


def _checked_hyper(name: str, value) -> float:
    """`value` as a float after checking that it is a finite number >= 0."""
    if isinstance(value, bool):
        raise TypeError(f'PrivateGradValues: {name} must be a number, got {value!r}')
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f'PrivateGradValues: {name} must be a number, got {type(value).__name__}') from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f'PrivateGradValues: {name} must be a finite number >= 0, got {value!r}'
                         + (' (an infinite or NaN value would make the gradients NaN)'
                            if not math.isfinite(number) else ''))
    return number


def _checked_batch_axis(batch_axis) -> Tuple[int, ...]:
    """batch_axis as a tuple of zeros: every argument is split into microbatches along axis 0."""
    try:
        axes = tuple(batch_axis)
    except TypeError:
        raise ValueError(f'PrivateGradValues: batch_axis must be a tuple of zeros, one per argument of f, '
                         f'got {batch_axis!r}') from None
    if not axes or any(isinstance(a, bool) or not isinstance(a, numbers.Integral) or a != 0 for a in axes):
        raise ValueError(f'PrivateGradValues: batch_axis must contain only zeros, one per argument of f (every '
                         f'argument is split into microbatches along axis 0; None is not allowed), '
                         f'got {batch_axis!r}')
    return tuple(0 for _ in axes)


class PrivateGradValues(Module):
    """DP-SGD version of GradValues: `(grads, outputs)` where grads is the mean over microbatches of each
    microbatch's gradient clipped to global l2 norm <= l2_norm_clip, plus N(0, s^2) noise with
    s = noise_multiplier * l2_norm_clip / num_microbatches; outputs are f's outputs averaged over microbatches.
    A batch of N examples makes N / microbatch microbatches. With use_norm_accumulation, the clipping factors
    are computed one microbatch at a time first, then one backward pass gives the clipped sum (same result,
    less memory, slower).

    Args:
        f: the loss, returning a scalar or `(loss, aux...)` where the aux outputs may be any pytrees.
        vc: the variables to differentiate (f's TrainVars).
        noise_multiplier: finite, >= 0.
        l2_norm_clip: finite, >= 0 (0 clips every gradient to zero, as in Objax 1.8).
        microbatch: examples per microbatch, a positive int dividing the batch size.
        batch_axis: one 0 per argument of f: every argument is split into microbatches along axis 0.
        keygen: the generator of the noise.
        use_norm_accumulation: compute the clipping factors first, one microbatch at a time.

    Raises:
        ValueError: a NaN, infinite or negative noise_multiplier or l2_norm_clip, a microbatch that is not a
            positive int, a batch_axis with anything but zeros.
    """

    def __init__(self, f: Callable, vc: VarCollection, noise_multiplier: float, l2_norm_clip: float,
                 microbatch: int, batch_axis: Tuple[int, ...] = (0,),
                 keygen: Generator = DEFAULT_GENERATOR, use_norm_accumulation: bool = False):
        if not callable(f):
            raise TypeError(f'PrivateGradValues(f, ...): f must be callable, got {type(f).__name__}')
        if not isinstance(vc, VarCollection):
            raise TypeError(f'PrivateGradValues(f, vc): vc must be a VarCollection, got {type(vc).__name__}')
        _checked_hyper('noise_multiplier', noise_multiplier)
        _checked_hyper('l2_norm_clip', l2_norm_clip)  # 0 is accepted, as in Objax 1.8: all gradients clipped to 0
        if isinstance(microbatch, bool) or not isinstance(microbatch, numbers.Integral) or microbatch < 1:
            raise ValueError(f'PrivateGradValues: microbatch must be a positive int, got {microbatch!r}')
        batch_axis = _checked_batch_axis(batch_axis)
        if not isinstance(keygen, Generator):
            raise TypeError(f'PrivateGradValues(keygen): keygen must be an objax.random.Generator, '
                            f'got {type(keygen).__name__}')
        self.noise_multiplier = noise_multiplier
        self.l2_norm_clip = l2_norm_clip
        self.microbatch = int(microbatch)
        self.batch_axis = batch_axis
        self.keygen = keygen
        self.use_norm_accumulation = bool(use_norm_accumulation)
        self.gv = GradValues(f, vc)
        self.vc = self.gv.vars()  # vc, plus the other variables of f when f is a Module
        self._clipped = Vectorize(Function(self._clipped_grad, self.vc), self.vc, batch_axis)
        # For norm accumulation: f's outputs per microbatch, and the gradient of the clip-weighted loss.
        self._per_microbatch = Vectorize(Function(lambda *a: _as_list(f(*a)), self.vc), self.vc, batch_axis)
        self._weighted = GradValues(self._weighted_loss, self.vc)

    def reshape_microbatch(self, x: JaxArray) -> JaxArray:
        """Splits the batch axis 0 into microbatches: shape (N, ...) -> (N / microbatch, microbatch, ...).

        Args:
            x: an array whose first axis N is a multiple of microbatch.

        Returns:
            x reshaped to (N / microbatch, microbatch, ...).

        Raises:
            ValueError: x is a scalar, or N is not divisible by microbatch.
        """
        shape = tuple(jn.shape(x))
        if not shape:
            raise ValueError('PrivateGradValues: a batched argument is a scalar; it needs a batch axis 0')
        if shape[0] % self.microbatch:
            raise ValueError(f'PrivateGradValues: the batch size {shape[0]} is not divisible by '
                             f'microbatch={self.microbatch}')
        return jn.reshape(x, (shape[0] // self.microbatch, self.microbatch) + shape[1:])

    def _clipped_grad(self, *args) -> Tuple[List[JaxArray], list]:
        grads, outputs = self.gv(*args)
        scale = _clip_scale(grads, self.l2_norm_clip)
        return [g * scale for g in grads], outputs

    def _weighted_loss(self, scales: JaxArray, *args) -> list:
        outputs = self._per_microbatch(*args)
        return [jn.mean(outputs[0] * scales), jax.tree.map(lambda o: jn.mean(o, axis=0), outputs)]

    def _clip_scales(self, num_microbatches: int, args) -> JaxArray:
        """Clipping factor of each microbatch, computed one microbatch at a time (jax.lax.map). Variables are left
        as they were, so the next pass sees the same state and draws the same per-microbatch random keys."""
        pure = Pure(self.gv, self.vc)
        before = pure.values()
        random = [i for i, v in enumerate(pure.variables) if isinstance(v, RandomState)]
        keys = [pure.variables[i].split(num_microbatches) for i in random]  # the keys Vectorize gives the microbatches

        def scale_of_one(xs):
            key_values, call_args = xs
            values = list(before)
            for i, key in zip(random, key_values):
                values[i] = key
            (grads, _), _ = pure(values, *call_args)  # state changes made inside the traced body are dropped
            return _clip_scale(grads, self.l2_norm_clip)

        scales = jax.lax.map(scale_of_one, (keys, tuple(args)))
        pure.write({i: before[i] for i in random})  # the random states as they were
        return scales

    def __call__(self, *args) -> Tuple[List[JaxArray], list]:
        """Returns (noisy clipped gradients, f's outputs averaged over microbatches).

        Args:
            *args: f's arguments; every array leaf has the batch on axis 0, N rows with N a positive multiple
                of microbatch (the same N for all).

        Returns:
            The gradients, a list aligned with vc's TrainVars (each of its variable's shape), and f's outputs
            as f returned them (a tuple or list; a single value becomes a 1-element list), each leaf averaged
            over the N / microbatch microbatches.

        Raises:
            ValueError: wrong number of arguments, a scalar argument, an empty batch, batch sizes that differ or
                are not divisible by microbatch. Nothing is changed.
        """
        if len(args) != len(self.batch_axis):
            raise ValueError(f'PrivateGradValues: got {len(args)} arguments but batch_axis {self.batch_axis} '
                             f'describes {len(self.batch_axis)}')
        sizes = {}
        for i, arg in enumerate(args):
            for path, x in jax.tree_util.tree_flatten_with_path(arg)[0]:
                label = f'argument {i}{jax.tree_util.keystr(path)}'
                if not jn.shape(x):
                    raise ValueError(f'PrivateGradValues: {label} is a scalar; every argument needs a batch on '
                                     f'axis 0')
                sizes.setdefault(jn.shape(x)[0], label)
        if not sizes:
            raise ValueError('PrivateGradValues: the arguments hold no arrays, so there is no batch to split')
        if len(sizes) > 1:
            raise ValueError(f'PrivateGradValues: batched arguments disagree on the batch size: '
                             f'{", ".join(f"{label} has {n}" for n, label in sizes.items())}')
        n = next(iter(sizes))
        if n == 0:
            raise ValueError('PrivateGradValues: empty batch (0 rows): there is no microbatch to clip and average; '
                             'nothing was changed')
        args = tuple(jax.tree.map(self.reshape_microbatch, x) for x in args)
        num_microbatches = n // self.microbatch
        if self.use_norm_accumulation:
            scales = self._clip_scales(num_microbatches, args)
            grads, (_, outputs) = self._weighted(scales, *args)
        else:
            grads, outputs = self._clipped(*args)
            grads = [g.mean(0) for g in grads]
            outputs = jax.tree.map(lambda o: o.mean(0), outputs)
        stddev = self.noise_multiplier * self.l2_norm_clip / num_microbatches
        grads = [g + normal(g.shape, stddev=stddev, generator=self.keygen).astype(g.dtype) for g in grads]
        return grads, outputs

    def vars(self, scope: str = '') -> VarCollection:
        """The differentiated collection (plus f's other variables) named `scope(PrivateGradValues)` + name, then
        the noise generator's key `scope(PrivateGradValues).keygen(Generator)...`, as in Objax 1.8.

        Args:
            scope: prefix put in front of every name.

        Returns:
            The VarCollection of the differentiated variables and of the noise generator.
        """
        prefix = f'{scope}({type(self).__name__})'
        out = prefixed(self.vc, prefix)
        known = {id(v) for v in out.values()}
        keygen = self.keygen.vars(f'{prefix}.keygen')
        out.update((k, v) for k, v in keygen.items() if id(v) not in known)
        return out

    def __repr__(self):
        cls = type(self)
        return (f'{cls.__module__}.{cls.__qualname__}(f={module_or_function_repr(self.gv.__wrapped__)}, '
                f'noise_multiplier={self.noise_multiplier}, l2_norm_clip={self.l2_norm_clip}, '
                f'microbatch={self.microbatch}, batch_axis={self.batch_axis})')
