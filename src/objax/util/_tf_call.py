"""Runs JAX functions from TensorFlow: exported with jax.export, serialized at a StableHLO version the installed
TensorFlow reads, and called through TensorFlow's XlaCallModule op (with gradients through tf.custom_gradient)."""

import functools
import importlib
import importlib.metadata
import inspect
import re
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.export
import numpy as np

__all__ = ['VersionMismatchError', 'Versions', 'parse_version', 'select_version', 'check_calling_convention',
           'installed_versions', 'export', 'serialize', 'call_exported', 'call']


class VersionMismatchError(RuntimeError):
    """The installed TensorFlow cannot run what the installed JAX writes (StableHLO or calling convention)."""


class Versions(NamedTuple):
    """What the installed JAX writes and what the installed TensorFlow reads."""
    jax_name: str  # e.g. 'JAX 0.12.1 (jaxlib 0.12.1)'
    jax_current: str  # the newest StableHLO version JAX can write
    jax_minimum: str  # the oldest StableHLO version JAX can write
    tf_name: str  # e.g. 'TensorFlow 2.21.0'
    tf_current: Optional[str]  # the newest StableHLO version TensorFlow reads (None: TensorFlow does not say)
    tf_minimum: Optional[str]  # the oldest StableHLO version TensorFlow reads
    tf_calling_convention: int  # the newest XlaCallModule calling convention version TensorFlow runs


def parse_version(version: str) -> Tuple[int, ...]:
    """The numbers of a dotted version, so that versions compare numerically ('1.9.0' < '1.13.7').

    Args:
        version: a version such as '1.13.7'.

    Returns:
        The tuple of its numbers, such as (1, 13, 7).

    Raises:
        ValueError: `version` contains no number.
    """
    numbers = re.findall(r'\d+', str(version))
    if not numbers:
        raise ValueError(f'Not a version number: {version!r}')
    return tuple(int(n) for n in numbers)


def select_version(jax_current: str, jax_minimum: str, tf_current: str, tf_minimum: str,
                   jax_name: str = 'JAX', tf_name: str = 'TensorFlow') -> str:
    """The StableHLO version to serialize at: the newest one both JAX writes and TensorFlow reads.

    Args:
        jax_current: the newest StableHLO version JAX writes.
        jax_minimum: the oldest StableHLO version JAX writes.
        tf_current: the newest StableHLO version TensorFlow reads.
        tf_minimum: the oldest StableHLO version TensorFlow reads.
        jax_name: JAX as named in the error message, with its version.
        tf_name: TensorFlow as named in the error message, with its version.

    Returns:
        The lower of `jax_current` and `tf_current`.

    Raises:
        VersionMismatchError: no version is both written by JAX and read by TensorFlow.
    """
    target = min(jax_current, tf_current, key=parse_version)
    if parse_version(target) >= max(parse_version(jax_minimum), parse_version(tf_minimum)):
        return target
    if parse_version(tf_current) < parse_version(jax_minimum):
        advice = (f'install a TensorFlow that reads StableHLO {jax_minimum} or newer, or a JAX (and jaxlib) that '
                  f'still writes StableHLO {tf_current}')
    else:
        advice = (f'install a JAX (and jaxlib) that writes StableHLO {tf_minimum} or newer, or a TensorFlow that '
                  f'still reads StableHLO {jax_current}')
    raise VersionMismatchError(f'Objax2Tf: {jax_name} writes StableHLO {jax_minimum} to {jax_current} but '
                               f'{tf_name} reads StableHLO {tf_minimum} to {tf_current}: no version in common, so '
                               f'TensorFlow cannot run the exported module; {advice}.')


def check_calling_convention(version: int, tf_maximum: int, jax_name: str = 'JAX',
                             tf_name: str = 'TensorFlow'):
    """Checks that TensorFlow's XlaCallModule op runs modules exported with this calling convention version.

    Args:
        version: the calling convention version of the exported module.
        tf_maximum: the newest version TensorFlow's XlaCallModule op runs.
        jax_name: JAX as named in the error message, with its version.
        tf_name: TensorFlow as named in the error message, with its version.

    Raises:
        VersionMismatchError: `version` is newer than `tf_maximum`.
    """
    if version > tf_maximum:
        raise VersionMismatchError(
            f'Objax2Tf: {jax_name} exports with calling convention version {version} (and supports versions '
            f'{jax.export.minimum_supported_calling_convention_version} to '
            f'{jax.export.maximum_supported_calling_convention_version}) but the XlaCallModule op of {tf_name} runs '
            f'versions up to {tf_maximum}; install a newer TensorFlow, or a JAX that exports version {tf_maximum}.')


@functools.lru_cache(maxsize=None)
def installed_versions() -> Versions:
    """The StableHLO and calling convention versions of the installed JAX and TensorFlow.

    Returns:
        A Versions; its TensorFlow StableHLO fields are None when TensorFlow does not report them.
    """
    from jax.extend.mlir.dialects import stablehlo as jax_stablehlo
    tf = importlib.import_module('tensorflow')
    tfxla = importlib.import_module('tensorflow.compiler.tf2xla.python.xla')
    try:
        tf_stablehlo = importlib.import_module('tensorflow.compiler.mlir.stablehlo.stablehlo')
        tf_current, tf_minimum = tf_stablehlo.get_current_version(), tf_stablehlo.get_minimum_version()
    except (ImportError, AttributeError):
        tf_current = tf_minimum = None
    try:
        jaxlib_version = importlib.metadata.version('jaxlib')
    except importlib.metadata.PackageNotFoundError:
        jaxlib_version = None
    jax_name = f'JAX {jax.__version__}' + (f' (jaxlib {jaxlib_version})' if jaxlib_version else '')
    return Versions(jax_name=jax_name, jax_current=jax_stablehlo.get_current_version(),
                    jax_minimum=jax_stablehlo.get_minimum_version(), tf_name=f'TensorFlow {tf.__version__}',
                    tf_current=tf_current, tf_minimum=tf_minimum,
                    tf_calling_convention=tfxla.call_module_maximum_supported_version())


def export(fn: Callable, specs: Sequence[jax.ShapeDtypeStruct],
           platforms: Optional[Sequence[str]] = None) -> jax.export.Exported:
    """Exports `fn` for inputs of the given (possibly symbolic) shapes and dtypes.

    Args:
        fn: a JAX function of positional arrays.
        specs: the shape and dtype of each input; symbolic dimensions come from jax.export.symbolic_shape.
        platforms: the platforms to lower for ('cpu', 'cuda', 'rocm', 'tpu'); None for JAX's default one.

    Returns:
        The jax.export.Exported of `fn`.
    """
    return jax.export.export(jax.jit(fn), platforms=platforms)(*specs)


def serialize(exported: jax.export.Exported, versions: Versions) -> Tuple[bytes, Optional[str]]:
    """The module of `exported` as a portable artifact at the StableHLO version that select_version picks.

    Args:
        exported: the exported function.
        versions: the installed versions (installed_versions()).

    Returns:
        (serialized module, StableHLO version it targets); when TensorFlow does not report its StableHLO versions,
        JAX's own serialization and None.

    Raises:
        VersionMismatchError: no StableHLO version suits both, or the module cannot be written at that version.
    """
    if versions.tf_current is None:
        return exported.mlir_module_serialized, None
    target = select_version(versions.jax_current, versions.jax_minimum, versions.tf_current, versions.tf_minimum,
                            versions.jax_name, versions.tf_name)
    from jax.extend import mlir
    try:
        return mlir.serialize_portable_artifact(exported.mlir_module(), target), target
    except RuntimeError as e:
        raise VersionMismatchError(f'Objax2Tf: {versions.jax_name} (StableHLO {versions.jax_minimum} to '
                                   f'{versions.jax_current}) cannot write the module at StableHLO {target}, the '
                                   f'newest version {versions.tf_name} (StableHLO {versions.tf_minimum} to '
                                   f'{versions.tf_current}) reads: {e}; install a newer TensorFlow.') from e


@functools.lru_cache(maxsize=None)
def _call_module_parameters() -> frozenset:
    tfxla = importlib.import_module('tensorflow.compiler.tf2xla.python.xla')
    return frozenset(inspect.signature(tfxla.call_module).parameters)


def call_exported(exported: jax.export.Exported, inputs: Sequence, versions: Versions) -> List:
    """Runs `exported` on TensorFlow tensors with TensorFlow's XlaCallModule op.

    Args:
        exported: the exported function.
        inputs: one tf.Tensor per input of `exported` (flattened), of its dtype.
        versions: the installed versions (installed_versions()).

    Returns:
        The flat list of output tf.Tensors; their unknown sizes are the symbolic dimensions of the outputs.

    Raises:
        VersionMismatchError: the installed TensorFlow cannot run the module.
    """
    tf = importlib.import_module('tensorflow')
    tfxla = importlib.import_module('tensorflow.compiler.tf2xla.python.xla')
    version = exported.calling_convention_version
    check_calling_convention(version, versions.tf_calling_convention, versions.jax_name, versions.tf_name)
    module, _ = serialize(exported, versions)
    attrs = dict(version=version, module=module,
                 Tout=[tf.as_dtype(a.dtype) for a in exported.out_avals],
                 Sout=[tuple(None if jax.export.is_symbolic_dim(d) else d for d in a.shape)
                       for a in exported.out_avals],
                 platforms=[p.upper() for p in exported.platforms], function_list=[], has_token_input_output=False,
                 disabled_checks=[str(c) for c in exported.disabled_safety_checks])
    if version >= 10 and 'use_shardy_partitioner' in _call_module_parameters():
        attrs['use_shardy_partitioner'] = True
    outputs = tfxla.call_module([inputs[i] for i in exported.module_kept_var_idx], **attrs)
    return list(outputs)


def _inexact(dtype) -> bool:
    return np.issubdtype(dtype, np.inexact)


def _vjp_function(fn: Callable, exported: jax.export.Exported) -> Tuple[Callable, List[int], List[int]]:
    """(vjp, differentiable inputs, differentiable outputs): vjp(*inputs, *output_cotangents) gives the cotangents of
    the inexact inputs of `fn`, from those of its inexact outputs (integer ones have no gradient)."""
    ins = [i for i, a in enumerate(exported.in_avals) if _inexact(a.dtype)]
    outs = [j for j, a in enumerate(exported.out_avals) if _inexact(a.dtype)]
    n = len(exported.in_avals)

    def vjp(*xs):
        primals, cotangents = xs[:n], xs[n:]

        def differentiable(*ds):
            full = list(primals)
            for i, d in zip(ins, ds):
                full[i] = d
            leaves = jax.tree_util.tree_leaves(fn(*full))
            return [leaves[j] for j in outs]

        _, pullback = jax.vjp(differentiable, *[primals[i] for i in ins])
        return list(pullback(list(cotangents)))

    return vjp, ins, outs


def call(fn: Callable, inputs: Sequence, specs: Sequence[jax.ShapeDtypeStruct],
         platforms: Optional[Sequence[str]] = None):
    """Runs the JAX function `fn` on TensorFlow tensors, differentiable by tf.GradientTape.

    Args:
        fn: a JAX function of positional arrays returning a pytree of arrays.
        inputs: the tf.Tensors to call it with (cast to the dtypes JAX uses, e.g. int32 for int64 without x64).
        specs: the shape (possibly symbolic) and dtype of each input, as jax.ShapeDtypeStructs.
        platforms: the platforms to lower for ('cpu', 'cuda', 'rocm', 'tpu'); None for JAX's default one.

    Returns:
        The outputs of `fn`, as tf.Tensors in its output pytree.

    Raises:
        VersionMismatchError: the installed TensorFlow cannot run what the installed JAX writes.
    """
    tf = importlib.import_module('tensorflow')
    versions = installed_versions()
    specs = [jax.ShapeDtypeStruct(s.shape, jax.dtypes.canonicalize_dtype(s.dtype)) for s in specs]  # e.g. no x64
    exported = export(fn, specs, platforms)
    inputs = [x if x.dtype == tf.as_dtype(a.dtype) else tf.cast(x, tf.as_dtype(a.dtype))
              for x, a in zip(inputs, exported.in_avals)]

    @tf.custom_gradient
    def forward(*xs):
        outputs = call_exported(exported, xs, versions)

        def backward(*cotangents):
            vjp, ins, outs = _vjp_function(fn, exported)
            out_specs = [jax.ShapeDtypeStruct(exported.out_avals[j].shape, exported.out_avals[j].dtype)
                         for j in outs]
            in_specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exported.in_avals]
            vjp_exported = export(vjp, in_specs + out_specs, exported.platforms)
            given = [tf.zeros_like(outputs[j]) if cotangents[j] is None else cotangents[j] for j in outs]
            grads = call_exported(vjp_exported, list(xs) + given, versions)
            result = [None] * len(xs)
            for i, g in zip(ins, grads):
                result[i] = g
            return result

        return outputs, backward

    return jax.tree_util.tree_unflatten(exported.out_tree, forward(*inputs))
