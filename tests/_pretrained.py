"""Shared by the tests of the pretrained models: where the fixtures made with transformers and timm are, and the
error measure their logits are compared with."""

import json
import shutil
from pathlib import Path

import numpy as np
import safetensors.numpy

import objax

DATA = Path(__file__).resolve().parent / 'data' / 'pretrained'


def relative_error(got, expected) -> float:
    """max |got - expected| / max |expected|."""
    expected = np.asarray(expected, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / np.abs(expected).max())


def changed_copy(source: Path, folder: Path, change=None, config=None) -> Path:
    """A copy of the model folder `source` at `folder`, its model.safetensors passed through change(tensors) (a
    dict to edit in place) and its config.json updated with `config`."""
    shutil.copytree(source, folder)
    if change is not None:
        tensors = safetensors.numpy.load_file(str(folder / 'model.safetensors'))
        change(tensors)
        safetensors.numpy.save_file(tensors, str(folder / 'model.safetensors'), metadata={'format': 'pt'})
    if config is not None:
        data = json.loads((folder / 'config.json').read_text())
        data.update(config)
        (folder / 'config.json').write_text(json.dumps(data))
    return folder


def adam_steps(model, trained, loss, tokens, steps: int, lr: float = 1e-2) -> list:
    """The losses of `steps` jitted Adam steps of loss(tokens) that train the variables `trained` of `model`."""
    opt = objax.optimizer.Adam(trained)
    grad_values = objax.GradValues(loss, trained)

    def train_op(x):
        grads, values = grad_values(x)
        opt(lr, grads)
        return values[0]

    train_op = objax.Jit(train_op, model.vars() + opt.vars())
    return [float(train_op(tokens)) for _ in range(steps)]
