"""Which results of a per-device program are provably the same on every device of a mapped axis.

Used by Parallel to return such results once instead of gathering one copy per device: a value is the same
everywhere when it only depends on replicated inputs and on reductions over the whole axis (psum, pmean,
pmax, pmin, all_gather). The answer is conservative: anything not proven the same is treated as varying.
"""

from typing import List, Sequence

from jax.extend import core as jex

__all__ = ['varying_outputs']

# Collectives whose result is identical on all devices of the axes they reduce over.
_SAME_EVERYWHERE = {'psum', 'pmax', 'pmin', 'all_gather', 'psum_invariant', 'all_gather_invariant'}
# Primitives whose result may differ per device although they take no axis name.
_DEVICE_DEPENDENT = {'io_callback', 'rng_uniform'}
# Call-like primitives: one sub-program taking exactly the equation's inputs, analysed precisely.
_CALLS = {'jit', 'pjit', 'closed_call', 'core_call', 'custom_jvp_call', 'custom_vjp_call', 'checkpoint',
          'remat'}


def _named_axes(params) -> tuple:
    """The mapped-axis names an equation works over (collectives: `axes`/`axis_name`). Integer entries are
    array dimensions (e.g. reduce_sum's `axes=(0,)`), not mapped axes, and are left out."""
    for key in ('axes', 'axis_name'):
        if key in params:
            value = params[key]
            value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
            return tuple(a for a in value if not isinstance(a, int))
    return ()


def _device_dependent(eqn, axis: str) -> bool:
    """True when the equation (or anything inside it) may give different results on different devices
    of `axis` from identical inputs (axis_index, ppermute, all_to_all... over `axis`, host callbacks)."""
    name = eqn.primitive.name
    if name in _DEVICE_DEPENDENT:
        return True
    if axis in _named_axes(eqn.params) and name not in _SAME_EVERYWHERE:
        return True
    return any(_device_dependent(inner, axis) for sub in jex.jaxprs_in_params(eqn.params) for inner in sub.eqns)


def _reduces_whole_axis(eqn, axis: str) -> bool:
    return (eqn.primitive.name in _SAME_EVERYWHERE and axis in _named_axes(eqn.params)
            and eqn.params.get('axis_index_groups') is None)


def varying_outputs(jaxpr: jex.Jaxpr, inputs_vary: Sequence[bool], axis: str) -> List[bool]:
    """For each output of `jaxpr`: False when it is provably equal on all devices of `axis`, given which
    inputs differ per device (`inputs_vary`); constants are the same everywhere."""
    vary = {v: bool(b) for v, b in zip(jaxpr.invars, inputs_vary)}

    def read(atom) -> bool:
        return False if isinstance(atom, jex.Literal) else vary.get(atom, False)

    for eqn in jaxpr.eqns:
        ins = [read(a) for a in eqn.invars]
        subs = list(jex.jaxprs_in_params(eqn.params))
        if _reduces_whole_axis(eqn, axis):
            outs = [False] * len(eqn.outvars)
        elif (eqn.primitive.name in _CALLS and len(subs) >= 1 and len(subs[0].invars) == len(ins)
              and len(subs[0].outvars) == len(eqn.outvars)):
            outs = varying_outputs(subs[0], ins, axis)
            if any(_device_dependent(inner, axis) for sub in subs[1:] for inner in sub.eqns):
                outs = [True] * len(eqn.outvars)
        elif _device_dependent(eqn, axis):
            outs = [True] * len(eqn.outvars)
        else:
            outs = [any(ins)] * len(eqn.outvars)
        for v, b in zip(eqn.outvars, outs):
            vary[v] = b
    return [read(v) for v in jaxpr.outvars]
