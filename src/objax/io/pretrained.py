"""Reading published weights (safetensors files in the layouts Hugging Face and timm write) into a model's variables,
all or nothing, optionally straight onto a mesh."""

import json
import os
import struct
from collections.abc import Mapping
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import jax
import jax.numpy as jn
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from objax._core.layout import canonical, changed
from objax._core.layout import place as place_on
from objax._core.variables import record_layout, storage_groups
from objax.io._match import ShapeMismatchError, UnreadableFileError, assign_all, open_for_reading, place_like_current
from objax.io.safetensors import DTYPES
from objax.sharding import apply_rules, get_spec, set_spec
from objax.varcollection import VarCollection
from objax.variable import BaseVar, TrainRef

__all__ = ['SafetensorsReader', 'read_tensors', 'load_tensors']

PathLike = Union[str, os.PathLike]
Transform = Callable[[np.ndarray], np.ndarray]
Target = Union[BaseVar, Tuple[BaseVar, Transform]]
_SINGLE, _INDEX = 'model.safetensors', 'model.safetensors.index.json'
_HEADER_LIMIT = 100 << 20  # safetensors' own limit on the JSON header


class _Entry:
    """Where one tensor of a safetensors file lies: file, dtype, shape, byte range."""

    def __init__(self, path: str, dtype: np.dtype, shape: Tuple[int, ...], begin: int, end: int):
        self.path, self.dtype, self.shape, self.begin, self.end = path, dtype, shape, begin, end


def _parse_header(path: str) -> Dict[str, _Entry]:
    """The tensors of one safetensors file, from its header only (the data is not read)."""
    source = repr(path)
    with open_for_reading(path, source) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise UnreadableFileError(f'{source} is not a safetensors file (shorter than its 8-byte header size)')
        n = struct.unpack('<Q', head)[0]
        if n > min(_HEADER_LIMIT, size - 8):
            raise UnreadableFileError(f'{source} is not a safetensors file (header of {n} bytes in a file of {size})')
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise UnreadableFileError(f'{source} is not a safetensors file (its header is not JSON: {e})') from None
    if not isinstance(header, dict):
        raise UnreadableFileError(f'{source} is not a safetensors file (its header is not a JSON object)')
    entries, start = {}, 8 + n
    for name, info in header.items():
        if name == '__metadata__':
            continue
        try:
            dtype, shape, (begin, end) = info['dtype'], tuple(int(d) for d in info['shape']), info['data_offsets']
        except (KeyError, TypeError, ValueError):
            raise UnreadableFileError(f'{source}: tensor {name!r} has a malformed header entry {info!r}') from None
        if dtype not in DTYPES:
            raise UnreadableFileError(f'{source}: tensor {name!r} has unsupported dtype {dtype}')
        np_dtype = np.dtype(DTYPES[dtype])
        if end - begin != int(np.prod(shape)) * np_dtype.itemsize or begin < 0 or start + end > size:
            raise UnreadableFileError(f'{source}: tensor {name!r} ({dtype} {list(shape)}) does not fit its byte '
                                      f'range [{begin}, {end}) in a file of {size - start} data bytes (truncated?)')
        entries[name] = _Entry(path, np_dtype, shape, start + begin, start + end)
    return entries


class SafetensorsReader(Mapping):
    """The tensors of one or several safetensors files, read lazily: `reader[name]` reads one tensor from disk as a
    numpy array (bfloat16 and float8 through ml_dtypes); `shape(name)`, `dtype(name)` and `file(name)` read nothing.
    Made by `read_tensors`.

    Args:
        entries: tensor name -> where it lies in which file (read from the headers by `read_tensors`).
        source: the path that was opened, for messages.
    """

    def __init__(self, entries: Dict[str, _Entry], source: str):
        self._entries, self.source = entries, source

    def __getitem__(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        with open_for_reading(entry.path, repr(entry.path)) as f:
            f.seek(entry.begin)
            data = f.read(entry.end - entry.begin)
        if len(data) != entry.end - entry.begin:
            raise UnreadableFileError(f'{entry.path!r}: tensor {name!r} is truncated')
        return np.frombuffer(data, dtype=entry.dtype).reshape(entry.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, name: str) -> Tuple[int, ...]:
        """The shape of tensor `name`.

        Args:
            name: a tensor name.

        Returns:
            Its shape, read from the file header.
        """
        return self._entries[name].shape

    def dtype(self, name: str) -> np.dtype:
        """The numpy dtype of tensor `name`.

        Args:
            name: a tensor name.

        Returns:
            Its dtype, read from the file header.
        """
        return self._entries[name].dtype

    def file(self, name: str) -> str:
        """The path of the file holding tensor `name`.

        Args:
            name: a tensor name.

        Returns:
            The path.
        """
        return self._entries[name].path

    def __repr__(self):
        return f'{type(self).__name__}({self.source}, {len(self)} tensors)'


def _read_index(path: str) -> Dict[str, _Entry]:
    """The tensors of the shards listed by a Hugging Face `model.safetensors.index.json`."""
    source = repr(path)
    with open_for_reading(path, source) as f:
        try:
            weight_map = json.load(f)['weight_map']
        except (ValueError, KeyError, TypeError) as e:
            raise UnreadableFileError(f'{source} is not a safetensors index (no "weight_map": {e})') from None
    if not isinstance(weight_map, dict):
        raise UnreadableFileError(f'{source}: "weight_map" is not a JSON object')
    folder, shards, entries = os.path.dirname(path), {}, {}
    for name, shard in weight_map.items():
        if shard not in shards:
            shards[shard] = _parse_header(os.path.join(folder, shard))
        if name not in shards[shard]:
            raise UnreadableFileError(f'{source} places tensor {name!r} in {shard!r}, which does not hold it')
        entries[name] = shards[shard][name]
    for shard, held in shards.items():
        unlisted = sorted(set(held) - set(weight_map))
        if unlisted:
            raise UnreadableFileError(f'{shard!r} holds tensors that {source} does not list: {unlisted}')
    return entries


def read_tensors(path: PathLike) -> SafetensorsReader:
    """Opens published weights for lazy reading: nothing but the file headers is read until a tensor is asked for.

    Args:
        path: a safetensors file; a Hugging Face `model.safetensors.index.json` (its shards are read from the same
            folder); or a folder holding `model.safetensors` or `model.safetensors.index.json` (the layouts
            `save_pretrained` writes).

    Returns:
        A read-only mapping tensor name -> numpy array (see `SafetensorsReader`), in the order of the files.

    Raises:
        FileNotFoundError: the path does not exist, or the folder holds no safetensors weights.
        UnreadableFileError: (a ValueError) a file is not a safetensors file or an index, is truncated, holds an
            unsupported dtype, or an index disagrees with its shards.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in (_SINGLE, _INDEX):
            if os.path.isfile(os.path.join(path, name)):
                return read_tensors(os.path.join(path, name))
        others = sorted(n for n in os.listdir(path) if n.endswith(('.bin', '.pt', '.pth', '.h5', '.msgpack')))
        hint = f' (found {others}: convert them to safetensors first)' if others else ''
        raise FileNotFoundError(f'{path!r} holds neither {_SINGLE} nor {_INDEX}{hint}')
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path!r} does not exist')
    entries = _read_index(path) if path.endswith('.json') else _parse_header(path)
    return SafetensorsReader(entries, repr(path))


def _targets_of(value) -> List[Tuple[BaseVar, Optional[Transform]]]:
    """A target (variable, (variable, transform), or a sequence of them) as a list of (variable, transform)."""
    if isinstance(value, BaseVar):
        return [(value, None)]
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], BaseVar):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(not isinstance(v, BaseVar) for v in value):
        return [t for v in value for t in _targets_of(v)]
    raise TypeError(f'load_tensors(targets): expected a variable, a (variable, transform) pair or a list of them, '
                    f'got {value!r}')


def _shape_and_dtype(tensors, name: str) -> Tuple[Tuple[int, ...], np.dtype]:
    if isinstance(tensors, SafetensorsReader):
        return tensors.shape(name), tensors.dtype(name)
    value = tensors[name]
    return tuple(np.shape(value)), np.asarray(value).dtype


def _file(tensors, name: str, source: str) -> str:
    return repr(tensors.file(name)) if isinstance(tensors, SafetensorsReader) else source


def _transformed_shape(transform: Optional[Transform], shape: Tuple[int, ...], dtype: np.dtype):
    """The shape `transform` gives an array of `shape` (computed on a stand-in that takes no memory)."""
    if transform is None:
        return shape
    return tuple(np.shape(transform(np.broadcast_to(np.zeros((), dtype), shape))))


def _check_one(name: str, shape, dtype, var: BaseVar, transform, label: str, where: str) -> Tuple[str, bool]:
    """(the problem loading tensor `name` (shape, dtype) into `var` or '', whether it is one of shape)."""
    current = var.value
    want = tuple(np.shape(current))
    try:
        got = _transformed_shape(transform, shape, dtype)
    except Exception as e:  # the transform does not apply to this shape
        return f'{name!r} in {where}: shape {shape}, which its transform cannot take ({e}); {label} is {want}', True
    if got != want:
        after = '' if transform is None else f' ({got} after its transform)'
        return f'{name!r} in {where}: shape {shape}{after}, expected {want} for {label}', True
    if jn.issubdtype(dtype, jn.inexact) != jn.issubdtype(current.dtype, jn.inexact):
        return f'{name!r} in {where}: dtype {dtype}, {label} holds {current.dtype}', False
    return '', False


def _labels(vc: Optional[VarCollection]) -> Dict[int, str]:
    """id(stored variable) -> its first name in `vc`."""
    out = {}
    for name, var in (vc.items() if vc is not None else ()):
        out.setdefault(id(var._storage()), name)
    return out


def _mesh_shardings(variables: List[BaseVar], vc: VarCollection, mesh: Mesh, rules, labels) -> Dict[int, NamedSharding]:
    """id(variable) -> the sharding each of `variables` goes onto (after `rules`); raises ValueError naming the
    variables whose spec does not fit the mesh, with the specs left as they were."""
    saved = [(v, get_spec(v)) for v in variables]
    if rules is not None:
        apply_rules(vc, rules)
    out, errors = {}, []
    for var in variables:
        spec = get_spec(var) or PartitionSpec()
        try:
            sharding = canonical(NamedSharding(mesh, spec))
            sharding.shard_shape(tuple(np.shape(var.value)))
        except (ValueError, KeyError, TypeError) as e:
            errors.append(f'{labels.get(id(var), var._label())} (shape {tuple(np.shape(var.value))}, spec {spec}): {e}')
            continue
        out[id(var)] = sharding
    if errors:
        for var, spec in saved:
            set_spec(var, spec)
        raise ValueError('load_tensors: these variables cannot be laid out on the mesh '
                         f'{dict(mesh.shape)}; nothing was loaded:\n  ' + '\n  '.join(errors))
    return out


def load_tensors(targets: Mapping[str, Union[Target, List[Target]]], tensors: Mapping[str, np.ndarray],
                 mesh: Optional[Mesh] = None, rules=None, source: str = 'the tensors',
                 vc: Optional[VarCollection] = None, ignore: Iterable[str] = ()):
    """Loads named tensors into variables, all or nothing: every name, shape and dtype is checked before anything
    is read or assigned.

    Args:
        targets: tensor name -> where it goes: a variable, a `(variable, transform)` pair (the transform maps the
            stored numpy array to the variable's layout, e.g. `lambda a: a.T` for a PyTorch Linear weight), or a
            list of them (one tensor feeding several variables, e.g. a fused query/key/value weight split in three).
        tensors: tensor name -> numpy array, e.g. the lazy `read_tensors(path)` (each tensor is read once, when
            its turn comes) or a dict.
        mesh: if given, each value goes straight from host memory onto this mesh (jax.make_array_from_callback:
            each device receives only its part), laid out by its variable's PartitionSpec (`objax.sharding`), and
            the layout is recorded as `objax.sharding.shard` records it; without a mesh a value is placed like the
            variable's current value.
        rules: objax.sharding rules (see `objax.sharding.apply_rules`) giving the variables their specs first,
            matched against their names in `vc`; only with `mesh`.
        source: the name of the tensors in messages when `tensors` is not a `read_tensors` reader (which names
            each tensor's file).
        vc: the names of the variables, for messages and for `rules` (e.g. `model.vars()`); without it the
            variables are named by their tensor names. With `mesh`, the variables of `vc` that no tensor loads
            (e.g. random keys) are laid out on the mesh as well (by their specs; replicated without one), so
            that the whole collection lives on the mesh.
        ignore: names of tensors that are not weights (e.g. stored attention masks); skipped when present.

    Raises:
        ShapeMismatchError: (a ValueError) a tensor's shape is not its variable's; every problem is listed.
        ValueError: tensors missing from `tensors`, tensors no target names (unexpected), floating-point values
            for integer variables or the reverse, a target given twice, a spec that does not fit the mesh, or
            `rules` without `mesh`. Each names the tensor, the shapes and the file; nothing is assigned.
        UnreadableFileError: a file turns out to be truncated while reading; nothing is assigned.
        TypeError: a malformed target.
    """
    if rules is not None and mesh is None:
        raise ValueError('load_tensors: rules lay variables out on a mesh; give mesh= as well')
    plan = {name: [(v._storage() if isinstance(v, TrainRef) else v, t) for v, t in _targets_of(value)]
            for name, value in targets.items()}
    labels = _labels(vc)
    for name, pairs in plan.items():
        for var, _ in pairs:
            labels.setdefault(id(var), f'the variable of {name!r}')
    ignore = set(ignore)
    missing = [n for n in plan if n not in tensors]
    unexpected = [n for n in tensors if n not in plan and n not in ignore]
    problems, seen, shape_error = [], {}, False
    if missing:
        problems.append(f'{len(missing)} missing from {source}: '
                        + ', '.join(f'{n!r} (expected for {labels[id(plan[n][0][0])]})' for n in missing))
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected (no variable takes them): '
                        + ', '.join(f'{n!r} {_shape_and_dtype(tensors, n)[0]} in {_file(tensors, n, source)}'
                                    for n in unexpected))
    for name, pairs in plan.items():
        reported = False
        for var, transform in pairs:
            if id(var) in seen:
                problems.append(f'{labels[id(var)]} is the target of both {seen[id(var)]!r} and {name!r}')
            seen[id(var)] = name
            if name in tensors and not reported:  # one problem per tensor (a fused tensor feeds several)
                shape, dtype = _shape_and_dtype(tensors, name)
                problem, of_shape = _check_one(name, shape, dtype, var, transform, labels[id(var)],
                                               _file(tensors, name, source))
                if problem:
                    shape_error |= of_shape
                    reported = True
                    problems.append(problem)
    if problems:
        error = ShapeMismatchError if shape_error else ValueError
        raise error('load_tensors: nothing was loaded:\n  ' + '\n  '.join(problems))
    variables = [var for pairs in plan.values() for var, _ in pairs]
    values = [(var, (name, transform)) for name, pairs in plan.items() for var, transform in pairs]
    shardings = {}
    if mesh is not None:
        names = vc if vc is not None else VarCollection({labels[id(v)]: v for v in variables})
        others = [var for var, _ in storage_groups(names.items()) if id(var) not in seen]  # e.g. random keys
        variables += others
        values += [(var, None) for var in others]
        shardings = _mesh_shardings(variables, names, mesh, rules, labels)
    last = [None, None]  # the tensor read last (a tensor feeding several variables is read once)

    def place(var: BaseVar, what) -> jax.Array:
        if what is None:  # a variable of `vc` that no tensor loads: its current value, onto the mesh
            return place_on(var.value, shardings[id(var)])
        name, transform = what
        if last[0] != name:
            last[:] = name, None  # frees the previous tensor first
            last[1] = np.asarray(tensors[name])
        host = last[1] if transform is None else np.asarray(transform(last[1]))
        host = np.asarray(host, dtype=var.value.dtype)
        if mesh is None:
            return place_like_current(var, host)
        return jax.make_array_from_callback(host.shape, shardings[id(var)], lambda index: host[index])

    assign_all(values, place)
    if mesh is not None:
        for var in variables:
            record_layout(var, shardings[id(var)])
        changed()
