"""objax's own code raises no deprecation warning (DeprecationWarning, PendingDeprecationWarning, FutureWarning).

A representative program (sharding on a 2x4 mesh of 8 CPU devices, Parallel, Vectorize, Grad, optimizers, saving
and loading, random numbers, modules, the zoo, DP-SGD, jaxboard) runs in a fresh interpreter where every such
warning is shown ('always') and goes through a hook that looks at the stack of the `warnings.warn` call: walking out
from the innermost frame past library frames (the standard library, site-packages, importlib), the first frame
that is not a library frame decides. If it is in objax's source, objax's code caused the warning, even when the
library attributes it to its own line (jax.nn.one_hot warns with stacklevel=1, orbax warns when objax imports it).
If it is the program itself, the warning is its own. This catches more than pyproject.toml's filter
`error::DeprecationWarning:objax(\\.|$)`, which turns into errors, for the whole suite, only the warnings attributed
to an objax module (JAX's `with mesh:` and jax.sharding attribute deprecations use stacklevel=2, so those are).

`test_the_check_catches_deprecated_calls_from_objax` shows that the check can fail: it runs deprecated JAX calls
compiled as if they were lines of objax/sharding.py and expects exactly those to be reported.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs first in the child: installs the hook, then the program below it runs; at exit the offending warnings are
# written as JSON to sys.argv[1].
_HOOK = r'''
import atexit, importlib.util, json, os, sys, sysconfig, traceback, warnings

_OBJAX = os.path.dirname(importlib.util.find_spec('objax').origin) + os.sep   # found without importing objax
_LIBRARY = tuple(sorted({os.path.realpath(p) + os.sep for k, p in sysconfig.get_paths().items()
                         if k in ('stdlib', 'platstdlib', 'purelib', 'platlib')}))
_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
FOUND = []
for _c in _CATEGORIES:
    warnings.simplefilter('always', _c)


def _culprit(frame):
    """The first frame out from `frame` that is not library code; None if there is none."""
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(_OBJAX):
            return frame
        if not (name.startswith('<frozen ') or os.path.realpath(name).startswith(_LIBRARY)):
            return frame
        frame = frame.f_back
    return None


_show = warnings.showwarning


def _hook(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, _CATEGORIES):
        culprit = _culprit(sys._getframe(1))
        if culprit is not None and culprit.f_code.co_filename.startswith(_OBJAX):
            FOUND.append({'category': category.__name__, 'message': str(message)[:500],
                          'warned_at': f'{filename}:{lineno}',
                          'objax_line': f'{culprit.f_code.co_filename}:{culprit.f_lineno}',
                          'stack': traceback.format_stack(culprit, limit=8)})
    return _show(message, category, filename, lineno, file, line)


warnings.showwarning = _hook


def _report():
    with open(sys.argv[1], 'w') as f:
        json.dump(FOUND, f)


atexit.register(_report)
'''

# The program: objax's features as a user calls them, on 8 CPU devices.
_FEATURES = r'''
import tempfile

import jax
import jax.numpy as jn
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

import objax
from objax.functional.parallel import pmean

assert jax.device_count() == 8, jax.devices()
tmp = tempfile.mkdtemp()
rng = np.random.RandomState(0)
x = rng.normal(size=(16, 6)).astype(np.float32)
labels = rng.randint(0, 4, size=16)


def mlp():
    return objax.nn.Sequential([objax.nn.Linear(6, 16), objax.functional.relu, objax.nn.Dropout(0.5),
                                objax.nn.Linear(16, 4)])


def xent(logits, y):
    return objax.functional.loss.cross_entropy_logits_sparse(logits, y).mean()


# Sharding: a mesh, specs (set_spec, rules, fsdp), shard, a sharded Jit training step, a global batch, unshard.
model = mlp()
objax.sharding.set_spec(model[0].w, P(None, 'model'))
opt = objax.optimizer.Adam(model.vars())
ema = objax.optimizer.ExponentialMovingAverage(model.vars(), momentum=0.9, debias=True)
gv = objax.GradValues(lambda a, b: xent(model(a, training=True), b), model.vars())


def train_op(a, b):
    grads, values = gv(a, b)
    opt(0.01, grads)
    ema()
    return values[0]


vc = model.vars() + opt.vars() + ema.vars()
step = objax.Jit(train_op, vc)
mesh = objax.sharding.make_mesh('data=2,model=4')
objax.sharding.shard(vc, mesh, rules=[('*[[]3](Linear).w', P('model', None))])
batch = objax.util.make_global_batch((x, labels), 'data', mesh=mesh)
for _ in range(2):
    float(step(*batch))
assert objax.sharding.layout(model[0].w) is not None
ckpt = objax.io.ShardedCheckpoint(tempfile.mkdtemp(), keep_ckpts=2, verbose=False)
ckpt.save(vc, 1)
ckpt.restore(vc)
ckpt.close()
objax.sharding.unshard(vc)
float(step(x, labels))
mesh8 = objax.sharding.make_mesh({'data': -1})
objax.sharding.apply_rules(vc, [objax.sharding.fsdp(mesh8)])
objax.sharding.shard(vc, mesh8)
float(step(*objax.util.make_global_batch((x, labels), 'data', mesh=mesh8)))
objax.sharding.unshard(vc)

# Parallel: data-parallel training with Momentum, LARS, SGD and Optax, random streams per device, vc.replicate().
for make_opt in (objax.optimizer.Momentum, objax.optimizer.LARS, objax.optimizer.SGD,
                 lambda v: objax.optimizer.Optax(v, optax.adam(1.0))):
    model = mlp()
    popt = make_opt(model.vars())
    pgv = objax.GradValues(lambda a, b: xent(model(a, training=True), b), model.vars())

    def ptrain(a, b):
        grads, values = pgv(a, b)
        popt(0.01, [pmean(g) for g in grads])
        return pmean(values[0])

    pvc = model.vars() + popt.vars()
    par = objax.Parallel(ptrain, pvc, reduce=lambda v: v[0])
    with pvc.replicate():
        float(par(x, labels))
        float(par(x, labels))
    objax.Parallel(lambda a: model(a, training=False), model.vars())(x)

# Vectorize, Grad, Jit of a module, BatchNorm and convolutions, EMA module, schedules.
model = mlp()
per_example = objax.Vectorize(objax.Grad(lambda a, b: xent(model(a[None], training=False), b[None]), model.vars()),
                              batch_axis=(0, 0))
[np.asarray(g) for g in per_example(x, labels)]
net = objax.nn.Sequential([objax.nn.Conv2D(3, 4, 3), objax.nn.BatchNorm2D(4), objax.functional.relu,
                           objax.nn.ConvTranspose2D(4, 2, 3), objax.nn.GroupNorm2D(2, 1)])
images = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
objax.Jit(lambda a: net(a, training=True), net.vars())(images)
objax.Jit(lambda a: net(a, training=False), net.vars())(images)
objax.functional.max_pool_2d(images, 2), objax.functional.average_pool_2d(images, 2)
objax.functional.upsample_2d(images, 2)
objax.functional.flatten(images)
objax.optimizer.ExponentialMovingAverageModule(net, momentum=0.5)(images, training=False)
objax.optimizer.scheduler.LinearAnnealing(10)(3), objax.optimizer.scheduler.StepDecay(2)(3)
gradient = objax.Grad(lambda a: (net(a, training=False) ** 2).mean(), net.vars(), input_argnums=(0,))
gradient(images)
objax.functional.loss.mean_squared_error(x, x + 1), objax.functional.loss.sigmoid_cross_entropy_logits(x, x > 0)
objax.functional.loss.cross_entropy_logits(x, objax.functional.one_hot(labels, 6))
objax.functional.softmax(x), objax.functional.logsumexp(x), objax.functional.top_k(x, 2)

# The zoo and DP-SGD.
wrn = objax.zoo.wide_resnet.WideResNet(3, 4, depth=4, width=1)
objax.Jit(lambda a: wrn(a, training=True), wrn.vars())(images)
dp_model = mlp()
dp = objax.privacy.dpsgd.PrivateGradValues(lambda a, b: xent(dp_model(a, training=False), b), dp_model.vars(),
                                           noise_multiplier=1.0, l2_norm_clip=1.0, microbatch=4,
                                           batch_axis=(0, 0))
objax.Jit(dp, dp_model.vars() + dp.vars())(x, labels)
objax.privacy.dpsgd.analyze_dp(q=0.01, noise_multiplier=1.1, steps=100)

# Saving and loading: npz, atomic checkpoints, safetensors.
vc = wrn.vars()
objax.io.save_var_collection(os.path.join(tmp, 'vars.npz'), vc)
objax.io.load_var_collection(os.path.join(tmp, 'vars.npz'), vc)
objax.io.save_safetensors(os.path.join(tmp, 'vars.safetensors'), vc)
objax.io.load_safetensors(os.path.join(tmp, 'vars.safetensors'), vc)
tensors = objax.io.read_tensors(os.path.join(tmp, 'vars.safetensors'))
objax.io.load_tensors({k: vc[k] for k in tensors}, tensors, mesh=mesh, vc=vc)
objax.sharding.unshard(vc)
ckpt = objax.io.Checkpoint(os.path.join(tmp, 'ckpt'), keep_ckpts=2, verbose=False)
ckpt.save(vc, 1)
ckpt.save(vc, 2)
ckpt.restore(vc)

# A pretrained-model architecture: generation with a key/value cache.
objax.zoo.gpt2.GPT2(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2).generate(np.zeros((1, 2), np.int32), 3)
# A Llama with LoRA adapters and remat: a training step, sampled generation of prompts of different lengths, and
# saving the adapter and the merged weights (sharded).
llama = objax.zoo.llama.Llama(objax.zoo.llama.LlamaConfig(
    vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
    num_key_value_heads=1, rope_scaling={'rope_type': 'dynamic', 'factor': 2.0}, max_position_embeddings=4),
    remat=True)
adapters = objax.nn.add_lora(llama, 2, 4, ('q_proj', 'v_proj'), dropout=0.1)
objax.Jit(objax.GradValues(lambda x: llama(x, training=True).mean(), adapters), llama.vars())(np.ones((1, 6), np.int32))
llama.generate([np.array([1, 2]), np.array([3])], 3, temperature=1.0, top_k=4, top_p=0.9)
llama.save_adapter(os.path.join(tmp, 'adapter'))
objax.nn.merge_lora(llama)
llama.save_pretrained(os.path.join(tmp, 'llama'), max_shard_size=1000)
objax.zoo.llama.Llama.from_pretrained(os.path.join(tmp, 'llama')).load_adapter(os.path.join(tmp, 'adapter'))

# Random numbers, generators, seeds.
generator = objax.random.Generator(5)
objax.random.normal((3,), generator=generator), objax.random.uniform((3,)), objax.random.randint((3,), 0, 9)
objax.random.truncated_normal((3,), stddev=0.5)
objax.random.DEFAULT_GENERATOR.seed(3)
objax.Jit(lambda: objax.random.normal((2,)), objax.random.DEFAULT_GENERATOR.vars())()

# jaxboard.
with objax.jaxboard.SummaryWriter(os.path.join(tmp, 'tb')) as writer:
    summary = objax.jaxboard.Summary()
    summary.scalar('loss', 1.0)
    summary.text('note', 'hello')
    summary.image('img', np.zeros((3, 4, 4), np.float32))
    writer.write(summary, step=1)

print('features done')
'''


def _run(program: str, tmp_path, devices: int = 1):
    """Runs _HOOK + program in a fresh interpreter; returns (completed process, the warnings found)."""
    report = tmp_path / 'found.json'
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
               PYTHONPATH=os.pathsep.join([str(ROOT / 'src')] + os.environ.get('PYTHONPATH', '').split(os.pathsep)))
    env.pop('PYTHONWARNINGS', None)
    proc = subprocess.run([sys.executable, '-c', _HOOK + program, str(report)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, f'the program failed:\n{proc.stderr[-4000:]}'
    return proc, json.loads(report.read_text())


def _describe(found) -> str:
    return '\n\n'.join(f"{w['category']} from {w['objax_line']} (warned at {w['warned_at']}): {w['message']}\n"
                       + ''.join(w['stack']) for w in found)


def test_objax_features_raise_no_deprecation_warning(tmp_path):
    proc, found = _run(_FEATURES, tmp_path, devices=8)
    assert 'features done' in proc.stdout
    assert not found, 'objax caused deprecation warnings:\n' + _describe(found)


# Deprecated JAX calls (deprecated in both JAX 0.10 and 0.12) compiled as lines of objax/sharding.py: one that JAX
# attributes to its caller (`with mesh:`, stacklevel=2), one that JAX attributes to its own line (jax.nn.one_hot of
# floats), and, from the program itself, a third that is not objax's and must not be reported.
_PLANTED = r'''
import jax
import jax.numpy as jn
import objax.sharding

_planted = """
def planted():
    mesh = jax.sharding.Mesh(jax.devices(), ('x',))
    with mesh:
        pass
    return jax.nn.one_hot(jn.array([1.0]), 3)
"""
space = {'__name__': 'objax.sharding', 'jax': jax, 'jn': jn}
exec(compile(_planted, objax.sharding.__file__, 'exec'), space)
space['planted']()
jax.nn.one_hot(jn.array([2.0]), 3)  # the program's own deprecated call
print('planted done')
'''


def test_the_check_catches_deprecated_calls_from_objax(tmp_path):
    proc, found = _run(_PLANTED, tmp_path)
    assert 'planted done' in proc.stdout
    messages = sorted(w['message'] for w in found)
    assert len(messages) == 2, _describe(found)
    assert messages[0].startswith('`with mesh:` context manager has been deprecated'), _describe(found)
    assert messages[1].startswith('jax.nn.one_hot input should be integer-typed'), _describe(found)
    where = str(ROOT / 'src' / 'objax' / 'sharding.py')
    assert [w['objax_line'].rpartition(':')[0] for w in found] == [where, where], _describe(found)
