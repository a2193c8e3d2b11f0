"""objax.io.read_tensors / load_tensors: lazy reading of safetensors files, folders and sharded indexes (bfloat16
included), all-or-nothing loading with named refusals, and loading straight onto a 2x4 CPU mesh."""

import json
import os

import jax
import jax.numpy as jn
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import objax
from objax.io import ShapeMismatchError, UnreadableFileError, load_tensors, read_tensors
from objax.sharding import get_spec, layout, make_mesh


def torch_style(seed: int = 0) -> dict:
    """Tensors as a PyTorch two-layer network stores them: Linear weights (out, in)."""
    rng = np.random.default_rng(seed)
    return {'fc1.weight': rng.normal(size=(16, 8)).astype(np.float32),
            'fc1.bias': rng.normal(size=(16,)).astype(np.float32),
            'fc2.weight': rng.normal(size=(4, 16)).astype(np.float32),
            'fc2.bias': rng.normal(size=(4,)).astype(np.float32)}


class Net(objax.Module):
    def __init__(self):
        self.fc1 = objax.nn.Linear(8, 16)
        self.fc2 = objax.nn.Linear(16, 4)

    def targets(self) -> dict:
        return {'fc1.weight': (self.fc1.w, lambda a: a.T), 'fc1.bias': self.fc1.b,
                'fc2.weight': (self.fc2.w, lambda a: a.T), 'fc2.bias': self.fc2.b}


def values(module) -> dict:
    return {k: np.asarray(v.value) for k, v in module.vars().items()}


def assert_loaded(net: Net, tensors: dict):
    np.testing.assert_array_equal(np.asarray(net.fc1.w.value), tensors['fc1.weight'].T)
    np.testing.assert_array_equal(np.asarray(net.fc1.b.value), tensors['fc1.bias'])
    np.testing.assert_array_equal(np.asarray(net.fc2.w.value), tensors['fc2.weight'].T)
    np.testing.assert_array_equal(np.asarray(net.fc2.b.value), tensors['fc2.bias'])


def test_reads_a_file_lazily_and_a_folder(tmp_path):
    tensors = torch_style()
    safetensors.numpy.save_file(tensors, str(tmp_path / 'model.safetensors'), metadata={'format': 'pt'})
    for path in (tmp_path / 'model.safetensors', tmp_path, str(tmp_path)):
        reader = read_tensors(path)
        assert sorted(reader) == sorted(tensors) and len(reader) == 4
        assert reader.shape('fc1.weight') == (16, 8) and reader.dtype('fc2.bias') == np.float32
        assert reader.file('fc1.bias') == str(tmp_path / 'model.safetensors')
        for name, value in tensors.items():
            np.testing.assert_array_equal(reader[name], value)
    assert 'SafetensorsReader' in repr(reader) and '4 tensors' in repr(reader)


def test_reads_bfloat16_and_float16(tmp_path):
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    path = str(tmp_path / 'half.safetensors')
    objax.io.save_safetensors(path, objax.VarCollection({'b': objax.StateVar(jn.asarray(x, jn.bfloat16)),
                                                         'h': objax.StateVar(jn.asarray(x, jn.float16))}))
    reader = read_tensors(path)
    assert reader.dtype('b') == ml_dtypes.bfloat16 and reader.dtype('h') == np.float16
    np.testing.assert_array_equal(reader['b'], x.astype(ml_dtypes.bfloat16))
    np.testing.assert_array_equal(reader['h'], x.astype(np.float16))
    var = objax.TrainVar(jn.zeros((4, 3)))
    load_tensors({'b': (var, lambda a: a.T)}, reader, ignore=['h'])
    assert var.value.dtype == jn.float32  # converted to the variable's dtype
    np.testing.assert_array_equal(np.asarray(var.value), x.astype(ml_dtypes.bfloat16).astype(np.float32).T)


def write_index(folder, tensors: dict, split: dict) -> str:
    """Shards as Hugging Face writes them: model-0000i-of-0000n.safetensors + model.safetensors.index.json."""
    shards = sorted(set(split.values()))
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f'model-{i:05d}-of-{len(shards):05d}.safetensors'
        part = {k: v for k, v in tensors.items() if split[k] == shard}
        safetensors.numpy.save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
    index = folder / 'model.safetensors.index.json'
    index.write_text(json.dumps({'metadata': {'total_size': sum(v.nbytes for v in tensors.values())},
                                 'weight_map': weight_map}))
    return str(index)


def test_reads_sharded_index(tmp_path):
    tensors = torch_style()
    index = write_index(tmp_path, tensors, {'fc1.weight': 0, 'fc1.bias': 0, 'fc2.weight': 1, 'fc2.bias': 1})
    for path in (index, tmp_path):
        reader = read_tensors(path)
        assert sorted(reader) == sorted(tensors)
        assert os.path.basename(reader.file('fc2.bias')) == 'model-00002-of-00002.safetensors'
        net = Net()
        load_tensors(net.targets(), reader, vc=net.vars())
        assert_loaded(net, tensors)


def test_unreadable_files_and_indexes(tmp_path):
    with pytest.raises(FileNotFoundError, match='neither model.safetensors nor'):
        read_tensors(tmp_path)
    (tmp_path / 'pytorch_model.bin').write_bytes(b'x')
    with pytest.raises(FileNotFoundError, match='convert them to safetensors'):
        read_tensors(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_tensors(tmp_path / 'nothing.safetensors')
    path = tmp_path / 'model.safetensors'
    safetensors.numpy.save_file(torch_style(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(UnreadableFileError, match='truncated'):
        read_tensors(path)
    path.write_bytes(b'\x05\x00')
    with pytest.raises(UnreadableFileError, match='not a safetensors file'):
        read_tensors(path)
    path.write_bytes(data)
    index = tmp_path / 'model.safetensors.index.json'
    index.write_text(json.dumps({'weight_map': {'fc1.weight': 'model.safetensors', 'extra': 'model.safetensors'}}))
    with pytest.raises(UnreadableFileError, match="'extra'.*does not hold it"):
        read_tensors(index)
    index.write_text(json.dumps({'weight_map': {'fc1.weight': 'model.safetensors'}}))
    with pytest.raises(UnreadableFileError, match='does not list'):
        read_tensors(index)
    index.write_text('{}')
    with pytest.raises(UnreadableFileError, match='weight_map'):
        read_tensors(index)


def test_loads_transformed_and_split_tensors():
    tensors = torch_style()
    net = Net()
    load_tensors(net.targets(), tensors, vc=net.vars())
    assert_loaded(net, tensors)
    # One tensor feeding several variables: a fused (16, 8) weight split into two (8, 8) halves.
    a, b = objax.TrainVar(jn.zeros((8, 8))), objax.TrainVar(jn.zeros((8, 8)))
    load_tensors({'fc1.weight': [(a, lambda w: w[:8].T), (b, lambda w: w[8:].T)]},
                 {'fc1.weight': tensors['fc1.weight']})
    np.testing.assert_array_equal(np.asarray(jn.concatenate([a.value, b.value], 1)), tensors['fc1.weight'].T)


@pytest.mark.parametrize('change, error, expected', [
    (lambda t: t.pop('fc2.bias'), ValueError,
     r"1 missing from .*'fc2\.bias' \(expected for \(Net\)\.fc2\(Linear\)\.b\)"),
    (lambda t: t.update(extra=np.zeros((3, 2), np.float32)), ValueError,
     r"1 unexpected .*'extra' \(3, 2\) in '.*model\.safetensors'"),
    (lambda t: t.update({'fc1.weight': np.zeros((16, 9), np.float32)}), ShapeMismatchError,
     r"'fc1\.weight' in '.*model\.safetensors': shape \(16, 9\) \(\(9, 16\) after its transform\), expected \(8, 16\) "
     r"for \(Net\)\.fc1\(Linear\)\.w"),
    (lambda t: t.update({'fc2.bias': np.zeros((5,), np.float32)}), ShapeMismatchError,
     r"'fc2\.bias' in '.*': shape \(5,\), expected \(4,\) for \(Net\)\.fc2\(Linear\)\.b"),
    (lambda t: t.update({'fc2.bias': np.zeros((4,), np.int32)}), ValueError, r"'fc2\.bias' .* dtype int32"),
])
def test_refusals_name_the_tensor_and_change_nothing(tmp_path, change, error, expected):
    tensors = torch_style()
    change(tensors)
    safetensors.numpy.save_file(tensors, str(tmp_path / 'model.safetensors'))
    net = Net()
    before = values(net)
    with pytest.raises(error, match=expected) as info:
        load_tensors(net.targets(), read_tensors(tmp_path), vc=net.vars())
    assert 'nothing was loaded' in str(info.value)
    after = values(net)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])


def test_every_problem_is_listed_and_ignored_names_are_skipped():
    tensors = torch_style()
    tensors['fc1.weight'] = tensors['fc1.weight'][:, :5]
    tensors.pop('fc1.bias')
    tensors['h.0.attn.bias'] = np.ones((1, 1, 4, 4), np.float32)
    net = Net()
    with pytest.raises(ShapeMismatchError) as info:
        load_tensors(net.targets(), tensors, source='my tensors')
    message = str(info.value)
    assert "'fc1.bias' (expected for the variable of 'fc1.bias')" in message and 'missing from my tensors' in message
    assert "'h.0.attn.bias' (1, 1, 4, 4) in my tensors" in message and "'fc1.weight' in my tensors" in message
    tensors = torch_style()
    tensors['h.0.attn.bias'] = np.ones((1, 1, 4, 4), np.float32)
    load_tensors(net.targets(), tensors, ignore=['h.0.attn.bias', 'not.there'])
    assert_loaded(net, tensors)


def test_target_errors():
    net = Net()
    with pytest.raises(ValueError, match=r'is the target of both'):
        load_tensors({'a': net.fc2.b, 'b': net.fc2.b}, {'a': np.zeros(4), 'b': np.zeros(4)})
    with pytest.raises(TypeError, match='expected a variable'):
        load_tensors({'a': 3}, {'a': np.zeros(4)})
    with pytest.raises(ValueError, match='give mesh= as well'):
        load_tensors(net.targets(), torch_style(), rules=[])
    trainref = objax.TrainRef(net.fc2.b)  # a reference loads into its TrainVar
    load_tensors({'b': trainref}, {'b': np.arange(4, dtype=np.float32)})
    np.testing.assert_array_equal(np.asarray(net.fc2.b.value), np.arange(4))


RULES = [('*.fc1(Linear).w', P(None, 'model')), ('*.fc1(Linear).b', P('model')),
         ('*.fc2(Linear).w', P('model', None))]


def test_loads_onto_a_mesh_with_rules(tmp_path):
    tensors = torch_style()
    safetensors.numpy.save_file(tensors, str(tmp_path / 'model.safetensors'))
    mesh = make_mesh('data=2,model=4')
    net = Net()
    load_tensors(net.targets(), read_tensors(tmp_path), mesh=mesh, rules=RULES, vc=net.vars())
    assert_loaded(net, tensors)
    expected = {'fc1.w': P(None, 'model'), 'fc1.b': P('model'), 'fc2.w': P('model'), 'fc2.b': P()}
    for name, spec in expected.items():
        var = getattr(getattr(net, name.split('.')[0]), name.split('.')[1])
        assert var.value.sharding == NamedSharding(mesh, spec), name
        assert layout(var) == NamedSharding(mesh, spec), name
        assert len(var.value.addressable_shards) == 8
    assert net.fc1.w.value.addressable_shards[0].data.shape == (8, 4)  # each device holds its quarter only
    assert get_spec(net.fc1.w) == P(None, 'model') and get_spec(net.fc2.b) is None
    # A compiled forward pass runs on these layouts and gives the same numbers as the unsharded network.
    x = np.random.default_rng(1).normal(size=(6, 8)).astype(np.float32)
    reference = Net()
    load_tensors(reference.targets(), tensors)
    forward = objax.Jit(lambda x: net.fc2(jn.tanh(net.fc1(x))), net.vars())
    np.testing.assert_allclose(np.asarray(forward(x)), np.asarray(reference.fc2(jn.tanh(reference.fc1(x)))),
                               rtol=1e-5, atol=1e-6)


def test_the_other_variables_of_the_collection_go_onto_the_mesh_too():
    mesh = make_mesh('data=2,model=4')
    net = Net()
    net.steps = objax.StateVar(jax.device_put(jn.zeros(3), jax.devices()[5]))  # no tensor loads it
    net.noise = objax.random.Generator(1)
    load_tensors(net.targets(), torch_style(), mesh=mesh, rules=RULES, vc=net.vars())
    for var in (net.steps, net.noise.key):
        assert var.value.sharding == NamedSharding(mesh, P()) and layout(var) == NamedSharding(mesh, P())
    without = Net()
    without.steps = objax.StateVar(jn.zeros(3))
    load_tensors(without.targets(), torch_style(), mesh=mesh)  # no vc: only the loaded variables move
    assert len(without.steps.value.devices()) == 1 and layout(without.steps) is None


def test_a_spec_that_does_not_fit_the_mesh_changes_nothing():
    mesh = make_mesh('data=2,model=4')
    net = Net()
    before = values(net)
    with pytest.raises(ValueError, match=r'\(Net\)\.fc2\(Linear\)\.b \(shape \(4,\), spec .*data.*model'):
        load_tensors(net.targets(), torch_style(), mesh=mesh, vc=net.vars(),
                     rules=RULES + [('*.fc2(Linear).b', P(('data', 'model')))])
    assert get_spec(net.fc1.w) is None and layout(net.fc1.w) is None  # the rules' specs were taken back
    for k, v in values(net).items():
        np.testing.assert_array_equal(v, before[k])
    assert jax.device_count() == 8
