"""objax.util.Objax2Tf with real TensorFlow: converted models called eagerly, inside tf.functions and after a
tf.saved_model round trip (reloaded in a separate process that never imports objax)."""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow', reason='TensorFlow is not installed: pip install -e ".[tf]" runs these tests')

import jax  # noqa: E402
import jax.numpy as jn  # noqa: E402
from _models import randomize_batchnorm  # noqa: E402

import objax  # noqa: E402
from objax.util import Objax2Tf, _tf_call  # noqa: E402
from objax.util.objax2tf import _polymorphic_shape  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)


def _reference(module: objax.Module, x, **kwargs) -> np.ndarray:
    """objax's output for x, leaving the module's variables (e.g. the RNN's state) as they were."""
    vc = module.vars()
    saved = vc.tensors()
    try:
        return np.asarray(module(x, **kwargs))
    finally:
        vc.assign(saved)


def _cnn():
    return objax.nn.Sequential([objax.nn.Conv2D(3, 8, 3), objax.nn.BatchNorm2D(8), objax.functional.relu,
                                objax.nn.Conv2D(8, 4, 3, strides=2), objax.functional.relu,
                                lambda x: x.mean((2, 3)), objax.nn.Linear(4, 5)])


@pytest.fixture(scope='module')
def models():
    """name -> (objax module, Objax2Tf of it, keyword arguments, inputs of two batch sizes)."""
    rng = np.random.default_rng(1)
    objax.random.DEFAULT_GENERATOR.seed(1)
    cnn, wrn = _cnn(), objax.zoo.wide_resnet.WideResNet(nin=3, nclass=10, depth=10, width=1)
    randomize_batchnorm(cnn, rng)
    randomize_batchnorm(wrn, rng)
    rnn = objax.zoo.rnn.RNN(nstate=6, nin=4, nout=3)
    rnn.init_state(2)
    rnn.state.assign(jn.asarray(rng.normal(size=(2, 6)), jn.float32))
    images = [rng.normal(size=(n, 3, 16, 16)).astype(np.float32) for n in (4, 7)]
    sequences = [rng.normal(size=(n, 2, 4)).astype(np.float32) for n in (5, 3)]  # (steps, batch, nin)
    out = {'cnn': (cnn, dict(training=False), images), 'wrn': (wrn, dict(training=False), images),
           'rnn': (rnn, {}, sequences)}
    return {k: (m, Objax2Tf(m), kw, xs) for k, (m, kw, xs) in out.items()}


@pytest.mark.parametrize('name', ['cnn', 'wrn', 'rnn'])
def test_outputs_match_objax(models, name):
    """Eager execution, the tf.function as called, a concrete function with unknown leading size and a call
    from inside another tf.function all give objax's output; the objax module's variables are unchanged."""
    module, exported, kwargs, inputs = models[name]
    before = [np.asarray(v) for v in module.vars().tensors()]
    spec = tf.TensorSpec((None,) + inputs[0].shape[1:], tf.float32)
    concrete = exported.__call__.get_concrete_function(spec, **kwargs)
    outer = tf.function(lambda x: exported(x, **kwargs) * 1)
    for x in inputs:
        expected = _reference(module, x, **kwargs)
        np.testing.assert_allclose(exported(x, **kwargs).numpy(), expected, **TOL)
        np.testing.assert_allclose(exported(tf.constant(x), **kwargs).numpy(), expected, **TOL)
        np.testing.assert_allclose(concrete(tf.constant(x)).numpy(), expected, **TOL)
        np.testing.assert_allclose(outer(tf.constant(x)).numpy(), expected, **TOL)
        tf.config.run_functions_eagerly(True)
        try:
            np.testing.assert_allclose(exported(tf.constant(x), **kwargs).numpy(), expected, **TOL)
        finally:
            tf.config.run_functions_eagerly(False)
    for b, a in zip(before, module.vars().tensors()):  # e.g. the RNN's state is not advanced
        np.testing.assert_array_equal(b, a)


def test_keyword_arguments_are_passed(models):
    cnn, exported, _, (x, _) = models['cnn']
    np.testing.assert_allclose(exported(x, training=True).numpy(), _reference(cnn, x, training=True), **TOL)
    assert np.abs(exported(x, training=True).numpy() - exported(x, training=False).numpy()).max() > 1e-3
    rnn, exported, _, (seq, _) = models['rnn']
    final = exported(seq, only_return_final=True).numpy()
    assert final.shape == (2, 3)
    np.testing.assert_allclose(final, _reference(rnn, seq, only_return_final=True), **TOL)
    with pytest.raises(TypeError, match="'training'.*Python value"):
        models['cnn'][1](x, training=tf.constant(False))


@pytest.mark.parametrize('name', ['cnn', 'wrn', 'rnn'])
def test_variables_match_vars(models, name):
    """tf.Variables in vars() order, equal values, TrainVars (and only they) trainable; tf.Module sees them."""
    module, exported, _, _ = models[name]
    vc = module.vars()
    assert isinstance(exported, tf.Module) and isinstance(exported, Objax2Tf)
    assert len(exported.objax_variables) == len(vc) > 0
    for tv, (objax_name, v) in zip(exported.objax_variables, vc.items()):
        assert isinstance(tv, tf.Variable)
        np.testing.assert_array_equal(tv.numpy(), np.asarray(v.value))
        assert tv.dtype.as_numpy_dtype == v.value.dtype
        assert tv.trainable == isinstance(v, objax.TrainVar), objax_name
    assert [id(v) for v in exported.variables] == [id(v) for v in exported.objax_variables]
    assert [id(v) for v in exported.trainable_variables] == [id(v) for v in exported.objax_variables
                                                             if v.trainable]
    assert len(exported.trainable_variables) == len(vc.subset(objax.TrainVar)) < len(vc)


def test_tf_variables_drive_the_output(models):
    """The converted function reads the tf.Variables at call time: changing one changes the output (as objax
    does with the same change), the objax module keeps its own values."""
    cnn, _, _, (x, _) = models['cnn']
    exported = Objax2Tf(cnn)
    last_w = next(v for v in exported.objax_variables if v.name.startswith('Sequential__6__Linear_.w'))
    last_w.assign(tf.zeros_like(last_w))
    bias = np.asarray(cnn[-1].b.value)
    np.testing.assert_allclose(exported(x, training=False).numpy(), np.broadcast_to(bias, (x.shape[0], 5)), **TOL)
    assert np.abs(np.asarray(cnn[-1].w.value)).sum() > 0


def test_gradients_through_tensorflow(models):
    """tf.GradientTape gives the gradients objax.Grad computes, for every trainable variable."""
    cnn, exported, _, (x, _) = models['cnn']
    grad = objax.Grad(lambda v: cnn(v, training=False).sum(), cnn.vars())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(exported(x, training=False))
    tf_grads = tape.gradient(loss, exported.trainable_variables)
    for g_tf, g in zip(tf_grads, grad(x)):
        np.testing.assert_allclose(g_tf.numpy(), np.asarray(g), rtol=1e-4, atol=1e-5)


def test_polymorphic_shape_and_bad_input():
    assert _polymorphic_shape(tf.TensorSpec((None, 3, 32, 32))) == '(b, 3, 32, 32)'
    assert _polymorphic_shape(tf.TensorSpec((None, None, 4)), 1) == '(b, a1d1, 4)'
    assert _polymorphic_shape(tf.TensorSpec((2, 3))) is None
    assert _polymorphic_shape(3.0) is None
    with pytest.raises(TypeError, match='objax.Module'):
        Objax2Tf(lambda v: v)


class _Lookup(objax.Module):
    """Integer and float inputs, a tuple of a float and an integer output."""

    def __init__(self):
        self.w = objax.TrainVar(jn.arange(12.0).reshape(4, 3) / 10)

    def __call__(self, x, idx):
        return (self.w.value[idx] * x).sum(-1), idx + 1


def test_integer_inputs_tuple_outputs_and_input_gradients():
    """An int64 index (int32 for JAX without x64), a (float, int) output tuple, gradients for the float input and
    the variable (none for the integer input), eagerly and with an unknown batch size."""
    module, rng = _Lookup(), np.random.default_rng(2)
    exported = Objax2Tf(module)
    x, idx = rng.normal(size=(5, 3)).astype(np.float32), np.array([0, 3, 1, 2, 3])
    xt, it = tf.constant(x), tf.constant(idx)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        y, j = exported(xt, it)
        loss = tf.reduce_sum(y ** 2)
    np.testing.assert_allclose(y.numpy(), (np.asarray(module.w.value)[idx] * x).sum(-1), **TOL)
    np.testing.assert_array_equal(j.numpy(), idx + 1)
    gx, gw, gi = tape.gradient(loss, [xt, exported.objax_variables[0], it])
    rw, rx = jax.grad(lambda w, v: (((w[idx] * v).sum(-1)) ** 2).sum(), (0, 1))(module.w.value, x)
    np.testing.assert_allclose(gx.numpy(), np.asarray(rx), **TOL)
    np.testing.assert_allclose(gw.numpy(), np.asarray(rw), **TOL)
    assert gi is None
    concrete = exported.__call__.get_concrete_function(tf.TensorSpec((None, 3)), tf.TensorSpec((None,), tf.int64))
    for n in (2, 5):
        y2, j2 = concrete(xt[:n], it[:n])
        np.testing.assert_allclose(y2.numpy(), y.numpy()[:n], **TOL)
        np.testing.assert_array_equal(j2.numpy(), idx[:n] + 1)


def test_select_version():
    """The newest StableHLO version both sides know, compared numerically; no common one is a clear error naming
    both sides' versions and what to install."""
    assert _tf_call.select_version('1.25.3', '0.9.0', '1.13.7', '0.9.0') == '1.13.7'
    assert _tf_call.select_version('1.9.0', '0.9.0', '1.13.7', '0.9.0') == '1.9.0'  # not a string comparison
    assert _tf_call.select_version('1.13.7', '1.0.0', '1.13.7', '0.9.0') == '1.13.7'
    assert _tf_call.parse_version('1.13.7') > _tf_call.parse_version('1.9.10')
    with pytest.raises(_tf_call.VersionMismatchError) as info:  # TensorFlow too old for this JAX
        _tf_call.select_version('2.4.0', '1.20.0', '1.13.7', '0.9.0', 'JAX 9.9.9', 'TensorFlow 2.21.0')
    message = str(info.value)
    for part in ('JAX 9.9.9', 'TensorFlow 2.21.0', '1.20.0 to 2.4.0', '0.9.0 to 1.13.7',
                 'TensorFlow that reads StableHLO 1.20.0 or newer'):
        assert part in message, (part, message)
    with pytest.raises(_tf_call.VersionMismatchError, match=r'JAX 0\.1.*1\.0\.0.*TensorFlow 9.*1\.5\.0 to 1\.9\.0.*'
                                                            r'JAX \(and jaxlib\) that writes StableHLO 1\.5\.0'):
        _tf_call.select_version('1.0.0', '0.9.0', '1.9.0', '1.5.0', 'JAX 0.1', 'TensorFlow 9')
    assert issubclass(_tf_call.VersionMismatchError, RuntimeError)
    _tf_call.check_calling_convention(10, 10)
    with pytest.raises(_tf_call.VersionMismatchError, match=r'JAX 9.*version 11.*TensorFlow 2\.21.*up to 10'):
        _tf_call.check_calling_convention(11, 10, 'JAX 9', 'TensorFlow 2.21')


def test_serialized_module_is_at_the_selected_version(models):
    """The XlaCallModule op holds a portable artifact of the version select_version picks for the installed JAX
    and TensorFlow, which TensorFlow's own StableHLO deserializer reads; its calling convention TF runs."""
    from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo
    _, exported, kwargs, inputs = models['cnn']
    versions = _tf_call.installed_versions()
    target = _tf_call.select_version(versions.jax_current, versions.jax_minimum, tf_stablehlo.get_current_version(),
                                     tf_stablehlo.get_minimum_version())
    concrete = exported.__call__.get_concrete_function(tf.TensorSpec((None,) + inputs[0].shape[1:]), **kwargs)
    ops = _xla_call_modules(concrete)
    assert len(ops) == 1
    module = ops[0].get_attr('module')
    assert module.startswith(b'ML\xefR') and f'StableHLO_v{target}\x00'.encode() in module[:32]
    assert tf_stablehlo.deserialize_portable_artifact_str(module).startswith(b'ML\xefR')  # TF's reader takes it
    from jax.extend import mlir
    from jax.extend.mlir import ir
    with ir.Context():
        text = str(mlir.deserialize_portable_artifact(module))
    assert 'stablehlo.convolution' in text and 'func.func public @main' in text
    assert ops[0].get_attr('version') <= versions.tf_calling_convention


def test_version_mismatch_is_a_clear_error(models, monkeypatch):
    """A TensorFlow that cannot read what JAX writes gets VersionMismatchError at tracing, not a kernel error."""
    cnn, _, kwargs, (x, _) = models['cnn']
    real = _tf_call.installed_versions()
    too_old = real._replace(tf_name='TensorFlow 1.0.0', tf_current='0.5.0', tf_minimum='0.1.0')
    monkeypatch.setattr(_tf_call, 'installed_versions', lambda: too_old)
    with pytest.raises(_tf_call.VersionMismatchError, match=re.escape(real.jax_name) + '.*TensorFlow 1.0.0') as info:
        Objax2Tf(cnn)(x, **kwargs)
    assert f'{real.jax_minimum} to {real.jax_current}' in str(info.value)
    monkeypatch.setattr(_tf_call, 'installed_versions', lambda: real._replace(tf_calling_convention=1))
    with pytest.raises(_tf_call.VersionMismatchError, match='calling convention version .* up to 1'):
        Objax2Tf(cnn)(x, **kwargs)


_RELOAD = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    out = {}
    for name, path in json.loads(sys.argv[1]).items():
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures['serving_default']
        (key, spec), = serve.structured_input_signature[1].items()
        inputs = np.load(path + '.inputs.npz')
        for i in range(len(inputs.files)):
            result = serve(**{key: tf.constant(inputs[f'x{i}'])})
            out[f'{name}.out{i}'] = result['output_0'].numpy()
        out[f'{name}.spec'] = np.array(spec.shape.as_list(), dtype=object)
        out[f'{name}.nvars'] = np.array(len(loaded.objax_variables))
        for i, v in enumerate(loaded.objax_variables):
            out[f'{name}.var{i}'] = v.numpy()
            out[f'{name}.trainable{i}'] = np.array(v.trainable)
    assert 'objax' not in sys.modules  # the SavedModel is served by TensorFlow alone
    np.savez(sys.argv[2], **out)
''')


@pytest.mark.slow
def test_saved_model_reloads_in_new_process(models, tmp_path):
    """tf.saved_model.save with a serving_default signature of unknown batch size (unknown number of steps for
    the RNN), reloaded by a fresh Python process: same outputs for two sizes, same variables in the same order."""
    paths = {}
    for name, (_, exported, kwargs, inputs) in models.items():
        path = str(tmp_path / name)
        spec = tf.TensorSpec((None,) + inputs[0].shape[1:], tf.float32)
        tf.saved_model.save(exported, path, signatures=exported.__call__.get_concrete_function(spec, **kwargs))
        np.savez(path + '.inputs.npz', **{f'x{i}': x for i, x in enumerate(inputs)})
        paths[name] = path
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    script = tmp_path / 'reload.py'
    script.write_text(_RELOAD)
    result_file = tmp_path / 'result.npz'
    proc = subprocess.run([sys.executable, str(script), json.dumps(paths), str(result_file)], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = np.load(result_file, allow_pickle=True)
    for name, (module, _, kwargs, inputs) in models.items():
        assert list(result[f'{name}.spec'])[0] is None
        for i, x in enumerate(inputs):
            np.testing.assert_allclose(result[f'{name}.out{i}'], _reference(module, x, **kwargs), **TOL)
        variables = list(module.vars())
        assert int(result[f'{name}.nvars']) == len(variables)
        for i, v in enumerate(variables):
            np.testing.assert_array_equal(result[f'{name}.var{i}'], np.asarray(v.value))
            assert bool(result[f'{name}.trainable{i}']) == isinstance(v, objax.TrainVar)


def test_saving_without_signature_keeps_the_traced_call(models, tmp_path):
    """Saving right after calling (no explicit signature) still gives a callable restored object."""
    cnn, exported, _, (x, _) = models['cnn']
    spec = tf.TensorSpec((None, 3, 16, 16), tf.float32)
    exported.__call__.get_concrete_function(spec, training=False)
    tf.saved_model.save(exported, str(tmp_path / 'm'))
    loaded = tf.saved_model.load(str(tmp_path / 'm'))
    np.testing.assert_allclose(loaded(tf.constant(x), training=False).numpy(), _reference(cnn, x, training=False),
                               **TOL)
    assert len(loaded.objax_variables) == len(cnn.vars())



def _xla_call_modules(concrete) -> list:
    """The XlaCallModule ops of a concrete function (searching nested functions)."""
    graphs, found = [concrete.graph], []
    while graphs:
        graph = graphs.pop()
        found.extend(op for op in graph.get_operations() if op.type == 'XlaCallModule')
        graphs.extend(f.graph for f in getattr(graph, '_functions', {}).values() if hasattr(f, 'graph'))
    return found


def _xla_call_module_platforms(concrete) -> list:
    """The platforms listed by the XlaCallModule ops of a concrete function."""
    return [[p.decode() for p in op.get_attr('platforms')] for op in _xla_call_modules(concrete)]


def test_platforms(models, tmp_path):
    """By default the converted code is for this platform (CPU); `platforms` adds others (lowered here without
    their hardware), and the result still runs here and saves."""
    cnn, default, _, (x, _) = models['cnn']
    spec = tf.TensorSpec((None, 3, 16, 16), tf.float32)
    assert _xla_call_module_platforms(default.__call__.get_concrete_function(spec, training=False)) == [['CPU']]
    exported = Objax2Tf(cnn, platforms=('cpu', 'cuda'))
    concrete = exported.__call__.get_concrete_function(spec, training=False)
    assert _xla_call_module_platforms(concrete) == [['CPU', 'CUDA']]
    np.testing.assert_allclose(concrete(tf.constant(x)).numpy(), _reference(cnn, x, training=False), **TOL)
    tf.saved_model.save(exported, str(tmp_path / 'm'), signatures=concrete)
    serve = tf.saved_model.load(str(tmp_path / 'm')).signatures['serving_default']
    np.testing.assert_allclose(serve(tf.constant(x))['output_0'].numpy(), _reference(cnn, x, training=False), **TOL)
    for bad in ('gpu', [], ['cpu', 'metal']):
        with pytest.raises(ValueError, match='platforms must be'):
            Objax2Tf(cnn, platforms=bad)
