"""Trains a small transformer language model with its variables sharded over a device mesh (objax.sharding).

Usage: python examples/train_sharded.py [--mesh data=2,model=4 | --mesh data=8] [--logdir runs/train_sharded]
                                        [--save-every N]

The corpus is synthetic: each sequence counts modulo the vocabulary size with its own stride
(e.g. 3 10 17 24 ...), so the model has to infer the stride from the context; the final line prints the
next-token accuracy on held-out sequences. `--mesh data=N` (the default: all devices) is fully sharded data
parallel: every variable and its Adam slots are split N ways on one dimension and the batch is split N ways.
`--mesh data=2,model=4` adds tensor parallelism: attention heads and the MLP's hidden units are split over
'model' (Megatron-style column/row splits), the batch over 'data', and the remaining variables are split over
'data'. On CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=8` gives 8 devices. Every epoch (and every
N steps with --save-every N) is saved with objax.io.ShardedCheckpoint in --logdir/sharded (each process writes
its own shards), and every epoch is logged for TensorBoard in --logdir/tb; running the command again resumes
exactly from the newest checkpoint, on any mesh. SIGTERM checkpoints and exits 0 (all processes at the same step).
Several processes: launched by Open MPI (`mpirun -np 2 python examples/train_sharded.py`) or Slurm (`srun`), the
processes find each other by themselves (jax.distributed reads the launcher's environment); elsewhere, pass
--coordinator HOST:PORT --num-processes N --process-id I to each.
"""

import argparse
import os

import jax
import jax.numpy as jn
import numpy as np
from common import ExampleRun, add_compile_cache_flag, add_run_flags, use_compile_cache, variables_digest
from jax.sharding import PartitionSpec as P

import objax
from objax.sharding import fsdp, make_mesh, shard

__all__ = ['TransformerLM', 'tensor_parallel_rules', 'corpus']


class LayerNorm(objax.Module):
    """Normalizes the last axis to zero mean and unit variance, then scales and shifts it."""

    def __init__(self, width: int, eps: float = 1e-5):
        self.gain = objax.TrainVar(jn.ones(width))
        self.bias = objax.TrainVar(jn.zeros(width))
        self.eps = eps

    def __call__(self, x):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.gain.value + self.bias.value


class Block(objax.Module):
    """Pre-norm transformer block: causal multi-head self-attention, then a 4x-wide ReLU MLP."""

    def __init__(self, width: int, heads: int):
        self.heads = heads
        self.norm1, self.norm2 = LayerNorm(width), LayerNorm(width)
        self.q, self.k, self.v, self.o = (objax.nn.Linear(width, width) for _ in range(4))
        self.up, self.down = objax.nn.Linear(width, 4 * width), objax.nn.Linear(4 * width, width)

    def __call__(self, x):
        n, s, d = x.shape
        h = self.norm1(x)

        def split(t):
            return t.reshape(n, s, self.heads, d // self.heads)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        scores = jn.einsum('nqhc,nkhc->nhqk', q, k) / np.sqrt(d // self.heads)
        scores = jn.where(jn.tril(jn.ones((s, s), bool)), scores, -1e9)
        attended = jn.einsum('nhqk,nkhc->nqhc', jax.nn.softmax(scores, -1), v).reshape(n, s, d)
        x = x + self.o(attended)
        return x + self.down(objax.functional.relu(self.up(self.norm2(x))))


class TransformerLM(objax.Module):
    """(N, S) int tokens -> (N, S, vocab) logits of the next token."""

    def __init__(self, vocab: int, seq: int, width: int, depth: int, heads: int):
        self.embed = objax.TrainVar(objax.random.normal((vocab, width), stddev=0.02))
        self.position = objax.TrainVar(objax.random.normal((seq, width), stddev=0.02))
        self.blocks = objax.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = LayerNorm(width)
        self.head = objax.nn.Linear(width, vocab)

    def __call__(self, tokens):
        x = self.embed.value[tokens] + self.position.value[:tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def tensor_parallel_rules(axis: str = 'model') -> list:
    """Attention heads and MLP hidden units split over `axis`: q/k/v/up by output column, o/down by input row
    (so each block needs one all-reduce forward and one backward)."""
    column, row = P(None, axis), P(axis, None)
    return [('*.[qkv](Linear).w', column), ('*.[qkv](Linear).b', P(axis)), ('*.o(Linear).w', row),
            ('*.up(Linear).w', column), ('*.up(Linear).b', P(axis)), ('*.down(Linear).w', row)]


def corpus(n: int, seq: int, vocab: int, seed: int) -> np.ndarray:
    """(n, seq + 1) int32 sequences: start + stride * position modulo vocab, start and stride drawn at random."""
    rng = np.random.RandomState(seed)
    start, stride = rng.randint(0, vocab, (n, 1)), rng.randint(1, vocab, (n, 1))
    return ((start + stride * np.arange(seq + 1)) % vocab).astype(np.int32)


def cluster_size() -> int:
    """How many processes Open MPI (mpirun) or Slurm (srun) started in this job step; 1 when neither did."""
    for name in ('OMPI_COMM_WORLD_SIZE', 'SLURM_STEP_NUM_TASKS'):
        if os.environ.get(name, '').isdigit():
            return int(os.environ[name])
    return 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--mesh', default='', help='mesh axes, e.g. data=2,model=4 (default: data=<all devices>)')
    parser.add_argument('--logdir', default='runs/train_sharded', help='sharded checkpoints and TensorBoard logs')
    parser.add_argument('--epochs', type=int, default=6, help='total number of epochs (a resumed run continues)')
    parser.add_argument('--steps', type=int, default=60, help='steps per epoch')
    parser.add_argument('--batch', type=int, default=32, help='global batch (sequences per step)')
    parser.add_argument('--seq', type=int, default=24)
    parser.add_argument('--vocab', type=int, default=32)
    parser.add_argument('--width', type=int, default=64)
    parser.add_argument('--depth', type=int, default=2)
    parser.add_argument('--heads', type=int, default=4)
    parser.add_argument('--lr', type=float, default=3e-3, help='Adam learning rate')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--coordinator', default='', help='HOST:PORT of process 0 (several processes)')
    parser.add_argument('--num-processes', type=int, default=1)
    parser.add_argument('--process-id', type=int, default=0)
    parser.add_argument('--cluster', choices=['auto', 'off'], default='auto',
                        help='auto: join the other processes when started by mpirun or srun with several tasks')
    add_run_flags(parser)
    add_compile_cache_flag(parser)
    args = parser.parse_args()
    if min(args.epochs, args.steps, args.batch, args.seq, args.width, args.depth, args.heads) < 1:
        parser.error('--epochs, --steps, --batch, --seq, --width, --depth and --heads must be positive')
    launched = cluster_size() if args.cluster == 'auto' else 1
    if args.coordinator or launched > 1:
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # how CPU devices of processes talk
        if args.coordinator:
            jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        else:  # the coordinator address, process count and index come from the launcher's environment
            jax.distributed.initialize()
    # Not with several CPU processes: under JAX 0.12.1 their second run hung in its first step with the programs
    # read from the persistent compilation cache (gloo collectives); JAX 0.10.2 ran fine.
    cpu_processes = bool(args.coordinator or launched > 1) and os.environ.get('JAX_PLATFORMS', '') == 'cpu'
    use_compile_cache(args.no_compile_cache or cpu_processes)

    try:
        mesh = make_mesh(args.mesh or {'data': -1})
    except ValueError as e:
        parser.error(f'--mesh: {e}')
    if 'data' not in mesh.shape or args.batch % mesh.shape['data']:
        parser.error(f'--mesh needs a "data" axis whose size divides --batch {args.batch}; got {dict(mesh.shape)}')
    objax.random.DEFAULT_GENERATOR.seed(args.seed)
    model = TransformerLM(args.vocab, args.seq, args.width, args.depth, args.heads)
    opt = objax.optimizer.Adam(model.vars())
    vc = model.vars() + opt.vars()
    rules = (tensor_parallel_rules() if 'model' in mesh.shape else []) + [fsdp(mesh, 'data')]
    try:
        layouts = shard(vc, mesh, rules=rules)
    except ValueError as e:
        parser.error(f'the model does not fit --mesh {args.mesh}: {e}')
    lead = jax.process_index() == 0
    say = print if lead else lambda *a, **k: None
    split = sum(not s.is_fully_replicated for s in layouts.values())
    say(f'Mesh {dict(mesh.shape)} over {mesh.devices.size} devices ({jax.process_count()} processes): '
          f'{split} of {len(layouts)} variables split')

    def loss(tokens):
        logits = model(tokens[:, :-1])
        return objax.functional.loss.cross_entropy_logits_sparse(logits, tokens[:, 1:]).mean()

    gv = objax.GradValues(loss, model.vars())

    def train_op(tokens, lr):
        grads, (value,) = gv(tokens)
        opt(lr, grads)
        return value

    train_op = objax.Jit(train_op, gv.vars() + opt.vars())
    predict = objax.Jit(lambda tokens: model(tokens).argmax(-1), model.vars())

    def global_batch(tokens):
        rows = len(tokens) // jax.process_count()
        mine = tokens[jax.process_index() * rows:(jax.process_index() + 1) * rows]
        return objax.util.make_global_batch(mine, 'data', mesh=mesh)

    test = corpus(256, args.seq, args.vocab, seed=10_000 + args.seed)

    def accuracy() -> float:
        predicted = objax.util.gather_to_host(predict(global_batch(test[:, :-1])))
        return float((predicted[:, 2:] == test[:, 3:]).mean())  # the stride is known from 2 tokens on

    # Each epoch's data follows from its number, so the saved (epoch, step) is all a resumed run needs.
    with ExampleRun(args.logdir, vc, args.epochs, args.steps, 'lm', args.save_every, sharded=True) as run:
        for epoch in run.epochs():
            data = corpus(args.steps * args.batch, args.seq, args.vocab, seed=args.seed * 1000 + epoch)
            for step in run.steps():
                lr = np.float32(args.lr * min(1, (run.global_step + 1) / args.steps))  # 1-epoch warmup
                run.summary.scalar('losses/xe', float(train_op(global_batch(data[step * args.batch:][:args.batch]),
                                                               lr)))
            run.summary.scalar('accuracy/test', accuracy())
    digest = variables_digest(run.vc)
    say(f'Variables: sha256 {digest}')
    say(f'Next-token accuracy: {accuracy():.2%} on {test[:, 3:].size} held-out tokens')


if __name__ == '__main__':
    main()
