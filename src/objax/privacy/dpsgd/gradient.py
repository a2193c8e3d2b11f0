"""PrivateGradValues: DP-SGD gradients, clipped per microbatch and noised with a Gaussian."""

import numbers
from typing import Callable, List, Optional, Tuple

import jax
import jax.numpy as jn

from objax import _repr, _state
from objax.gradient import GradValues
from objax.module import Function, Module, _prefixed
from objax.random import DEFAULT_GENERATOR, Generator, normal
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import RandomState
from objax.vectorize import Vectorize

__all__ = ['PrivateGradValues']


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _global_norm(grads: List[JaxArray]) -> JaxArray:
    return jn.sqrt(sum(jn.sum(jn.square(g)) for g in grads))


class PrivateGradValues(Module):
    """DP-SGD version of GradValues: `(grads, outputs)` where grads is the mean over microbatches of each
    microbatch's gradient clipped to global l2 norm <= l2_norm_clip, plus N(0, s^2) noise with
    s = noise_multiplier * l2_norm_clip / num_microbatches; outputs are f's outputs averaged over microbatches.
    A batch of N examples makes N / microbatch microbatches. With use_norm_accumulation, the clipping factors
    are computed one microbatch at a time first, then one backward pass gives the clipped sum (same result,
    less memory, slower)."""

    def __init__(self, f: Callable, vc: VarCollection, noise_multiplier: float, l2_norm_clip: float,
                 microbatch: int, batch_axis: Tuple[Optional[int], ...] = (0,),
                 keygen: Generator = DEFAULT_GENERATOR, use_norm_accumulation: bool = False):
        """Creates the DP-SGD gradient of `f` with respect to the TrainVars of `vc`.

        Args:
            f: the loss function (or Module); its first output is differentiated.
            vc: the variables `f` uses; gradients are taken for its TrainVars.
            noise_multiplier: the noise standard deviation relative to l2_norm_clip (>= 0).
            l2_norm_clip: the largest global l2 norm of one microbatch's gradient (> 0).
            microbatch: examples per clipped microbatch (a positive int dividing the batch size).
            batch_axis: the batched axis of each argument of `f`, or None for an argument shared by all.
            keygen: the random generator drawing the noise.
            use_norm_accumulation: compute the clipping factors first, one microbatch at a time, then the
                clipped sum in one backward pass (less memory, slower; same result).

        Raises:
            TypeError: f not callable, vc not a VarCollection or keygen not an objax.random.Generator.
            ValueError: negative noise_multiplier, l2_norm_clip <= 0, microbatch not a positive int, or a
                batch_axis batching no argument.
        """
        if not callable(f):
            raise TypeError(f'PrivateGradValues(f, ...): f must be callable, got {type(f).__name__}')
        if not isinstance(vc, VarCollection):
            raise TypeError(f'PrivateGradValues(f, vc): vc must be a VarCollection, got {type(vc).__name__}')
        if not noise_multiplier >= 0:
            raise ValueError(f'PrivateGradValues: noise_multiplier must be >= 0, got {noise_multiplier}')
        if not l2_norm_clip > 0:
            raise ValueError(f'PrivateGradValues: l2_norm_clip must be > 0, got {l2_norm_clip}')
        if isinstance(microbatch, bool) or not isinstance(microbatch, numbers.Integral) or microbatch < 1:
            raise ValueError(f'PrivateGradValues: microbatch must be a positive int, got {microbatch!r}')
        batch_axis = tuple(batch_axis)
        if all(a is None for a in batch_axis):
            raise ValueError('PrivateGradValues: batch_axis must batch at least one argument (all entries are None)')
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
            x: an array whose first axis is the batch, N a multiple of `microbatch`.

        Returns:
            The array of shape (N / microbatch, microbatch, ...).
        """
        return self._split(x, 0)

    def _split(self, x: JaxArray, axis: int) -> JaxArray:
        shape = jn.shape(x)
        if not shape:
            raise ValueError('PrivateGradValues: a batched argument is a scalar; it needs a batch axis')
        axis %= len(shape)
        if shape[axis] % self.microbatch:
            raise ValueError(f'PrivateGradValues: the batch size {shape[axis]} is not divisible by '
                             f'microbatch={self.microbatch}')
        return jn.reshape(x, shape[:axis] + (shape[axis] // self.microbatch, self.microbatch) + shape[axis + 1:])

    def _clipped_grad(self, *args) -> Tuple[List[JaxArray], List[JaxArray]]:
        grads, outputs = self.gv(*args)
        scale = 1 / jn.maximum(_global_norm(grads) / self.l2_norm_clip, 1)
        return [g * scale for g in grads], outputs

    def _weighted_loss(self, scales: JaxArray, *args) -> list:
        outputs = self._per_microbatch(*args)
        return [jn.mean(outputs[0] * scales)] + [jn.mean(o, axis=0) for o in outputs]

    def _clip_scales(self, num_microbatches: int, args) -> JaxArray:
        """Clipping factor of each microbatch, computed one microbatch at a time (jax.lax.map). Variables are left
        as they were, so the next pass sees the same state and draws the same per-microbatch random keys."""
        pure = _state.Pure(self.gv, self.vc)
        before = pure.values()
        random = [i for i, v in enumerate(pure.variables) if isinstance(v, RandomState)]
        keys = [pure.variables[i].split(num_microbatches) for i in random]  # the keys Vectorize gives the microbatches
        batched = [i for i, a in enumerate(self.batch_axis) if a is not None]
        mapped = [jn.moveaxis(args[i], self.batch_axis[i] % jn.ndim(args[i]), 0) for i in batched]

        def scale_of_one(xs):
            key_values, mapped_args = xs
            call_args, values = list(args), list(before)
            for i, x in zip(batched, mapped_args):
                call_args[i] = x
            for i, key in zip(random, key_values):
                values[i] = key
            (grads, _), _ = pure(values, *call_args)  # state changes made inside the traced body are dropped
            return 1 / jn.maximum(_global_norm(grads) / self.l2_norm_clip, 1)

        scales = jax.lax.map(scale_of_one, (keys, mapped))
        pure.write({i: before[i] for i in random})  # the random states as they were
        return scales

    def __call__(self, *args) -> Tuple[List[JaxArray], List[JaxArray]]:
        """Returns (noisy clipped gradients as a list aligned with vc's TrainVars, f's outputs as a list).

        Args:
            *args: the arguments of `f`, batched along their `batch_axis` (the same batch size N for all).

        Raises:
            ValueError: the number of arguments differs from len(batch_axis), an argument lacks its batch axis,
                the batch sizes differ or N is not a multiple of `microbatch`.
        """
        if len(args) != len(self.batch_axis):
            raise ValueError(f'PrivateGradValues: got {len(args)} arguments but batch_axis {self.batch_axis} '
                             f'describes {len(self.batch_axis)}')
        sizes = set()
        for i, (x, a) in enumerate(zip(args, self.batch_axis)):
            if a is not None:
                if not -jn.ndim(x) <= a < jn.ndim(x):
                    raise ValueError(f'PrivateGradValues: argument {i} has shape {jn.shape(x)}, which has no '
                                     f'batch axis {a} (batch_axis={self.batch_axis})')
                sizes.add(jn.shape(x)[a])
        if len(sizes) > 1:
            raise ValueError(f'PrivateGradValues: batched arguments disagree on the batch size: {sorted(sizes)}')
        args = tuple(x if a is None else self._split(x, a) for x, a in zip(args, self.batch_axis))
        num_microbatches = sizes.pop() // self.microbatch
        if self.use_norm_accumulation:
            scales = self._clip_scales(num_microbatches, args)
            grads, outputs = self._weighted(scales, *args)
            outputs = outputs[1:]
        else:
            grads, outputs = self._clipped(*args)
            grads = [g.mean(0) for g in grads]
            outputs = [o.mean(0) for o in outputs]
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
        out = _prefixed(self.vc, prefix)
        known = {id(v) for v in out.values()}
        keygen = self.keygen.vars(f'{prefix}.keygen')
        out.update((k, v) for k, v in keygen.items() if id(v) not in known)
        return out

    def __repr__(self):
        cls = type(self)
        return (f'{cls.__module__}.{cls.__qualname__}(f={_repr.module_or_function_repr(self.gv.__wrapped__)}, '
                f'noise_multiplier={self.noise_multiplier}, l2_norm_clip={self.l2_norm_clip}, '
                f'microbatch={self.microbatch}, batch_axis={self.batch_axis})')
