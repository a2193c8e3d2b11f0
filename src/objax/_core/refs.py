"""JAX array references that keep a variable's value while JAX's own transforms trace (used by frames.py,
variables.py and pure.py).

JAX's own transforms (jax.jit, grad, vmap, lax.scan, checkpoint...) know nothing of objax's frames. A variable
read or written while one of them traces, outside any frame that holds it, keeps its value in a JAX array
reference (`jax.new_ref`) from then on: a traced program reads and writes the reference, so it sees later
assignments and its writes persist, as eager code does. This file has what that needs: the current JAX trace,
making, reading and writing references with errors that name the variable, and the lock and counter under which
a storage becomes a reference.
"""

import gc
import sys
import threading

import jax
from jax.extend.core import find_top_trace as _find_top_trace
from jax.extend.core import set_current_trace as _set_current_trace

__all__ = ['Ref', 'Tracer', 'STORAGE_LOCK', 'REFS', 'TRACE', 'current_trace', 'set_current_trace', 'EVAL_TRACE',
           'at_top', 'jax_tracing', 'manual_axes', 'traced_use_error', 'check_ref_context', 'STATE_KIND', 'new_ref',
           'ref_get', 'ref_set', 'leaked_tracer_error', 'sole_holder']

Ref = jax.Ref
Tracer = jax.core.Tracer
# Held while values are taken out of variables for a donating call (objax._core.lending.Lending.lend) and while a
# variable's storage becomes a reference: each happens once, atomically, whatever other threads do.
STORAGE_LOCK = threading.Lock()
REFS = [0]  # how many times a variable's storage became (or became again) a reference, under STORAGE_LOCK


current_trace = _find_top_trace  # current_trace(()): the JAX trace this thread runs under now
set_current_trace = _set_current_trace  # context in which the given JAX trace is the current one

with jax.core.eval_context():
    EVAL_TRACE = current_trace(())  # JAX's evaluation trace: the current one when nothing is being traced


class _PublicTrace:
    """`.value`: the current JAX trace of this thread, through JAX's public function."""
    __slots__ = ()

    @property
    def value(self):
        return _find_top_trace(())


try:  # the per-thread holder that find_top_trace reads: one attribute read per check on the per-call path
    from jax._src.core import trace_state_strong_ref as _TRACE_HOLDER
except ImportError:  # another JAX layout: the public function
    _TRACE_HOLDER = None
# TRACE.value is current_trace(()) (tests/core/test_refs.py checks it under JAX's transforms).
TRACE = _TRACE_HOLDER if getattr(_TRACE_HOLDER, 'value', None) is EVAL_TRACE else _PublicTrace()


def at_top():
    """Context in which JAX operations run eagerly (concretely), even while a transformation traces."""
    return _set_current_trace(EVAL_TRACE)


def jax_tracing() -> bool:
    """True while a JAX transformation traces code on this thread."""
    return _find_top_trace(()) is not EVAL_TRACE


def manual_axes() -> tuple:
    return tuple(jax.sharding.get_abstract_mesh().manual_axes)


def traced_use_error(label: str, reason: str) -> ValueError:
    """The error for a use of variable `label` that cannot work inside the JAX transformation tracing it."""
    return ValueError(f'{label} {reason}. Nothing was changed. Inside objax.Jit, Grad, Vectorize or Parallel a '
                      f'variable of their collection can be used freely; in JAX\'s own transforms, pass the value '
                      f'as an argument and return the new one instead.')


def check_ref_context(label: str, manual: tuple = ()) -> None:
    """Raises unless the current trace can use an array reference made where the shard_map mesh axes were
    `manual`: a jax.shard_map or jax.pmap body cannot use a reference made outside it."""
    if manual_axes() != manual:
        raise traced_use_error(label, f'cannot be used inside jax.shard_map or jax.pmap (manual mesh axes '
                                      f'{manual_axes()}) since JAX cannot close over array references there: use '
                                      f'objax.Parallel, which passes the variables in and out')


STATE_KIND = 'no_grad_no_remat'  # jax.new_ref's kind for state: no gradient flows through it, and its reads and
# writes run once, in the forward computation, never again when jax.checkpoint recomputes a function


def new_ref(x, label: str):
    """A top-level JAX array reference holding `x` (a concrete array), made even while a transform traces."""
    check_ref_context(label)
    with _set_current_trace(EVAL_TRACE):
        return jax.new_ref(x, kind=STATE_KIND)


def ref_get(ref, label: str, manual: tuple = ()):
    """The value of `ref` (a tracer while a transform traces, else a new array holding a copy); `manual`: the
    shard_map mesh axes where the reference was made."""
    if _find_top_trace(()) is EVAL_TRACE:
        return ref[...]
    check_ref_context(label, manual)
    return ref[...]


def ref_set(ref, x, label: str, stop_gradient: bool = True, manual: tuple = ()) -> None:
    """Writes `x` into `ref`; errors name the variable. With `stop_gradient`, while a transform traces,
    gradients do not flow through the stored value (it is stored as `jax.lax.stop_gradient(x)`, as
    objax.GradValues stores state); a FrameRef, part of the traced computation, is written without it.
    `manual`: the shard_map mesh axes where the reference was made."""
    shape, dtype = getattr(x, 'shape', None), getattr(x, 'dtype', None)
    if shape != ref.shape or dtype != ref.dtype:
        raise traced_use_error(label, f'holds a JAX array reference of shape {tuple(ref.shape)} and dtype '
                                      f'{ref.dtype} (it was used inside a JAX transformation such as jax.jit, '
                                      f'whose programs read it), so a value of shape {tuple(shape)} and dtype '
                                      f'{dtype} cannot be stored in it')
    if _find_top_trace(()) is EVAL_TRACE:
        if isinstance(x, Tracer):
            raise leaked_tracer_error(label)
        if x.sharding != ref.sharding:  # e.g. replicated by objax.Parallel: the reference keeps its placement
            x = jax.device_put(x, ref.sharding)
        ref[...] = x
        return
    check_ref_context(label, manual)
    try:
        try:
            ref[...] = jax.lax.stop_gradient(x) if stop_gradient else x
        except Exception as e:
            if stop_gradient or 'differentiated' not in str(e):
                raise
            # A FrameRef made outside the differentiation that computed x: stored without gradient, as state.
            ref[...] = jax.lax.stop_gradient(x)
    except Exception as e:  # JAX raises a bare Exception for a batched value written under jax.vmap
        message = str(e)
        if 'vmapped' in message or 'batched' in message:
            reason = ('cannot store a value computed inside jax.vmap: a variable holds one value, not one per '
                      'example, and JAX refuses writes from a vmapped function to an outside reference. Use '
                      'objax.Vectorize, which merges the per-example values with the variable\'s reduce')
        else:
            reason = f'cannot store this value inside the current JAX transformation ({type(e).__name__}: {e})'
        raise traced_use_error(label, reason) from e


def leaked_tracer_error(label: str) -> ValueError:
    """The error for storing a JAX tracer in variable `label` while nothing is being traced."""
    return ValueError(f'Cannot store a JAX tracer in {label}: no JAX transformation is tracing now, so the value '
                      f'escaped the transformation that made it (e.g. saved by a jax.jit function to an outer '
                      f'Python name). Nothing was changed. Store values while the transformation traces, or '
                      f'return them and assign the concrete result.')


def _holders(box: list) -> int:
    return sys.getrefcount(box[0])


_ALONE = _holders([object()])  # count of an object referenced only by the box


def sole_holder(box: list) -> bool:
    """True when nothing but the list `box` (and garbage) references `box[0]`."""
    if _holders(box) <= _ALONE:
        return True
    gc.collect()
    return _holders(box) <= _ALONE

