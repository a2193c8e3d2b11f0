"""objax.export.save / load: models exported in this process and served in a fresh one that never imports their
code, for several batch sizes; pytree arguments, bfloat16 variables, signatures and clear errors."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import jax
import jax.numpy as jn
import numpy as np
import pytest
from _models import randomize_batchnorm

import objax
from objax.zoo.gpt2 import GPT2
from objax.zoo.wide_resnet import WideResNet

SRC = Path(__file__).resolve().parents[2] / 'src'
TOL = 1e-5

# Runs in a fresh interpreter: imports objax.export and numpy only, serves the file on each input batch and
# checks that no model code (objax.nn, objax.zoo) was ever imported.
SERVE = textwrap.dedent('''
    import sys
    import numpy as np
    import objax.export

    path, inputs, outputs = sys.argv[1:]
    served = objax.export.load(path)
    with np.load(inputs, allow_pickle=False) as batches:
        results = {name: np.asarray(served(batches[name])) for name in batches.files}
    np.savez(outputs, **results)
    loaded = sorted(m for m in sys.modules if m.startswith(('objax.nn', 'objax.zoo')))
    print('model modules imported:', loaded)
    print('signature:', [tuple(map(str, a.shape)) for a in served.in_avals])
''')


def serve_in_fresh_process(path: Path, batches: dict, tmp_path: Path) -> dict:
    """Loads `path` in a new Python process and runs it on each batch; {name: output}."""
    inputs, outputs = tmp_path / 'inputs.npz', tmp_path / 'outputs.npz'
    np.savez(inputs, **batches)
    env = dict(os.environ, PYTHONPATH=str(SRC), JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, '-c', SERVE, str(path), str(inputs), str(outputs)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'model modules imported: []' in proc.stdout, proc.stdout
    with np.load(outputs) as results:
        return {name: results[name] for name in results.files}


def test_wide_resnet_served_in_a_fresh_process_for_two_batch_sizes(tmp_path):
    rng = np.random.default_rng(0)
    model = WideResNet(nin=3, nclass=10, depth=10, width=1)
    randomize_batchnorm(model, rng)
    path = tmp_path / 'wrn.export'
    objax.export.save(path, lambda x: model(x, training=False), model.vars(), np.zeros((1, 3, 16, 16), np.float32))
    assert os.listdir(tmp_path) == ['wrn.export']
    batches = {f'b{n}': rng.normal(size=(n, 3, 16, 16)).astype(np.float32) for n in (2, 5)}
    served = serve_in_fresh_process(path, batches, tmp_path)
    for name, x in batches.items():
        expected = np.asarray(model(x, training=False))
        assert served[name].shape == expected.shape == (len(x), 10)
        np.testing.assert_allclose(served[name], expected, atol=TOL, rtol=TOL)


def test_gpt2_served_in_a_fresh_process_for_two_batch_sizes(tmp_path):
    rng = np.random.default_rng(1)
    model = GPT2(vocab_size=128, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    path = tmp_path / 'gpt2.export'
    objax.export.save(path, lambda tokens: model(tokens, training=False), model.vars(), np.zeros((1, 16), np.int32))
    batches = {f'b{n}': rng.integers(0, 128, size=(n, 16)).astype(np.int32) for n in (2, 5)}
    served = serve_in_fresh_process(path, batches, tmp_path)
    for name, tokens in batches.items():
        expected = np.asarray(model(tokens, training=False))
        assert served[name].shape == expected.shape == (len(tokens), 16, 128)
        np.testing.assert_allclose(served[name], expected, atol=TOL, rtol=TOL)


def test_loaded_function_describes_itself(tmp_path):
    model = WideResNet(nin=3, nclass=10, depth=10, width=1)
    path = tmp_path / 'wrn.export'
    objax.export.save(path, lambda x: model(x, training=False), model.vars(), np.zeros((4, 3, 8, 8), np.float32))
    served = objax.export.load(path)
    vc = model.vars()
    assert served.names == list(vc.keys())
    for name, value in served.vars().items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(vc[name].value))
    [spec] = served.in_avals
    assert tuple(map(str, spec.shape)) == ('b', '3', '8', '8') and spec.dtype == np.float32
    assert tuple(map(str, served.output_signature.shape)) == ('b', '10')
    assert served.platforms == ('cpu',)
    assert 'float32[b, 3, 8, 8]' in repr(served) and 'wrn.export' in repr(served)
    manifest = served.manifest
    assert manifest['format'] == 'objax.export' and manifest['version'] == 1
    assert manifest['inputs']['leaves'] == [{'shape': ['b', 3, 8, 8], 'dtype': 'float32'}]
    assert manifest['versions']['jax'] == jax.__version__ and manifest['versions']['objax'] == objax.__version__
    kinds = {v['name']: v['kind'] for v in manifest['variables']}
    assert kinds['(WideResNet)[0](Conv2D).w'] == 'TrainVar'
    assert kinds['(WideResNet)[1](WRNBlock).norm_1(BatchNorm2D).running_mean'] == 'StateVar'
    with zipfile.ZipFile(path) as archive:  # the container: stored members, a readable JSON manifest
        assert archive.namelist() == ['manifest.json', 'program.jax_export', 'variables.safetensors']
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
        assert json.loads(archive.read('manifest.json')) == manifest


class Tagged(objax.Module):
    """A bfloat16 weight, a state and a function of a pytree of arguments returning a pytree."""

    def __init__(self):
        self.w = objax.TrainVar(jn.asarray(np.random.default_rng(1).normal(size=(3, 4)), jn.bfloat16))
        self.offset = objax.StateVar(jn.arange(4, dtype=jn.float32))

    def __call__(self, inputs, scale):
        y = inputs['x'].astype(jn.bfloat16) @ self.w
        return {'y': y, 'z': (y.astype(jn.float32) + self.offset.value) * scale, 'n': inputs['n'] + 1}


def tagged_example(n: int = 2) -> tuple:
    return {'x': np.zeros((n, 3), np.float32), 'n': np.zeros((n,), np.int32)}, np.ones((n, 1), np.float32)


def exported_tagged(tmp_path, **kwargs):
    """(module, its loaded export) of a new Tagged module, exported for tagged_example()."""
    module = Tagged()
    path = tmp_path / 'tagged.export'
    objax.export.save(path, module, module.vars(), *tagged_example(), **kwargs)
    return module, objax.export.load(path)


def test_bfloat16_variables_and_pytree_arguments_round_trip(tmp_path):
    module, served = exported_tagged(tmp_path)
    assert served.values[0].dtype == jn.bfloat16
    np.testing.assert_array_equal(np.asarray(served.values[0]), np.asarray(module.w.value))
    assert served.manifest['variables'][0] == {'name': '(Tagged).w', 'kind': 'TrainVar', 'shape': [3, 4],
                                               'dtype': 'bfloat16'}
    rng = np.random.default_rng(2)
    for n in (1, 7):
        args = ({'x': rng.normal(size=(n, 3)).astype(np.float32), 'n': np.arange(n, dtype=np.int32)},
                rng.normal(size=(n, 1)).astype(np.float32))
        got, expected = served(*args), module(*args)
        assert sorted(got) == ['n', 'y', 'z'] and got['y'].dtype == jn.bfloat16
        for key in got:  # bfloat16 products: rounded differently by the compiled program than op by op
            np.testing.assert_allclose(np.asarray(got[key], np.float32), np.asarray(expected[key], np.float32),
                                       rtol=1e-2, atol=1e-2)


def test_variables_are_inputs_of_the_program_not_constants(tmp_path):
    module, served = exported_tagged(tmp_path)
    assert len(served.exported.in_avals) == 2 + 3  # the two variables, then the three argument leaves
    served.values[1] = jn.zeros(4)  # a program of the values: other values give other outputs
    assert np.asarray(served(*tagged_example())['z']).tolist() == [[0.0] * 4] * 2


def test_static_shapes_when_asked(tmp_path):
    _, served = exported_tagged(tmp_path, polymorphic_batch=False)
    assert [a.shape for a in served.in_avals] == [(2,), (2, 3), (2, 1)]  # dict leaves in key order
    served(*tagged_example())
    with pytest.raises(ValueError, match=r"argument 0\['n'\] has shape \(3,\), expected \(2\)"):
        served(*tagged_example(3))


def test_call_errors_name_the_argument(tmp_path):
    model = objax.nn.Linear(3, 2)
    path = tmp_path / 'linear.export'
    objax.export.save(path, model, model.vars(), np.zeros((1, 3), np.float32))
    served = objax.export.load(path)
    with pytest.raises(TypeError, match=r'takes 1 argument\(s\), got 2'):
        served(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r'argument 0 has dtype int32, expected float32'):
        served(np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match=r'argument 0 has shape \(2, 4\), expected \(b, 3\)'):
        served(np.zeros((2, 4), np.float32))
    assert served(np.zeros((6, 3))).shape == (6, 2)  # float64 is float32 without x64, as in JAX


def test_batch_size_shared_by_all_arguments(tmp_path):
    path = tmp_path / 'add.export'
    with pytest.raises(ValueError, match='leading sizes \\[2, 3\\]; pass polymorphic_batch=False'):
        objax.export.save(path, lambda a, b: a[:2] + b[:2], objax.VarCollection(), np.zeros((2, 4)), np.zeros((3, 4)))
    objax.export.save(path, lambda a, b: a + b, objax.VarCollection(), np.zeros((2, 4)), np.zeros((2, 4)))
    served = objax.export.load(path)
    with pytest.raises(ValueError, match="argument 1 has size 3 for 'b' but argument 0 has 2"):
        served(np.zeros((2, 4)), np.zeros((3, 4)))
    assert not os.path.exists(tmp_path / 'none.export')


def test_batch_dependent_function_says_to_export_static_shapes(tmp_path):
    path = tmp_path / 'pairs.export'
    with pytest.raises(ValueError, match='polymorphic_batch=False'):
        objax.export.save(path, lambda x: x.reshape(2, -1), objax.VarCollection(), np.zeros((4, 3), np.float32))
    assert not path.exists()
    objax.export.save(path, lambda x: x.reshape(2, -1), objax.VarCollection(), np.zeros((4, 3), np.float32),
                      polymorphic_batch=False)
    assert objax.export.load(path)(np.ones((4, 3), np.float32)).shape == (2, 6)


def test_save_checks_its_arguments(tmp_path):
    model = objax.nn.Linear(3, 2)
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(TypeError, match=r'objax.export.save\(vc\): expected a VarCollection'):
        objax.export.save(tmp_path / 'a', model, list(model.vars()), x)
    with pytest.raises(ValueError, match='platforms'):
        objax.export.save(tmp_path / 'a', model, model.vars(), x, platforms=('cpu', 'gpu'))
    with pytest.raises(TypeError, match=r'example argument args\[0\] has dtype <U1'):
        objax.export.save(tmp_path / 'a', model, model.vars(), np.array(['a']))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        objax.export.save(tmp_path / 'missing' / 'a', model, model.vars(), x)
    assert os.listdir(tmp_path) == []


def test_several_platforms(tmp_path):
    model = objax.nn.Linear(3, 2)
    path = tmp_path / 'multi.export'
    objax.export.save(path, model, model.vars(), np.zeros((1, 3), np.float32), platforms=['cpu', 'cuda', 'tpu'])
    served = objax.export.load(path)
    assert served.platforms == ('cpu', 'cuda', 'tpu')
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(np.asarray(served(x)), np.asarray(model(x)), atol=TOL, rtol=TOL)


def test_program_for_another_platform_only_is_refused_at_load(tmp_path):
    model = objax.nn.Linear(3, 2)
    path = tmp_path / 'tpu.export'
    objax.export.save(path, model, model.vars(), np.zeros((1, 3), np.float32), platforms='tpu')
    with pytest.raises(ValueError, match=r"tpu.export' was exported for tpu; JAX runs on cpu here"):
        objax.export.load(path)


def test_saving_again_writes_the_same_bytes(tmp_path):
    model = objax.nn.Linear(3, 2)
    a, b = tmp_path / 'a.export', tmp_path / 'b.export'
    for path in (a, b):
        objax.export.save(path, model, model.vars(), np.zeros((1, 3), np.float32))
    assert a.read_bytes() == b.read_bytes()


def test_a_program_from_a_newer_jax_is_explained(tmp_path):
    model = objax.nn.Linear(3, 2)
    path = tmp_path / 'linear.export'
    objax.export.save(path, model, model.vars(), np.zeros((1, 3), np.float32))
    served = objax.export.load(path)
    served.manifest['versions']['jax'] = '99.0.0'

    def compile_fails(*args):  # what an older JAX says of a newer program
        raise RuntimeError("INVALID_ARGUMENT: Failed to deserialize StableHLO: unregistered operation 'vhlo.x_v9'")

    served._call = compile_fails
    with pytest.raises(RuntimeError, match=r"linear.export' was written by JAX 99.0.0, whose program JAX .* cannot "
                                           r"compile .* run it with JAX 99.0.0 or newer, or save it again"):
        served(np.zeros((2, 3), np.float32))
