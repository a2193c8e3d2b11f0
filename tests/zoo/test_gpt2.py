"""objax.zoo.gpt2.GPT2 against Hugging Face transformers: a tiny GPT-2 saved by save_pretrained, its logits,
greedy tokens and loss computed by transformers (tests/data/pretrained), generation with the key/value cache,
fine-tuning, refused files and loading onto a 2x4 CPU mesh."""

import fnmatch
import json
import shutil

import jax
import jax.numpy as jn
import numpy as np
import pytest
import safetensors.numpy
from _pretrained import DATA, changed_copy, relative_error
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import objax
from objax.io import ShapeMismatchError
from objax.sharding import layout, make_mesh
from objax.zoo.gpt2 import GPT2

FOLDER = DATA / 'gpt2_tiny'
REF = dict(np.load(DATA / 'gpt2_tiny_reference.npz'))
NEW_TOKENS = REF['greedy'].shape[1] - REF['prompt'].shape[1]


@pytest.fixture(scope='module')
def model():
    return GPT2.from_pretrained(FOLDER)


def lm_loss(model, tokens, training=False):
    """transformers' causal language-model loss: each position predicts the next token."""
    logits = model(tokens, training=training)
    return objax.functional.loss.cross_entropy_logits_sparse(logits[:, :-1], tokens[:, 1:]).mean()


def test_logits_equal_transformers_eagerly_and_under_jit(model):
    assert relative_error(model(REF['tokens']), REF['logits']) < 1e-4
    jitted = objax.Jit(lambda x: model(x), model.vars())
    assert relative_error(jitted(REF['tokens']), REF['logits']) < 1e-4
    assert model.n_positions == 64 and len(model.blocks) == 2 and model.wte.w.value.shape == (128, 64)


def test_greedy_generate_equals_transformers(model):
    tokens = model.generate(REF['prompt'], NEW_TOKENS)
    assert tokens.dtype == jn.int32 and tokens.shape == REF['greedy'].shape
    np.testing.assert_array_equal(np.asarray(tokens), REF['greedy'])
    np.testing.assert_array_equal(np.asarray(model.generate(REF['prompt'], 0)), REF['prompt'])


def test_decode_step_is_traced_once(monkeypatch):
    model = GPT2.from_pretrained(FOLDER)
    calls = []
    block_class = type(model.blocks[0])
    original = block_class.__call__

    def counting(self, x, training, cache=None):
        calls.append(x.shape[1])
        return original(self, x, training, cache)

    monkeypatch.setattr(block_class, '__call__', counting)
    np.testing.assert_array_equal(np.asarray(model.generate(REF['prompt'], NEW_TOKENS)), REF['greedy'])
    prompt_length = REF['prompt'].shape[1]
    assert calls == [prompt_length] * 2 + [1] * 2  # one trace of the prompt and one of the decode step, per block
    model.generate(REF['prompt'][:, ::-1], NEW_TOKENS)  # same shapes: no new trace
    assert len(calls) == 4


def test_sampling_is_reproducible_and_differs_from_greedy(model):
    runs = [model.generate(REF['prompt'], NEW_TOKENS, temperature=1.5, generator=objax.random.Generator(7))
            for _ in range(2)]
    np.testing.assert_array_equal(np.asarray(runs[0]), np.asarray(runs[1]))
    np.testing.assert_array_equal(np.asarray(runs[0][:, :REF['prompt'].shape[1]]), REF['prompt'])
    assert not np.array_equal(np.asarray(runs[0]), REF['greedy'])
    other = model.generate(REF['prompt'], NEW_TOKENS, temperature=1.5, generator=objax.random.Generator(8))
    assert not np.array_equal(np.asarray(other), np.asarray(runs[0]))
    assert int(jn.max(runs[0])) < 128 and int(jn.min(runs[0])) >= 0
    objax.random.DEFAULT_GENERATOR.seed(3)
    first = model.generate(REF['prompt'], 4, temperature=1.0)
    objax.random.DEFAULT_GENERATOR.seed(3)
    np.testing.assert_array_equal(np.asarray(model.generate(REF['prompt'], 4, temperature=1.0)), np.asarray(first))


def test_generate_refuses_bad_arguments(model):
    with pytest.raises(ValueError, match='exceed the 64 positions'):
        model.generate(REF['prompt'], 60)
    with pytest.raises(ValueError, match='prompt must be integer token ids'):
        model.generate(REF['prompt'].astype(np.float32), 2)
    with pytest.raises(ValueError, match='prompt must be integer token ids'):
        model.generate(REF['prompt'][0], 2)
    with pytest.raises(ValueError, match='max_new_tokens'):
        model.generate(REF['prompt'], -1)
    with pytest.raises(ValueError, match='temperature'):
        model.generate(REF['prompt'], 2, temperature=-1.0)
    with pytest.raises(ValueError, match='65 positions'):
        model(np.zeros((1, 65), np.int32))


def test_fine_tuning_lowers_the_loss_from_the_transformers_loss():
    model = GPT2.from_pretrained(FOLDER, dropout=0.1)
    tokens = jn.asarray(REF['tokens'])
    initial = float(lm_loss(model, tokens))
    assert abs(initial - float(REF['loss'])) < 1e-4
    opt = objax.optimizer.Adam(model.vars())
    grad_values = objax.GradValues(lambda x: lm_loss(model, x, training=True), model.vars())

    def train_op(x):
        grads, values = grad_values(x)
        opt(1e-3, grads)
        return values[0]

    train_op = objax.Jit(train_op, model.vars() + opt.vars())
    losses = [float(train_op(tokens)) for _ in range(20)]
    final = float(lm_loss(model, tokens))
    assert final < 0.8 * initial and losses[-1] < losses[0], (initial, losses, final)


def test_head_and_token_embedding_are_one_variable_with_both_gradients(model):
    train_vars = model.vars().subset(objax.TrainVar)
    assert len(train_vars) == 4 + 16 * 2  # wte, wpe, ln_f (2) and 16 per block: no separate head
    assert [k for k in train_vars.keys() if 'wte' in k] == ['(GPT2).wte(Embedding).w']
    tokens = jn.asarray(REF['tokens']) % 64  # rows 64..127 of the table are used by the head only
    grads, _ = objax.GradValues(lambda x: lm_loss(model, x), model.vars())(tokens)
    grad = np.asarray(grads[list(model.vars().keys()).index('(GPT2).wte(Embedding).w')])
    # The head's share alone: the gradient of the loss through h @ w.T for the final hidden states h.
    x = model.wte(tokens) + model.wpe(jn.arange(tokens.shape[1]))
    for block in model.blocks:
        x, _ = block(x, False)
    hidden = model.ln_f(x)
    head = np.asarray(jax.grad(lambda w: objax.functional.loss.cross_entropy_logits_sparse(
        (hidden @ w.T)[:, :-1], tokens[:, 1:]).mean())(model.wte.w.value))
    embedding = grad - head
    assert np.abs(head[64:]).max() > 1e-4  # the head reaches every row
    np.testing.assert_allclose(embedding[64:], 0, atol=1e-6)  # the lookup reaches only the rows it reads
    assert np.abs(embedding[np.unique(np.asarray(tokens[:, :-1]))]).max() > 1e-4


def write_copy(tmp_path, change=None, config=None):
    """A copy of the fixture folder with its tensors (and config) changed."""
    return changed_copy(FOLDER, tmp_path / 'gpt2', change, config)


@pytest.mark.parametrize('change, error, expected', [
    (lambda t: t.pop('transformer.h.1.ln_2.bias'), ValueError,
     r"missing from .*'transformer\.h\.1\.ln_2\.bias' \(expected for \(GPT2\)\.blocks\(ModuleList\)\[1\]"
     r"\(PreNormBlock\)\.norm2\(LayerNorm\)\.beta\)"),
    (lambda t: t.update({'transformer.h.0.extra': np.zeros(3, np.float32)}), ValueError,
     r"unexpected .*'transformer\.h\.0\.extra' \(3,\) in '.*model\.safetensors'"),
    (lambda t: t.update({'transformer.h.1.mlp.c_fc.weight': np.zeros((64, 200), np.float32)}), ShapeMismatchError,
     r"'transformer\.h\.1\.mlp\.c_fc\.weight' in '.*model\.safetensors': shape \(64, 200\), expected \(64, 256\) "
     r"for \(GPT2\)\.blocks\(ModuleList\)\[1\]\(PreNormBlock\)\.fc1\(Linear\)\.w"),
    (lambda t: t.update({'transformer.h.0.attn.c_attn.weight': np.zeros((64, 190), np.float32)}),
     ShapeMismatchError, r"'transformer\.h\.0\.attn\.c_attn\.weight' .* shape \(64, 190\), which its transform "
                         r"cannot take \(the last axis should hold 3 parts of 64, i\.e\. 192\); .*query\(Linear\)\.w "
                         r"is \(64, 64\)$"),
    (lambda t: t.update({'lm_head.weight': t['transformer.wte.weight'] + 1}), ValueError,
     r"'lm_head\.weight' \(128, 64\) .* differs from 'transformer\.wte\.weight'"),
])
def test_refused_files_name_the_tensor(tmp_path, change, error, expected):
    with pytest.raises(error, match=expected):
        GPT2.from_pretrained(write_copy(tmp_path, change))


@pytest.mark.parametrize('config, expected', [
    ({'activation_function': 'relu'}, r"activation_function 'relu' \(supported: gelu_new"),
    ({'n_inner': 100}, 'n_inner 100'),
    ({'scale_attn_by_inverse_layer_idx': True}, 'scale_attn_by_inverse_layer_idx True'),
    ({'add_cross_attention': True}, 'add_cross_attention True'),
    ({'tie_word_embeddings': False}, r'tie_word_embeddings False \(supported: True\)'),
])
def test_unsupported_configurations_are_named(tmp_path, config, expected):
    with pytest.raises(ValueError, match=expected):
        GPT2.from_pretrained(write_copy(tmp_path, config=config))


def test_other_layouts_load(tmp_path):
    """GPT2Model's names (no 'transformer.' prefix), the stored attention masks, a tied lm_head, a sharded index."""
    def untied_names(t):
        renamed = {k.removeprefix('transformer.'): v for k, v in t.items()}
        t.clear()
        t.update(renamed)
        t.update({'h.0.attn.bias': np.tril(np.ones((1, 1, 64, 64), np.float32)), 'h.1.attn.masked_bias':
                  np.array(-1e4, np.float32), 'lm_head.weight': renamed['wte.weight'].copy()})

    model = GPT2.from_pretrained(write_copy(tmp_path, untied_names))
    assert relative_error(model(REF['tokens']), REF['logits']) < 1e-4
    tensors = safetensors.numpy.load_file(str(FOLDER / 'model.safetensors'))
    sharded = tmp_path / 'sharded'
    shutil.copytree(FOLDER, sharded)
    (sharded / 'model.safetensors').unlink()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[:len(names) // 2], names[len(names) // 2:]), 1):
        file = f'model-0000{i}-of-00002.safetensors'
        safetensors.numpy.save_file({k: tensors[k] for k in part}, str(sharded / file))
        weight_map.update(dict.fromkeys(part, file))
    (sharded / 'model.safetensors.index.json').write_text(json.dumps({'metadata': {}, 'weight_map': weight_map}))
    assert relative_error(GPT2.from_pretrained(sharded)(REF['tokens']), REF['logits']) < 1e-4


RULES = [('*.attn(MultiHeadAttention).query(Linear).w', P(None, 'model')),
         ('*.attn(MultiHeadAttention).key(Linear).w', P(None, 'model')),
         ('*.attn(MultiHeadAttention).value(Linear).w', P(None, 'model')),
         ('*.attn(MultiHeadAttention).out(Linear).w', P('model', None)),
         ('*.fc1(Linear).w', P(None, 'model')), ('*.fc1(Linear).b', P('model')),
         ('*.fc2(Linear).w', P('model', None)), ('(GPT2).wte(Embedding).w', P('model', None))]


def test_loading_onto_a_mesh_keeps_the_logits():
    mesh = make_mesh('data=2,model=4')
    model = GPT2.from_pretrained(FOLDER, mesh=mesh, rules=RULES)
    for name, var in model.vars().subset(objax.TrainVar).items():
        spec = next((s for pattern, s in RULES if fnmatch.fnmatchcase(name, pattern)), P())
        expected = NamedSharding(mesh, spec)
        assert var.value.sharding.is_equivalent_to(expected, var.value.ndim), name
        assert layout(var) is not None, name
    w = model.blocks[0].fc1.w.value
    assert {s.data.shape for s in w.addressable_shards} == {(64, 64)}  # a quarter of (64, 256) on each device
    assert relative_error(model(REF['tokens']), REF['logits']) < 1e-4
    jitted = objax.Jit(lambda x: model(x), model.vars())
    assert relative_error(jitted(REF['tokens']), REF['logits']) < 1e-4
    np.testing.assert_array_equal(np.asarray(model.generate(REF['prompt'], NEW_TOKENS)), REF['greedy'])
    assert model.blocks[1].fc2.w.value.sharding.is_equivalent_to(NamedSharding(mesh, P('model')), 2)
    assert not model.vars().subset(objax.RandomState)  # without dropout the model holds no random key


def test_fine_tuning_with_dropout_on_a_mesh():
    mesh = make_mesh('data=2,model=4')
    generator = objax.random.DEFAULT_GENERATOR.key
    try:
        model = GPT2.from_pretrained(FOLDER, mesh=mesh, rules=RULES, dropout=0.1)
        assert generator.value.sharding.is_equivalent_to(NamedSharding(mesh, P()), 1)  # with the model
        grad_values = objax.GradValues(lambda x: lm_loss(model, x, training=True), model.vars())
        opt = objax.optimizer.Adam(model.vars())

        def train_op(x):
            grads, values = grad_values(x)
            opt(1e-3, grads)
            return values[0]

        train_op = objax.Jit(train_op, model.vars() + opt.vars())
        losses = [float(train_op(REF['tokens'])) for _ in range(3)]
        assert losses[-1] < losses[0]
        assert model.blocks[0].fc1.w.value.sharding.is_equivalent_to(NamedSharding(mesh, P(None, 'model')), 2)
    finally:
        objax.sharding.unshard(objax.random.DEFAULT_GENERATOR.vars())  # the other tests use one device


def test_constructor_checks():
    with pytest.raises(ValueError, match='n_embd .* multiple of n_head'):
        GPT2(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match='n_layer must be a positive integer'):
        GPT2(n_layer=0)
    with pytest.raises(ValueError, match='dropout'):
        GPT2(vocab_size=8, n_positions=4, n_embd=8, n_layer=1, n_head=2, dropout=1.5)
    with pytest.raises(FileNotFoundError, match='config.json'):
        GPT2.from_pretrained(DATA)
