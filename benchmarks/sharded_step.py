"""Sharded training step on 8 virtual CPU devices: objax (objax.sharding + Jit) vs hand-written jax.jit with
NamedShardings, same model, same mesh, same layouts, same run, interleaved.

The model is the transformer language model of examples/train_sharded.py trained with Adam. The objax step is
that example's code: GradValues + Adam in an objax.Jit, variables laid out by objax.sharding.shard. The
reference is one jax.jit over a dict of arrays: the same forward pass and Adam update written by hand, with
in_shardings/out_shardings built from the same PartitionSpecs and the state donated (objax.Jit donates too).
Meshes: FSDP over the 8 devices ('data'=8) and data + tensor parallel ('data'=2, 'model'=4). Every step is
waited for (step latency).
Prints median step times over interleaved repeats, the ratio objax / hand-written (target <= 1.05) of the medians
and of the fastest repeats (the steadier one on a busy machine), how far the two runs' parameters ended apart,
and the bytes of variables each device holds against the total.
Usage: python benchmarks/sharded_step.py [--batch 64] [--width 128] [--depth 2] [--steps 20] [--repeats 7]
"""

import os

os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jn  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402

import objax  # noqa: E402
from objax.sharding import fsdp, make_mesh, shard  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'examples'))
from train_sharded import TransformerLM, corpus, tensor_parallel_rules  # noqa: E402

B1, B2, EPS, LR, VOCAB, SEQ = 0.9, 0.999, 1e-8, 1e-3, 64, 32


def hand_forward(p: dict, tokens, depth: int, heads: int):
    """The TransformerLM forward pass over its variables by name, in plain jax.numpy."""
    def norm(x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + 1e-5) * p[prefix + '.gain'] + p[prefix + '.bias']

    def linear(x, prefix):
        return jn.dot(x, p[prefix + '(Linear).w']) + p[prefix + '(Linear).b']

    x = p['(TransformerLM).embed'][tokens] + p['(TransformerLM).position'][:tokens.shape[1]]
    n, s, d = x.shape
    for i in range(depth):
        b = f'(TransformerLM).blocks(ModuleList)[{i}](Block)'
        h = norm(x, b + '.norm1(LayerNorm)')
        q, k, v = (linear(h, f'{b}.{name}').reshape(n, s, heads, d // heads) for name in 'qkv')
        scores = jn.einsum('nqhc,nkhc->nhqk', q, k) / np.sqrt(d // heads)
        scores = jn.where(jn.tril(jn.ones((s, s), bool)), scores, -1e9)
        x = x + linear(jn.einsum('nhqk,nkhc->nqhc', jax.nn.softmax(scores, -1), v).reshape(n, s, d), b + '.o')
        x = x + linear(jax.nn.relu(linear(norm(x, b + '.norm2(LayerNorm)'), b + '.up')), b + '.down')
    return linear(norm(x, '(TransformerLM).norm(LayerNorm)'), '(TransformerLM).head')


def hand_loss(p, tokens, depth, heads):
    logits = hand_forward(p, tokens[:, :-1], depth, heads)
    picked = jn.take_along_axis(logits, tokens[:, 1:, None], -1)[..., 0]
    return (jax.scipy.special.logsumexp(logits, -1) - picked).mean()


def run_mesh(args, mesh_axes: str) -> dict:
    mesh = make_mesh(mesh_axes)
    objax.random.DEFAULT_GENERATOR.seed(0)
    model = TransformerLM(VOCAB, SEQ, args.width, args.depth, args.heads)
    opt = objax.optimizer.Adam(model.vars())
    vc = model.vars() + opt.vars()
    initial = {k: v.value for k, v in model.vars().items()}
    rules = (tensor_parallel_rules() if 'model' in mesh.shape else []) + [fsdp(mesh, 'data')]
    layouts = shard(vc, mesh, rules=rules)
    gv = objax.GradValues(lambda t: objax.functional.loss.cross_entropy_logits_sparse(
        model(t[:, :-1]), t[:, 1:]).mean(), model.vars())

    def train_op(tokens):
        grads, (loss,) = gv(tokens)
        opt(LR, grads)
        return loss

    step = objax.Jit(train_op, gv.vars() + opt.vars())
    tokens = objax.util.make_global_batch(corpus(args.batch, SEQ, VOCAB, seed=1), 'data', mesh=mesh)

    # Hand-written: the same values and layouts, one jax.jit.
    specs = {k: layouts[k].spec for k in initial}
    shardings = {k: NamedSharding(mesh, s) for k, s in specs.items()}
    state = {'p': jax.device_put(initial, shardings), 'm': jax.device_put(jax.tree.map(jn.zeros_like, initial),
             shardings), 'v': jax.device_put(jax.tree.map(jn.zeros_like, initial), shardings),
             't': jax.device_put(jn.zeros((), jn.uint32), NamedSharding(mesh, jax.sharding.PartitionSpec()))}
    state_shardings = {'p': shardings, 'm': shardings, 'v': shardings, 't': state['t'].sharding}

    def adam_step(state, tokens):
        loss, g = jax.value_and_grad(hand_loss)(state['p'], tokens, args.depth, args.heads)
        t = state['t'] + 1
        tf = t.astype(jn.float32)
        lr = LR * jn.sqrt(1 - B2 ** tf) / (1 - B1 ** tf)
        m = jax.tree.map(lambda m, g: B1 * m + (1 - B1) * g, state['m'], g)
        v = jax.tree.map(lambda v, g: B2 * v + (1 - B2) * jn.square(g), state['v'], g)
        p = jax.tree.map(lambda p, m, v: p - lr * m * jn.reciprocal(jn.sqrt(v + EPS)), state['p'], m, v)
        return {'p': p, 'm': m, 'v': v, 't': t}, loss

    # Donating the state, as objax.Jit does by default (new values written in place of the old ones).
    jax_step = jax.jit(adam_step, in_shardings=(state_shardings, tokens.sharding),
                       out_shardings=(state_shardings, None), donate_argnums=(0,))
    box = {'state': state}

    def run_jax():
        box['state'], loss = jax_step(box['state'], tokens)
        return loss

    def timed(fn) -> float:
        jax.block_until_ready(fn())
        start = time.perf_counter()
        for _ in range(args.steps):
            jax.block_until_ready(fn())
        return (time.perf_counter() - start) / args.steps

    objax_loss, jax_loss = float(step(tokens)), float(run_jax())
    objax_times, jax_times = [], []
    for r in range(args.repeats):  # interleaved, alternating which goes first
        if r % 2:
            jax_times.append(timed(run_jax))
        objax_times.append(timed(lambda: step(tokens)))
        if not r % 2:
            jax_times.append(timed(run_jax))
    diff = max(float(jn.abs(model.vars()[k].value - box['state']['p'][k]).max()) for k in initial)
    assert abs(objax_loss - jax_loss) < 1e-4 and diff < 1e-3, (objax_loss, jax_loss, diff)
    # Layout kept: no variable drifted to another layout over all the steps.
    for k, s in layouts.items():
        assert vc[k].value.sharding.is_equivalent_to(s, vc[k].value.ndim), k
    arrays = list({id(v.value): v.value for v in vc}.values())  # each variable once (a TrainRef is its TrainVar)
    split = [x for x in arrays if not x.sharding.is_fully_replicated]
    return {'objax_ms': 1e3 * statistics.median(objax_times), 'jax_ms': 1e3 * statistics.median(jax_times),
            'objax_min': 1e3 * min(objax_times), 'jax_min': 1e3 * min(jax_times),
            'diff': diff, 'total': sum(x.nbytes for x in arrays),
            'per_device': sum(x.addressable_shards[0].data.nbytes for x in arrays),
            'split_total': sum(x.nbytes for x in split),
            'split_per_device': sum(x.addressable_shards[0].data.nbytes for x in split),
            'nvars': len(arrays), 'nsplit': len(split)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--width', type=int, default=128)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--mesh', action='append', help='mesh axes (repeatable); default: data=8 and data=2,model=4')
    args = parser.parse_args()
    assert jax.device_count() == 8, jax.device_count()
    print(f'TransformerLM width {args.width} depth {args.depth} heads {args.heads}, batch {args.batch} x {SEQ} '
          f'tokens, Adam; 8 CPU devices on {os.cpu_count()} cores; median of {args.repeats} x {args.steps} steps')
    print(f'{"mesh":>16} | {"objax ms":>8} | {"jax.jit ms":>10} | {"ratio":>5} | {"min ratio":>9} | '
          f'{"|param diff|":>12} | '
          f'{"variable bytes per device / total":>34} | {"split vars: per device x 8 / total":>35}')
    for axes in args.mesh or ['data=8', 'data=2,model=4']:
        r = run_mesh(args, axes)
        print(f'{axes:>16} | {r["objax_ms"]:>8.3f} | {r["jax_ms"]:>10.3f} | {r["objax_ms"] / r["jax_ms"]:>5.3f} | '
              f'{r["objax_min"] / r["jax_min"]:>9.3f} | '
              f'{r["diff"]:>12.1e} | {r["per_device"]:>15,d} / {r["total"]:>15,d} | '
              f'{r["nsplit"]:>3d} of {r["nvars"]:>3d}: {8 * r["split_per_device"]:>10,d} / {r["split_total"]:>10,d}',
              flush=True)


if __name__ == '__main__':
    main()
