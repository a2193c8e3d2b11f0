"""objax.zoo.llama.Llama against Hugging Face transformers and peft: tiny Llama (grouped-query attention, llama3
rope scaling, untied head) and Qwen2 (q/k/v biases, tied head) models saved by save_pretrained, their logits,
greedy tokens and loss computed by transformers, a PEFT adapter and its logits (tests/data/pretrained); config
layouts, sharded and bfloat16 loading, refused directories, saving back, and loading onto a 2x4 CPU mesh."""

import fnmatch
import importlib.util
import json
import shutil

import jax.numpy as jn
import numpy as np
import pytest
import safetensors.numpy
from _pretrained import DATA, adam_steps, changed_copy, relative_error
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import objax
from objax.io import ShapeMismatchError
from objax.sharding import layout, make_mesh
from objax.zoo.llama import Llama, LlamaConfig

REF = {name: dict(np.load(DATA / f'{name}_reference.npz')) for name in ('llama_tiny', 'qwen2_tiny')}
ADAPTER = DATA / 'llama_tiny_adapter'
NEW = 10


@pytest.fixture(scope='module')
def models():
    return {name: Llama.from_pretrained(DATA / name) for name in REF}


def legacy_folder(tmp_path):
    """llama_tiny's weights next to the config.json layout published checkpoints carry."""
    folder = tmp_path / 'legacy'
    shutil.copytree(DATA / 'llama_tiny_legacy_config', folder)
    shutil.copy(DATA / 'llama_tiny' / 'model.safetensors', folder)
    return folder


def lm_loss(model, tokens):
    logits = model(tokens)
    return objax.functional.loss.cross_entropy_logits_sparse(logits[:, :-1], tokens[:, 1:]).mean()


@pytest.mark.parametrize('name', sorted(REF))
def test_logits_equal_transformers_eagerly_and_under_jit(models, name):
    model, ref = models[name], REF[name]
    assert relative_error(model(ref['tokens']), ref['logits']) < 1e-4
    assert relative_error(model(ref['long_tokens']), ref['long_logits']) < 1e-4  # beyond the original 32
    jitted = objax.Jit(lambda x: model(x), model.vars())
    assert relative_error(jitted(ref['tokens']), ref['logits']) < 1e-4
    assert relative_error(jitted(ref['long_tokens']), ref['long_logits']) < 1e-4
    assert abs(float(lm_loss(model, jn.asarray(ref['tokens']))) - float(ref['loss'])) < 1e-4


@pytest.mark.parametrize('name', sorted(REF))
def test_left_padded_logits_use_each_rows_own_positions(models, name):
    model, ref = models[name], REF[name]
    logits = np.asarray(model(ref['padded_tokens'], attention_mask=ref['padded_mask']))
    logits = np.where(ref['padded_mask'][..., None] > 0, logits, 0)  # the fixture is zero at the pads
    assert relative_error(logits, ref['padded_logits']) < 1e-4


def test_config_layouts_and_the_sharded_index_give_the_same_logits(tmp_path):
    ref, legacy = REF['llama_tiny'], legacy_folder(tmp_path)
    for folder in (legacy, DATA / 'llama_tiny_sharded'):
        model = Llama.from_pretrained(folder)
        assert model.config.rope_type == 'llama3' and model.config.rope_scaling['factor'] == 8.0
        assert relative_error(model(ref['tokens']), ref['logits']) < 1e-4
        assert relative_error(objax.Jit(model, model.vars())(ref['long_tokens']),
                              ref['long_logits']) < 1e-4
    legacy, new = (LlamaConfig.from_pretrained(f) for f in (legacy, DATA / 'llama_tiny'))
    np.testing.assert_array_equal(legacy.frequencies(), new.frequencies())
    np.testing.assert_allclose(new.frequencies(), [1.0, 0.09584, 0.0125, 3.953e-3, 1.25e-3, 3.953e-4, 1.25e-4,
                                                   3.953e-5], rtol=2e-4)  # the README's llama3 frequencies


def test_structure_heads_and_tied_head(models):
    llama, qwen = models['llama_tiny'], models['qwen2_tiny']
    attn = llama.layers[0].self_attn
    assert (attn.num_heads, attn.num_kv_heads, attn.head_dim) == (4, 2, 16)
    assert attn.k_proj.w.value.shape == (64, 32) and attn.q_proj.b is None
    cache = attn.init_cache(3, 20, jn.float32)
    assert cache.key.shape == cache.value.shape == (3, 20, 2, 16)  # the cache holds the kv heads
    assert llama.lm_head is not None and qwen.lm_head is None
    assert qwen.layers[1].self_attn.v_proj.b.value.shape == (32,) and qwen.layers[1].self_attn.o_proj.b is None
    names = list(qwen.vars().subset(objax.TrainVar).keys())
    assert len(names) == 1 + 2 * 12 + 1 and not any('lm_head' in n for n in names)
    assert len(llama.vars().subset(objax.TrainVar)) == 1 + 2 * 9 + 2


@pytest.mark.parametrize('name', sorted(REF))
def test_greedy_generation_of_different_lengths_equals_transformers(models, name):
    model, ref = models[name], REF[name]
    out = model.generate([ref['prompt_a'], ref['prompt_b']], NEW)
    assert isinstance(out, list) and [o.dtype for o in out] == [jn.int32] * 2
    np.testing.assert_array_equal(np.asarray(out[0]), ref['greedy_a'])
    np.testing.assert_array_equal(np.asarray(out[1]), ref['greedy_b'])
    alone = model.generate(ref['prompt_b'][None], NEW)  # an array gives an array
    np.testing.assert_array_equal(np.asarray(alone), ref['greedy_b'][None])
    np.testing.assert_array_equal(np.asarray(model.generate(ref['prompt_b'][None], 0)), ref['prompt_b'][None])


@pytest.mark.parametrize('name', sorted(REF))
def test_generation_stops_each_row_at_its_eos(name):
    model, ref = Llama.from_pretrained(DATA / name), REF[name]
    assert model.eos_token_id == 2 and model.pad_token_id is None
    model.eos_token_id, model.pad_token_id = int(ref['eos_case_eos_token_id']), int(ref['pad_token_id'])
    out = model.generate([ref['prompt_a'], ref['prompt_b']], NEW)
    np.testing.assert_array_equal(np.asarray(out[0]), ref['eos_case_a'])
    np.testing.assert_array_equal(np.asarray(out[1]), ref['eos_case_b'])
    row = model.generate(ref['prompt_a'][None], NEW)  # an array keeps its width: pads after the eos
    np.testing.assert_array_equal(np.asarray(row)[0], ref['eos_case_output'][0][3:])
    model.eos_token_id = [int(ref['eos_case_eos_token_id']), 1000]  # a list, as Llama 3 instruct models have
    np.testing.assert_array_equal(np.asarray(model.generate([ref['prompt_a']], NEW)[0]), ref['eos_case_a'])


def test_decode_step_is_traced_once(monkeypatch):
    model, ref = Llama.from_pretrained(DATA / 'llama_tiny'), REF['llama_tiny']
    calls = []
    block_class = type(model.layers[0])
    original = block_class.__call__

    def counting(self, x, *args, **kwargs):
        calls.append(x.shape[1])
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(block_class, '__call__', counting)
    prompts = [ref['prompt_a'], ref['prompt_b']]
    out = model.generate(prompts, NEW)
    np.testing.assert_array_equal(np.asarray(out[1]), ref['greedy_b'])
    assert calls == [6] * 2 + [1] * 2  # one trace of the prompts and one of the decode step, per block
    model.generate([p[::-1] for p in prompts], NEW)  # same shapes: no new trace
    assert len(calls) == 4


def test_sampling_is_reproducible_and_filtered(models):
    model, ref = models['llama_tiny'], REF['llama_tiny']
    prompt = ref['prompt_b'][None].repeat(2, 0)
    runs = [model.generate(prompt, NEW, temperature=1.5, generator=objax.random.Generator(7)) for _ in range(2)]
    np.testing.assert_array_equal(np.asarray(runs[0]), np.asarray(runs[1]))
    assert not np.array_equal(np.asarray(runs[0][0]), ref['greedy_b'])
    for kwargs in ({'top_k': 1}, {'top_p': 1e-6}):  # one token left: the greedy one
        out = model.generate(prompt, NEW, temperature=2.0, generator=objax.random.Generator(3), **kwargs)
        np.testing.assert_array_equal(np.asarray(out), np.stack([ref['greedy_b']] * 2))
    wide = model.generate(prompt, NEW, temperature=1.0, top_k=50, top_p=0.9, generator=objax.random.Generator(7))
    assert wide.shape == (2, 16) and int(jn.max(wide)) < 128


def test_generate_refuses_bad_arguments(models):
    model = models['llama_tiny']
    for prompts, match in (([], 'non-empty list'), ([np.zeros((2, 2), np.int32)], '1-D'),
                           (np.zeros((2, 3), np.float32), 'integer array')):
        with pytest.raises(ValueError, match=match):
            model.generate(prompts, 2)
    for kwargs, match in (({'max_new_tokens': -1}, 'max_new_tokens'), ({'temperature': -1.0}, 'temperature'),
                          ({'top_k': 0}, 'top_k'), ({'top_p': 1.5}, 'top_p')):
        with pytest.raises(ValueError, match=match):
            model.generate(np.ones((1, 2), np.int32), **{'max_new_tokens': 2, **kwargs})
    with pytest.raises(ValueError, match='attention_mask must have the shape'):
        model(np.ones((1, 2), np.int32), attention_mask=np.ones((1, 3)))


def test_remat_gives_the_same_loss_and_gradients():
    tokens = jn.asarray(REF['llama_tiny']['tokens'])
    results = []
    for remat in (False, True):
        model = Llama.from_pretrained(DATA / 'llama_tiny', remat=remat)
        grad_values = objax.Jit(objax.GradValues(lambda x, model=model: lm_loss(model, x), model.vars()), model.vars())
        grads, (value,) = grad_values(tokens)
        results.append((float(value), [np.asarray(g) for g in grads]))
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bfloat16_loading_holds_bfloat16_weights():
    ref = REF['llama_tiny']
    model = Llama.from_pretrained(DATA / 'llama_tiny', dtype=jn.bfloat16)
    assert {v.value.dtype for v in model.vars().values()} == {jn.dtype(jn.bfloat16)}
    logits = model(ref['tokens'])
    assert logits.dtype == jn.bfloat16 and relative_error(logits, ref['logits']) < 0.05
    out = model.generate([ref['prompt_a'], ref['prompt_b']], 3)
    assert [len(o) for o in out] == [6, 9]


def write_copy(tmp_path, change=None, config=None, source='llama_tiny'):
    return changed_copy(DATA / source, tmp_path / 'copy', change, config)


@pytest.mark.parametrize('change, error, expected', [
    (lambda t: t.pop('model.layers.1.mlp.up_proj.weight'), ValueError,
     r"missing from .*'model\.layers\.1\.mlp\.up_proj\.weight' \(expected for \(Llama\)\.layers\(ModuleList\)\[1\]"
     r"\(LlamaBlock\)\.mlp\(LlamaMLP\)\.up_proj\(Linear\)\.w\)"),
    (lambda t: t.update({'model.layers.0.self_attn.k_proj.weight': np.zeros((64, 64), np.float32)}),
     ShapeMismatchError, r"'model\.layers\.0\.self_attn\.k_proj\.weight' in '.*model\.safetensors': shape \(64, 64\) "
                         r"\(\(64, 64\) after its transform\), expected \(64, 32\)"),
    (lambda t: t.update({'model.layers.0.extra': np.zeros(3, np.float32)}), ValueError,
     r"unexpected .*'model\.layers\.0\.extra' \(3,\)"),
])
def test_refused_tensors_are_named(tmp_path, change, error, expected):
    with pytest.raises(error, match=expected):
        Llama.from_pretrained(write_copy(tmp_path, change))


@pytest.mark.parametrize('config, expected', [
    ({'model_type': 'gemma'}, r"model_type 'gemma' \(supported: llama, qwen2, mistral\)"),
    ({'rope_parameters': {'rope_type': 'yarn', 'factor': 4.0, 'rope_theta': 1e4}}, r"rope type 'yarn' \(supported: "),
    ({'hidden_act': 'gelu'}, r"hidden_act 'gelu' \(supported: silu\)"),
    ({'model_type': 'mistral', 'sliding_window': 4096}, r'sliding_window 4096 \(supported: null\)'),
    ({'rope_parameters': {'rope_type': 'llama3', 'factor': 8.0, 'rope_theta': 1e4}},
     r"rope type 'llama3' without \['low_freq_factor'"),
])
def test_unsupported_configurations_are_named(tmp_path, config, expected):
    with pytest.raises(ValueError, match=expected):
        Llama.from_pretrained(write_copy(tmp_path, config=config))


def test_a_missing_shard_is_named(tmp_path):
    folder = tmp_path / 'sharded'
    shutil.copytree(DATA / 'llama_tiny_sharded', folder)
    (folder / 'model-00002-of-00003.safetensors').unlink()
    with pytest.raises(FileNotFoundError, match='model-00002-of-00003.safetensors'):
        Llama.from_pretrained(folder)


def test_a_stored_head_must_equal_the_tied_embedding(tmp_path):
    def add_head(t, offset):
        t['lm_head.weight'] = t['model.embed_tokens.weight'] + offset

    ref = REF['qwen2_tiny']
    model = Llama.from_pretrained(write_copy(tmp_path / 'a', lambda t: add_head(t, 0), source='qwen2_tiny'))
    assert relative_error(model(ref['tokens']), ref['logits']) < 1e-4
    with pytest.raises(ValueError, match=r"'lm_head\.weight' \(128, 64\) .* differs from 'model\.embed_tokens"):
        Llama.from_pretrained(write_copy(tmp_path / 'b', lambda t: add_head(t, 1), source='qwen2_tiny'))


def test_mistral_and_other_rope_types(tmp_path):
    ref = REF['llama_tiny']
    model = Llama.from_pretrained(write_copy(tmp_path / 'm', config={'model_type': 'mistral', 'sliding_window': None}))
    assert model.config.model_type == 'mistral' and relative_error(model(ref['tokens']), ref['logits']) < 1e-4
    inv = 1e4 ** -(np.arange(0, 16, 2) / 16)
    linear = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=1e4,
                         rope_scaling={'rope_type': 'linear', 'factor': 4.0})
    np.testing.assert_allclose(linear.frequencies(), inv / 4, rtol=1e-6)
    dynamic = LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=1e4, max_position_embeddings=32,
                          rope_scaling={'type': 'dynamic', 'factor': 2.0})
    np.testing.assert_allclose(dynamic.frequencies(jn.arange(20)), inv, rtol=1e-6)  # within the context: default
    base = 1e4 * ((2.0 * 100 / 32) - 1) ** (16 / 14)  # NTK scaling for a sequence of 100 positions
    np.testing.assert_allclose(dynamic.frequencies(jn.arange(100)), base ** -(np.arange(0, 16, 2) / 16), rtol=1e-5)
    small = Llama(dynamic, initializer_range=0.2)
    assert small(np.ones((1, 40), np.int32)).shape == (1, 40, 32000)


def test_save_pretrained_round_trip_single_and_sharded(tmp_path, models):
    for name in REF:
        model = models[name]
        for shard in ('5GB', '150KB'):
            folder = tmp_path / name / shard
            model.save_pretrained(folder, max_shard_size=shard)
            files = sorted(p.name for p in folder.iterdir())
            if shard == '5GB':
                assert files == ['config.json', 'model.safetensors']
            else:
                assert files == ['config.json'] + [f'model-0000{i}-of-00003.safetensors' for i in (1, 2, 3)] + \
                    ['model.safetensors.index.json']
                assert all((folder / f).stat().st_size < 150_000 for f in files)
            again = Llama.from_pretrained(folder)
            for (k, a), b in zip(model.vars().items(), again.vars().values()):
                np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value), err_msg=k)
            saved = json.loads((folder / 'config.json').read_text())
            original = json.loads((DATA / name / 'config.json').read_text())
            assert {k: saved[k] for k in original} == original  # the fields transformers wrote, unchanged
    index = json.loads((tmp_path / 'llama_tiny' / '150KB' / 'model.safetensors.index.json').read_text())
    expected = json.loads((DATA / 'llama_tiny_sharded' / 'model.safetensors.index.json').read_text())
    assert index['metadata'] == expected['metadata'] and sorted(index['weight_map']) == sorted(expected['weight_map'])
    models['llama_tiny'].save_pretrained(tmp_path / 'llama_tiny' / '150KB')  # one file now: stale shards removed
    assert sorted(p.name for p in (tmp_path / 'llama_tiny' / '150KB').iterdir()) == ['config.json',
                                                                                      'model.safetensors']


def test_save_pretrained_of_a_new_model_and_bfloat16(tmp_path):
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=1, rope_scaling={'rope_type': 'llama3',
                         'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                         'original_max_position_embeddings': 16}, eos_token_id=[3, 4])
    model = Llama(config, dtype=jn.bfloat16)
    model.save_pretrained(tmp_path / 'new')
    saved = json.loads((tmp_path / 'new' / 'config.json').read_text())
    assert saved['rope_scaling']['rope_type'] == 'llama3' and saved['torch_dtype'] == 'bfloat16'
    assert saved['architectures'] == ['LlamaForCausalLM'] and saved['eos_token_id'] == [3, 4]
    again = Llama.from_pretrained(tmp_path / 'new', dtype=jn.bfloat16)
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6)
    np.testing.assert_array_equal(np.asarray(again(tokens), np.float32), np.asarray(model(tokens), np.float32))
    assert again.eos_token_id == [3, 4]


RULES = [('*.q_proj(Linear).w', P(None, 'model')), ('*.k_proj(Linear).w', P(None, 'model')),
         ('*.v_proj(Linear).w', P(None, 'model')), ('*.o_proj(Linear).w', P('model', None)),
         ('*.gate_proj(Linear).w', P(None, 'model')), ('*.up_proj(Linear).w', P(None, 'model')),
         ('*.down_proj(Linear).w', P('model', None)), ('(Llama).embed_tokens(Embedding).w', P('model', None)),
         ('(Llama).lm_head(Linear).w', P(None, 'model'))]


def test_loading_onto_a_mesh_keeps_the_logits():
    mesh = make_mesh('data=2,model=4')
    ref = REF['llama_tiny']
    model = Llama.from_pretrained(DATA / 'llama_tiny_sharded', mesh=mesh, rules=RULES)
    for name, var in model.vars().subset(objax.TrainVar).items():
        spec = next((s for pattern, s in RULES if fnmatch.fnmatchcase(name, pattern)), P())
        assert var.value.sharding.is_equivalent_to(NamedSharding(mesh, spec), var.value.ndim), name
        assert layout(var) is not None, name
    w = model.layers[0].mlp.gate_proj.w.value
    assert {s.data.shape for s in w.addressable_shards} == {(64, 32)}  # a quarter of (64, 128) on each device
    assert relative_error(model(ref['tokens']), ref['logits']) < 1e-4
    assert relative_error(objax.Jit(lambda x: model(x), model.vars())(ref['tokens']), ref['logits']) < 1e-4
    out = model.generate([ref['prompt_a'], ref['prompt_b']], NEW)
    np.testing.assert_array_equal(np.asarray(out[0]), ref['greedy_a'])
    np.testing.assert_array_equal(np.asarray(out[1]), ref['greedy_b'])


def test_peft_adapter_gives_peft_logits_and_saves_as_peft_does(tmp_path):
    reference = dict(np.load(DATA / 'llama_tiny_adapter_reference.npz'))
    model = Llama.from_pretrained(DATA / 'llama_tiny')
    adapters = model.load_adapter(ADAPTER)
    assert len(adapters) == 8 and all(isinstance(v, objax.TrainVar) for v in adapters.values())
    assert relative_error(model(reference['tokens']), reference['logits']) < 1e-4
    assert relative_error(objax.Jit(lambda x: model(x), model.vars())(reference['tokens']), reference['logits']) < 1e-4
    model.save_adapter(tmp_path / 'saved')
    ours = json.loads((tmp_path / 'saved' / 'adapter_config.json').read_text())
    peft = json.loads((ADAPTER / 'adapter_config.json').read_text())
    assert {k: v for k, v in ours.items() if k != 'base_model_name_or_path'} == \
        {k: peft[k] for k in ours if k != 'base_model_name_or_path'}
    assert ours['base_model_name_or_path'] == str(DATA / 'llama_tiny')
    saved = safetensors.numpy.load_file(str(tmp_path / 'saved' / 'adapter_model.safetensors'))
    expected = safetensors.numpy.load_file(str(ADAPTER / 'adapter_model.safetensors'))
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in expected.items()}
    for k in expected:
        np.testing.assert_array_equal(saved[k], expected[k], err_msg=k)
    with pytest.raises(ValueError, match='already holds LoRA adapters'):
        model.load_adapter(ADAPTER)
    with pytest.raises(ValueError, match='merge_lora'):
        model.save_pretrained(tmp_path / 'merged')
    assert objax.nn.merge_lora(model) == 4 and not objax.nn.lora_layers(model)
    assert relative_error(model(reference['tokens']), reference['logits']) < 1e-4
    model.save_pretrained(tmp_path / 'merged')
    merged = Llama.from_pretrained(tmp_path / 'merged')
    assert relative_error(merged(reference['tokens']), reference['logits']) < 1e-4


@pytest.mark.parametrize('config, expected', [
    ({'use_dora': True}, r'use_dora True \(supported: False\)'),
    ({'rank_pattern': {'q_proj': 8}}, r"rank_pattern \{'q_proj': 8\}"),
    ({'target_modules': '.*proj'}, r"target_modules '\.\*proj' as a pattern"),
    ({'target_modules': ['q_proj', 'k_proj', 'v_proj']}, r"missing from .*k_proj\.lora_A\.weight"),
    ({'r': 8}, r"lora_A\.weight' in .*: shape \(4, 64\) \(\(64, 4\) after its transform\), expected \(64, 8\)"),
])
def test_refused_adapters_leave_the_model_unchanged(tmp_path, models, config, expected):
    folder = tmp_path / 'adapter'
    shutil.copytree(ADAPTER, folder)
    data = json.loads((folder / 'adapter_config.json').read_text())
    data.update(config)
    (folder / 'adapter_config.json').write_text(json.dumps(data))
    model = Llama.from_pretrained(DATA / 'llama_tiny')
    names = list(model.vars().keys())
    with pytest.raises(ValueError, match=expected):
        model.load_adapter(folder)
    assert list(model.vars().keys()) == names and not objax.nn.lora_layers(model)
    assert relative_error(model(REF['llama_tiny']['tokens']), REF['llama_tiny']['logits']) < 1e-4


@pytest.mark.parametrize('name', sorted(REF))
def test_stacked_blocks_give_the_same_logits_and_tokens(tmp_path, models, name):
    model, ref = Llama.from_pretrained(DATA / name, stack=True), REF[name]
    assert isinstance(model.layers, objax.nn.Stack)
    w = model.vars()['(Llama).layers(Stack).layer(LlamaBlock).self_attn(LlamaAttention).k_proj(Linear).w']
    assert w.value.shape == (2, 64, 32)
    assert relative_error(model(ref['tokens']), ref['logits']) < 1e-4
    jitted = objax.Jit(lambda x: model(x), model.vars())
    assert relative_error(jitted(ref['long_tokens']), ref['long_logits']) < 1e-4
    out = model.generate([ref['prompt_a'], ref['prompt_b']], NEW)
    np.testing.assert_array_equal(np.asarray(out[0]), ref['greedy_a'])
    np.testing.assert_array_equal(np.asarray(out[1]), ref['greedy_b'])
    model.save_pretrained(tmp_path / 'saved')
    for (k, a), b in zip(models[name].vars().items(), Llama.from_pretrained(tmp_path / 'saved').vars().values()):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value), err_msg=k)
    with pytest.raises(ValueError, match='stack=True with a mesh'):
        Llama.from_pretrained(DATA / name, stack=True, mesh=make_mesh('data=2,model=4'))


def test_lora_and_adapters_on_stacked_blocks(tmp_path):
    reference = dict(np.load(DATA / 'llama_tiny_adapter_reference.npz'))
    model = Llama.from_pretrained(DATA / 'llama_tiny', stack=True, remat=True)
    adapters = model.load_adapter(ADAPTER)
    assert isinstance(model.layers, objax.nn.Stack) and model.layers.remat
    assert sorted(v.value.shape for v in adapters.values()) == [(2, 4, 32), (2, 4, 64), (2, 64, 4), (2, 64, 4)]
    assert relative_error(model(reference['tokens']), reference['logits']) < 1e-4
    model.save_adapter(tmp_path / 'saved')
    saved = safetensors.numpy.load_file(str(tmp_path / 'saved' / 'adapter_model.safetensors'))
    for k, v in safetensors.numpy.load_file(str(ADAPTER / 'adapter_model.safetensors')).items():
        np.testing.assert_array_equal(saved[k], v, err_msg=k)
    assert objax.nn.merge_lora(model) == 4 and not objax.nn.lora_layers(model)
    assert relative_error(model(reference['tokens']), reference['logits']) < 1e-4

    # Training new adapters on the stacked blocks (one compiled body) leaves the stacked base bit-identical.
    tokens = jn.asarray(REF['llama_tiny']['tokens'])
    base = {k: np.asarray(v.value) for k, v in model.vars().items()}
    adapters = objax.nn.add_lora(model, 4, 8, ('q_proj', 'v_proj', 'down_proj'))
    assert len(adapters) == 6 and all(v.value.shape[0] == 2 for v in adapters.values())
    losses = adam_steps(model, adapters, lambda x: lm_loss(model, x), tokens, 10)
    assert losses[-1] < 0.9 * losses[0], losses
    after = model.vars()
    for name, value in base.items():
        for target in ('q_proj', 'v_proj', 'down_proj'):
            name = name.replace(f'{target}(Linear)', f'{target}(LoRALinear).base(Linear)')
        np.testing.assert_array_equal(np.asarray(after[name].value), value, err_msg=name)


def numpy_reference():
    """tests/data/pretrained/make_llama_fixtures.py: the fixtures' independent float64 numpy Llama, which reads a
    folder as transformers does (numpy only at import)."""
    spec = importlib.util.spec_from_file_location('make_llama_fixtures', DATA / 'make_llama_fixtures.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('name', sorted(REF))
def test_saved_adapters_and_merged_weights_give_our_logits_in_numpy(tmp_path, name):
    """What PEFT and transformers compute from the written files (W + lora_alpha / r * B @ A; the merged folder
    read as transformers reads it), in an independent numpy Llama, equals objax's logits."""
    reference = numpy_reference()
    tokens = REF[name]['tokens']
    model = Llama.from_pretrained(DATA / name)
    targets = ('q_proj', 'v_proj', 'o_proj', 'down_proj')
    for var in objax.nn.add_lora(model, 4, 8, targets).values():  # trained-looking adapters
        var.assign(objax.random.normal(var.value.shape, stddev=0.1))
    logits = np.asarray(model(tokens))
    model.save_adapter(tmp_path / 'adapter')
    config, params = reference._load_dir(str(DATA / name))
    adapter = json.loads((tmp_path / 'adapter' / 'adapter_config.json').read_text())
    assert sorted(adapter['target_modules']) == sorted(targets)
    lora = safetensors.numpy.load_file(str(tmp_path / 'adapter' / 'adapter_model.safetensors'))
    for key in [k for k in lora if k.endswith('.lora_A.weight')]:
        module = key[len('base_model.model.'):-len('.lora_A.weight')]
        b = lora[key.replace('lora_A', 'lora_B')]
        params[module + '.weight'] = params[module + '.weight'] + adapter['lora_alpha'] / adapter['r'] * (
            b.astype(np.float64) @ lora[key])
    assert relative_error(logits, reference.numpy_llama(params, config, tokens)) < 1e-4
    objax.nn.merge_lora(model)
    model.save_pretrained(tmp_path / 'merged', max_shard_size='100KB')
    config, params = reference._load_dir(str(tmp_path / 'merged'))
    assert len(json.loads((tmp_path / 'merged' / 'model.safetensors.index.json').read_text())['weight_map']) == \
        len(params)
    assert relative_error(logits, reference.numpy_llama(params, config, tokens)) < 1e-4


def test_constructor_checks():
    with pytest.raises(TypeError, match='LlamaConfig'):
        Llama({'hidden_size': 8})
    with pytest.raises(ValueError, match='multiple of num_key_value_heads'):
        LlamaConfig(num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="rope type 'yarn'"):
        LlamaConfig(rope_scaling={'rope_type': 'yarn'})
    with pytest.raises(FileNotFoundError, match='config.json'):
        Llama.from_pretrained(DATA)
    assert 'rope_type' in repr(LlamaConfig())
