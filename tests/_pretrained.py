"""Shared by the tests of the pretrained models: where the fixtures made with transformers and timm are, and the
error measure their logits are compared with."""

import json
import shutil
from pathlib import Path

import numpy as np
import safetensors.numpy

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
