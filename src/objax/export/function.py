"""objax.export.save and load: a module (or a function of its variables) as one file that JAX runs later, in a
process that does not have the model's Python code.

    objax.export.save('wrn.export', lambda x: model(x, training=False), model.vars(), np.zeros((1, 3, 32, 32)))
    served = objax.export.load('wrn.export')   # elsewhere: needs only objax.export, no model class
    logits = served(images)                     # any batch size

The function is exported with jax.export as a function of (values, *args), so that the variables are inputs of
the program and not constants folded into it; the file (see objax.export.container) holds the serialized program,
the values and a JSON manifest.
"""

import contextlib
import importlib.metadata
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.export
import numpy as np

from objax import __version__
from objax._core.introspect import variable_namer
from objax._core.pure import Pure
from objax._core.reprs import function_repr
from objax._core.variables import storage_groups
from objax.export.container import Contents, read_container, write_container
from objax.io._match import UnreadableFileError, check_vc, describe
from objax.varcollection import VarCollection

__all__ = ['PLATFORMS', 'ExportedFunction', 'save', 'load']

PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
BATCH = 'b'  # the name of the symbolic leading axis


def _platforms(platforms: Optional[Union[str, Sequence[str]]]) -> Tuple[str, ...]:
    """The platforms to export for: the ones given, checked, or by default 'cpu' and the one JAX runs on here."""
    if platforms is None:
        current = jax.export.default_export_platform()
        return ('cpu',) if current == 'cpu' else ('cpu', current)
    platforms = (platforms,) if isinstance(platforms, str) else tuple(platforms)
    if not platforms or any(p not in PLATFORMS for p in platforms) or len(set(platforms)) != len(platforms):
        raise ValueError(f'objax.export.save(platforms): expected distinct names among {", ".join(PLATFORMS)}, '
                         f'got {platforms!r}')
    return platforms


def _leaf_spec(x: Any, where: str) -> jax.ShapeDtypeStruct:
    """The shape and dtype (as JAX computes with it: int64 is int32 without x64) of one example argument leaf."""
    if not (hasattr(x, 'shape') and hasattr(x, 'dtype')):
        x = np.asarray(x)
    dtype = np.dtype(x.dtype)
    if dtype.kind not in 'biufcV':
        raise TypeError(f'objax.export.save: example argument {where} has dtype {dtype}; expected numeric arrays')
    return jax.ShapeDtypeStruct(tuple(x.shape), jax.dtypes.canonicalize_dtype(dtype))


def _arg_specs(example_args: tuple, polymorphic_batch: bool) -> tuple:
    """The input specifications of the arguments: with polymorphic_batch, the leading axis of every leaf of at
    least one axis is the symbolic batch size 'b' (shared, so all must agree on it)."""
    with_paths, tree = jax.tree_util.tree_flatten_with_path(example_args)
    specs = [_leaf_spec(x, f'args{jax.tree_util.keystr(path)}') for path, x in with_paths]
    if polymorphic_batch:
        sizes = {s.shape[0] for s in specs if s.shape}
        if len(sizes) > 1:
            raise ValueError(f'objax.export.save(polymorphic_batch=True): the leading axis of every argument becomes '
                             f'the same symbolic batch size {BATCH!r}, but the example arguments have leading sizes '
                             f'{sorted(sizes)}; pass polymorphic_batch=False to export for the example shapes only')
        batch, = jax.export.symbolic_shape(BATCH)
        specs = [jax.ShapeDtypeStruct((batch,) + s.shape[1:], s.dtype) if s.shape else s for s in specs]
    return jax.tree_util.tree_unflatten(tree, specs)


def _shape_json(shape) -> list:
    return [str(d) if jax.export.is_symbolic_dim(d) else int(d) for d in shape]


def _signature_json(tree, avals) -> dict:
    return {'tree': str(tree), 'leaves': [{'shape': _shape_json(a.shape), 'dtype': str(np.dtype(a.dtype))}
                                          for a in avals]}


def _versions(exported: jax.export.Exported) -> dict:
    try:
        jaxlib = importlib.metadata.version('jaxlib')
    except importlib.metadata.PackageNotFoundError:
        jaxlib = None
    return {'objax': __version__, 'jax': jax.__version__, 'jaxlib': jaxlib,
            'calling_convention': exported.calling_convention_version}


def _export(program: Callable, value_specs: list, arg_specs: tuple, platforms: Tuple[str, ...],
            polymorphic_batch: bool, example_args: tuple) -> jax.export.Exported:
    """jax.export of program(values, *args); a failure that only the symbolic batch causes says so."""
    try:
        return jax.export.export(jax.jit(program), platforms=platforms)(value_specs, *arg_specs)
    except Exception as e:
        if not polymorphic_batch:
            raise
        try:
            _export(program, value_specs, _arg_specs(example_args, False), platforms, False, example_args)
        except Exception:  # noqa: BLE001 - it fails without the symbolic batch too: the first error is the one
            raise e from None
        raise ValueError(f'objax.export.save: the function cannot be exported with a symbolic batch size '
                         f'{BATCH!r} (the leading axis of every argument), although it exports for the example '
                         f'shapes; make it independent of the batch size, or pass polymorphic_batch=False to '
                         f'export for the example shapes only. JAX says: {type(e).__name__}: {e}') from e


def save(path, fn: Callable, vc: VarCollection, *example_args, polymorphic_batch: bool = True,
         platforms: Optional[Union[str, Sequence[str]]] = None):
    """Exports `fn` with jax.export and writes it, with the values of `vc`, as one file (replaced atomically).

    `fn` is traced as a pure function of the values of `vc` and of its arguments (objax's Pure): the variables are
    inputs of the exported program, stored in the file, not constants folded into it. Changes `fn` makes to
    variables (running statistics in training mode, random keys) are not part of the program: export a function
    in inference mode, e.g. `lambda x: model(x, training=False)`.

    Args:
        path: the file to write (str or path-like), e.g. 'model.export'; its directory must exist.
        fn: a module or function of positional array arguments (pytrees of arrays allowed) returning a pytree of
            arrays (tuples, lists, dicts); keyword arguments are fixed with a lambda.
        vc: the variables `fn` uses (e.g. model.vars()); a variable it reads outside `vc` is frozen into the
            program with a warning, and writing one raises objax.VariableOutsideCollectionError.
        *example_args: arrays (or pytrees of arrays) of the shapes and dtypes `fn` is called with; only their
            shapes and dtypes are used.
        polymorphic_batch: the leading axis of every argument of at least one axis is a symbolic size 'b' (the
            same for all arguments), so the loaded program runs on any batch size; False exports for the example
            shapes only.
        platforms: the platforms the program can run on, among 'cpu', 'cuda', 'rocm' and 'tpu'; by default 'cpu'
            and the platform JAX runs on here.

    Raises:
        TypeError: `vc` is not a VarCollection, or an example argument is not a numeric array.
        ValueError: bad `platforms`; example arguments of different leading sizes with `polymorphic_batch`; `fn`
            exports only with static shapes (the message says to pass polymorphic_batch=False); a variable's dtype
            cannot be stored; an output is not a tuple, list, dict or array.
        OSError: the file cannot be written (an existing file is left as it was).
    """
    check_vc(vc, 'objax.export.save')
    if not callable(fn):
        raise TypeError(f'objax.export.save(fn): expected a module or function, got {type(fn).__name__}')
    platforms = _platforms(platforms)
    arg_specs = _arg_specs(example_args, polymorphic_batch)
    pure = Pure(fn, vc, f'objax.export.save({function_repr(fn)})', variable_namer(fn, vc))
    first_name = {id(target): names[0] for target, names in storage_groups(vc.items())}
    names = [first_name[id(v)] for v in pure.variables]
    values = [np.asarray(jax.device_get(x)) for x in pure.values()]
    value_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in values]

    def program(values, *args):
        return pure(values, *args)[0]

    exported = _export(program, value_specs, arg_specs, platforms, polymorphic_batch, example_args)
    try:
        serialized = bytes(exported.serialize())
    except Exception as e:  # an output pytree of a type jax.export cannot serialize
        raise ValueError(f'objax.export.save: the program of {function_repr(fn)} cannot be serialized '
                         f'({type(e).__name__}: {e}); return arrays in tuples, lists or dicts') from e
    arg_tree = jax.tree_util.tree_structure(arg_specs)
    manifest = {
        'function': function_repr(fn),
        'polymorphic_batch': bool(polymorphic_batch),
        'platforms': list(exported.platforms),
        'inputs': _signature_json(arg_tree, jax.tree_util.tree_leaves(arg_specs)),
        'outputs': _signature_json(exported.out_tree, exported.out_avals),
        'variables': [{'name': n, 'kind': type(v).__name__, 'shape': list(x.shape), 'dtype': str(x.dtype)}
                      for n, v, x in zip(names, pure.variables, values)],
        'versions': _versions(exported),
    }
    write_container(path, manifest, serialized, names, values)


class ExportedFunction:
    """A program read by objax.export.load: calling it runs the exported function with the stored variables.

    Attributes:
        path: the file it was read from.
        names: the name of each variable, as in vars() when it was saved.
        values: the value of each variable (jax arrays, in the order of `names`).
        input_signature: a tuple with one pytree of jax.ShapeDtypeStruct per argument; a symbolic leading size
            'b' stands for any batch size.
        in_avals: the flat list of those shapes and dtypes.
        output_signature: the pytree of jax.ShapeDtypeStruct of the outputs.
        platforms: the platforms it was exported for.
        manifest: the file's JSON manifest (function, versions of objax and JAX, variables...), a dict.
        exported: the jax.export.Exported program, a function of (values, *args).
    """

    def __init__(self, path, contents: Contents, exported: jax.export.Exported):
        """Checks that the program, the manifest and the stored values agree, and places the values on a device.

        Args:
            path: the file, for messages.
            contents: what the file holds (objax.export.container.read_container).
            exported: its deserialized program.

        Raises:
            UnreadableFileError: the parts of the file disagree.
            ValueError: the program was exported for none of the platforms this process can run it on.
        """
        source = describe(path)
        self.path, self.manifest, self.exported = path, contents.manifest, exported
        specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exported.in_avals]
        args, kwargs = jax.tree_util.tree_unflatten(exported.in_tree, specs)
        if kwargs or not args or not isinstance(args[0], list):
            raise UnreadableFileError(f'{source}: its program is not a function of (values, *args)')
        value_specs, self.input_signature = args[0], tuple(args[1:])
        self.in_avals = jax.tree_util.tree_leaves(self.input_signature)
        self.output_signature = jax.tree_util.tree_unflatten(
            exported.out_tree, [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in exported.out_avals])
        self.names = [str(v.get('name')) for v in self.manifest.get('variables', [])]
        if sorted(self.names) != sorted(contents.tensors) or len(self.names) != len(value_specs):
            raise UnreadableFileError(f'{source}: the variables of its manifest ({len(self.names)}), of its '
                                      f'safetensors member ({len(contents.tensors)}) and of its program '
                                      f'({len(value_specs)}) differ')
        for name, spec in zip(self.names, value_specs):
            x = contents.tensors[name]
            if x.shape != spec.shape or np.dtype(x.dtype) != np.dtype(spec.dtype):
                raise UnreadableFileError(f'{source}: variable {name!r} is stored as {x.dtype}{list(x.shape)} but '
                                          f'the program takes {np.dtype(spec.dtype)}{list(spec.shape)}')
        self.platforms = tuple(exported.platforms)
        current = jax.export.default_export_platform()
        if current in self.platforms:
            self._device = None
        elif 'cpu' in self.platforms:
            self._device = jax.devices('cpu')[0]
        else:
            raise ValueError(f'{source} was exported for {", ".join(self.platforms)}; JAX runs on {current} here '
                             f'and has no CPU device: save it again with platforms=({current!r},)')
        self.values = [jax.device_put(contents.tensors[n], self._device) for n in self.names]
        self._call = jax.jit(exported.call)

    def vars(self) -> Dict[str, jax.Array]:
        """The stored variables.

        Returns:
            {name: value}, in the order of `names`.
        """
        return dict(zip(self.names, self.values))

    def __call__(self, *args):
        """Runs the program on `args` with the stored variables (compiled once per distinct input shapes).

        Args:
            *args: one array (or pytree of arrays) per entry of `input_signature`, of those dtypes and shapes; the
                symbolic size 'b' may be any size, the same for every argument.

        Returns:
            The outputs, in the pytree the exported function returned.

        Raises:
            TypeError: the number of arguments differs from the signature.
            ValueError: a shape or dtype does not match the signature.
            RuntimeError: the program was written by a newer JAX whose StableHLO this JAX cannot read.
        """
        self._check(args)
        place = contextlib.nullcontext() if self._device is None else jax.default_device(self._device)
        try:
            with place:
                return self._call(self.values, *args)
        except Exception as e:
            written = self.manifest.get('versions', {}).get('jax')
            if written == jax.__version__ or 'deserialize' not in str(e):
                raise
            raise RuntimeError(f'{describe(self.path)} was written by JAX {written}, whose program JAX '
                               f'{jax.__version__} cannot compile (a newer StableHLO than it reads): run it with JAX '
                               f'{written} or newer, or save it again with this JAX. JAX says: {e}') from e

    def _check(self, args: tuple):
        """Raises a clear error naming the argument whose structure, dtype or shape differs from the signature."""
        if len(args) != len(self.input_signature):
            raise TypeError(f'{self!r} takes {len(self.input_signature)} argument(s), got {len(args)}')
        batch = {}
        for i, (arg, signature) in enumerate(zip(args, self.input_signature)):
            leaves, tree = jax.tree_util.tree_flatten_with_path(arg)
            expected = jax.tree_util.tree_structure(signature)
            if tree != expected:
                raise TypeError(f'{self!r}: argument {i} is a {tree}, expected a {expected}')
            for (path, x), spec in zip(leaves, jax.tree_util.tree_leaves(signature)):
                where = f'argument {i}{jax.tree_util.keystr(path)}'
                shape, dtype = np.shape(x), jax.dtypes.canonicalize_dtype(getattr(x, 'dtype', np.result_type(x)))
                if dtype != np.dtype(spec.dtype):
                    raise ValueError(f'{self!r}: {where} has dtype {dtype}, expected {np.dtype(spec.dtype)}')
                if len(shape) != len(spec.shape) or any(
                        not jax.export.is_symbolic_dim(d) and d != n for d, n in zip(spec.shape, shape)):
                    raise ValueError(f'{self!r}: {where} has shape {tuple(shape)}, expected '
                                     f'({", ".join(map(str, spec.shape))})')
                for d, n in zip(spec.shape, shape):
                    if jax.export.is_symbolic_dim(d) and batch.setdefault(str(d), (n, where))[0] != n:
                        raise ValueError(f'{self!r}: {where} has size {n} for {str(d)!r} but '
                                         f'{batch[str(d)][1]} has {batch[str(d)][0]}; they must be equal')

    def __repr__(self):
        def show(s):
            return f'{np.dtype(s.dtype)}[{", ".join(map(str, s.shape))}]'
        inputs = ', '.join(str(jax.tree_util.tree_map(show, a)) for a in self.input_signature)
        return f'objax.export.ExportedFunction({describe(self.path)}, inputs=({inputs}), platforms={self.platforms})'


def load(path) -> ExportedFunction:
    """Reads a file written by objax.export.save; needs neither the model's code nor its classes.

    Args:
        path: the file (str or path-like).

    Returns:
        An ExportedFunction: call it like the saved function; it also gives the variable names (`names`), their
        values (`values`, `vars()`) and the input signature (`input_signature`, `in_avals`).

    Raises:
        FileNotFoundError: `path` does not exist.
        UnreadableFileError: (a ValueError) the file is truncated, corrupted, of another format or written by a
            newer objax, or the installed JAX cannot read its program; the message names the file.
        ValueError: the program was exported for none of the platforms this process can run.
    """
    contents = read_container(path)
    try:
        exported = jax.export.deserialize(bytearray(contents.program))
    except Exception as e:  # a damaged program that passed the CRC check, or a JAX too old for it
        written = contents.manifest.get('versions', {}).get('jax', 'an unknown version')
        raise UnreadableFileError(f'{describe(path)}: JAX {jax.__version__} cannot read its program (written by JAX '
                                  f'{written}): {type(e).__name__}: {e}') from None
    return ExportedFunction(path, contents, exported)
