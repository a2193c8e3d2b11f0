"""objax.nn.add_lora / merge_lora / LoRALinear: adapters on any module (a user's own, GPT-2, Llama), PEFT's
initialisation, training the adapters alone with the base weights bit-identical, merging."""

import math

import jax.numpy as jn
import numpy as np
import pytest
from _pretrained import DATA, adam_steps

import objax
from objax.nn import Linear, LoRALinear, add_lora, lora_layers, merge_lora
from objax.zoo.gpt2 import GPT2
from objax.zoo.llama import Llama


class Net(objax.Module):
    def __init__(self):
        self.encode = Linear(6, 8)
        self.blocks = objax.ModuleList([objax.nn.Sequential([Linear(8, 8)]) for _ in range(2)])
        self.proj = Linear(8, 3, use_bias=False)

    def __call__(self, x):
        x = self.encode(x)
        for block in self.blocks:
            x = objax.functional.relu(block(x))
        return self.proj(x)


def values(vc):
    return {k: np.asarray(v.value) for k, v in vc.items()}


def test_add_lora_wraps_the_named_linears_and_changes_nothing_until_trained():
    net, x = Net(), objax.random.normal((4, 6))
    before, y = values(net.vars()), net(x)
    adapters = add_lora(net, rank=2, alpha=4, targets=('encode', 'proj'))
    assert list(adapters.keys()) == ['(Net).encode(LoRALinear).lora_a', '(Net).encode(LoRALinear).lora_b',
                                     '(Net).proj(LoRALinear).lora_a', '(Net).proj(LoRALinear).lora_b']
    assert set(lora_layers(net)) == {'encode', 'proj'} and isinstance(net.proj, LoRALinear)
    np.testing.assert_array_equal(np.asarray(net(x)), np.asarray(y))  # B is zero
    assert net.encode.lora_a.value.shape == (6, 2) and net.encode.lora_b.value.shape == (2, 8)
    np.testing.assert_array_equal(np.asarray(net.encode.lora_b.value), 0)
    assert net.encode.scale == 2.0 and '(Net).encode(LoRALinear).base(Linear).w' in net.vars()
    for name, value in before.items():  # the base variables are the same objects, renamed under .base
        renamed = name.replace('encode(Linear)', 'encode(LoRALinear).base(Linear)').replace(
            'proj(Linear)', 'proj(LoRALinear).base(Linear)')
        np.testing.assert_array_equal(np.asarray(net.vars()[renamed].value), value)


def test_a_is_drawn_as_peft_draws_it():
    """PEFT initialises lora_A with PyTorch Linear's default, kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(in), ...)."""
    layer = LoRALinear(Linear(400, 3), rank=64, alpha=16)
    a = np.asarray(layer.lora_a.value)
    bound = 1 / math.sqrt(400)
    assert a.shape == (400, 64) and np.abs(a).max() <= bound and np.abs(a).max() > 0.98 * bound
    assert abs(a.std() - bound / math.sqrt(3)) < 0.02 * bound  # the standard deviation of a uniform
    assert LoRALinear(Linear(4, 3), rank=4, alpha=8, use_rslora=True).scale == 4.0


def test_list_items_and_nested_modules_are_reached():
    net = Net()
    add_lora(net, 1, 1, targets='0')  # the Sequential items are named by their index
    assert set(lora_layers(net)) == {'blocks.0.0', 'blocks.1.0'}
    assert merge_lora(net) == 2 and not lora_layers(net) and isinstance(net.blocks[0][0], Linear)


class Block(objax.Module):
    def __init__(self):
        self.fc = Linear(4, 4)
        self.out = Linear(4, 4)

    def __call__(self, x):
        return x + self.out(objax.functional.tanh(self.fc(x)))


def test_adapters_inside_a_stack_are_stacked():
    objax.random.DEFAULT_GENERATOR.seed(1)
    stack, x = objax.nn.Stack(Block, 3), objax.random.normal((2, 4))
    holder = objax.ModuleList([stack])
    before = holder[0](x)
    adapters = add_lora(holder, 2, 2, targets=['fc'])
    assert list(adapters.keys()) == ['(ModuleList)[0](Stack).layer(Block).fc(LoRALinear).lora_a',
                                     '(ModuleList)[0](Stack).layer(Block).fc(LoRALinear).lora_b']
    assert adapters['(ModuleList)[0](Stack).layer(Block).fc(LoRALinear).lora_a'].value.shape == (3, 4, 2)
    assert isinstance(holder[0], objax.nn.Stack) and holder[0] is not stack  # rebuilt
    np.testing.assert_array_equal(np.asarray(holder[0](x)), np.asarray(before))
    a = np.asarray(adapters['(ModuleList)[0](Stack).layer(Block).fc(LoRALinear).lora_a'].value)
    assert not np.array_equal(a[0], a[1])  # each layer draws its own A
    for var in adapters.values():
        var.assign(var.value + 0.2)
    changed = holder[0](x)
    assert sorted(lora_layers(holder)) == ['0.0.fc', '0.1.fc', '0.2.fc']
    np.testing.assert_allclose(np.asarray(lora_layers(holder)['0.2.fc'].lora_a.value), a[2] + 0.2, rtol=1e-6)
    assert merge_lora(holder) == 3 and not lora_layers(holder)
    np.testing.assert_allclose(np.asarray(holder[0](x)), np.asarray(changed), atol=1e-5)
    with pytest.raises(ValueError, match=r"its Linear layers are named \['fc', 'out'\]"):
        add_lora(holder, 2, 2, targets=['q_proj'])


def test_training_the_adapters_alone_leaves_the_base_bit_identical():
    model = Llama.from_pretrained(DATA / 'llama_tiny')
    tokens = jn.asarray(np.load(DATA / 'llama_tiny_reference.npz')['tokens'])
    base = values(model.vars())
    adapters = add_lora(model, rank=4, alpha=8, targets=('q_proj', 'v_proj'), dropout=0.1)
    assert len(adapters) == 2 * 2 * 2

    def loss(x, training):
        logits = model(x, training=training)
        return objax.functional.loss.cross_entropy_logits_sparse(logits[:, :-1], x[:, 1:]).mean()

    initial = float(loss(tokens, False))
    losses = adam_steps(model, adapters, lambda x: loss(x, True), tokens, 30)
    final = float(loss(tokens, False))
    assert final < 0.8 * initial and losses[-1] < losses[0], (initial, losses, final)
    after = model.vars()
    for name, value in base.items():
        name = name.replace('(Linear)', '(LoRALinear).base(Linear)') if any(
            f'{t}(Linear)' in name for t in ('q_proj', 'v_proj')) else name
        np.testing.assert_array_equal(np.asarray(after[name].value), value, err_msg=name)
    trained = model(tokens)
    merge_lora(model)
    assert not lora_layers(model)
    np.testing.assert_allclose(np.asarray(model(tokens)), np.asarray(trained), atol=1e-4, rtol=1e-4)


def test_adapters_on_gpt2_attention():
    model = GPT2(vocab_size=32, n_positions=8, n_embd=16, n_layer=2, n_head=2)
    tokens = jn.arange(8)[None] % 32
    before = model(tokens)
    adapters = add_lora(model, rank=2, alpha=2, targets=['query', 'value'])
    assert len(adapters) == 8 and len(lora_layers(model)) == 4
    np.testing.assert_array_equal(np.asarray(model(tokens)), np.asarray(before))
    for var in adapters.subset(objax.TrainVar).values():
        var.assign(var.value + 0.1)
    changed = model(tokens)
    assert np.abs(np.asarray(changed) - np.asarray(before)).max() > 1e-3
    merge_lora(model)
    np.testing.assert_allclose(np.asarray(model(tokens)), np.asarray(changed), atol=1e-5, rtol=1e-5)


def test_dropout_acts_only_while_training():
    layer = LoRALinear(Linear(5, 5), rank=2, alpha=2, dropout=0.5)
    layer.lora_b.assign(jn.ones((2, 5)))
    x = jn.ones((3, 5))
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(layer(x, training=False)))
    assert not np.array_equal(np.asarray(layer(x, training=True)), np.asarray(layer(x)))
    assert 'rank=2' in repr(layer) and 'dropout=0.5' in repr(layer)


def test_errors():
    with pytest.raises(ValueError, match=r"no Linear layer of Net is named \['q_proj'\]; its Linear layers are "
                                         r"named \['0', 'encode', 'proj'\]"):
        add_lora(Net(), 2, 2, targets=['q_proj'])
    with pytest.raises(ValueError, match='rank must be a positive int'):
        add_lora(Net(), 0, 2, targets=['proj'])
    with pytest.raises(ValueError, match='alpha must be a positive number'):
        LoRALinear(Linear(2, 2), 1, 0)
    with pytest.raises(ValueError, match='dropout'):
        LoRALinear(Linear(2, 2), 1, 1, dropout=1.0)
    with pytest.raises(TypeError, match='base must be an objax.nn.Linear'):
        LoRALinear(objax.nn.Conv2D(1, 1, 1), 1, 1)
    assert merge_lora(Net()) == 0
