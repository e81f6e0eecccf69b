"""Warm-starting a model from an ONNX export: the rebuilt torch model computes what onnxruntime does."""
import json
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from keyscribe.errors import ModelError
from keyscribe.inference import default_model_path, export_onnx
from keyscribe.model import ModelConfig, Transcriber
from keyscribe.warm_start import freeze_batch_norm, warm_start

SHIPPED = default_model_path()


def shipped_config(**changes) -> ModelConfig:
    config = ModelConfig.from_dict(json.loads(SHIPPED.with_suffix(".json").read_text())["model_config"])
    return replace(config, **changes)


def onnx_probabilities(path, mel: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"mel": mel})))


def assert_computes_as(model: Transcriber, path, mel: np.ndarray, names=("onset", "offset", "frame", "pedal")):
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(mel))
    expected = onnx_probabilities(path, mel)
    for name in names:
        np.testing.assert_allclose(torch.sigmoid(out[name]).numpy(), expected[name], atol=1e-5)


@pytest.fixture(scope="module")
def mel():
    return np.random.default_rng(0).normal(-5.0, 2.0, (2, 300, shipped_config().n_mels)).astype(np.float32)


@pytest.fixture(scope="module")
def cnn_rnn_export(tmp_path_factory):
    """A random cnn_rnn with batch-norm statistics far from the identity, exported as the shipped model was."""
    torch.manual_seed(0)
    model = Transcriber(shipped_config(variant="cnn_rnn"))
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.running_mean.uniform_(-1.0, 1.0)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
    return export_onnx(model, tmp_path_factory.mktemp("export") / "cnn_rnn.onnx")


def test_the_shipped_model_rebuilt_in_torch_computes_what_onnxruntime_does(mel):
    model = Transcriber(shipped_config())
    filled = warm_start(model, SHIPPED)
    assert any(name.startswith("front.rnn.") for name in filled) and any(name.startswith("heads.") for name in filled)
    assert_computes_as(model, SHIPPED, mel)


@pytest.mark.parametrize("variant", ["cnn_rnn", "cnn_rnn_mlp"])
def test_a_model_with_linear_heads_starts_as_an_exported_cnn_rnn(variant, cnn_rnn_export, mel):
    model = Transcriber(shipped_config(variant=variant))
    warm_start(model, cnn_rnn_export)
    assert_computes_as(model, cnn_rnn_export, mel)


def test_a_gcn_model_takes_the_front_end_and_pedal_but_keeps_its_own_classifiers(mel):
    model = Transcriber(shipped_config(variant="crgcn"))
    before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    filled = warm_start(model, SHIPPED)
    assert not any(name.startswith("heads.") for name in filled)
    assert all(torch.equal(before[k], v) for k, v in model.heads.state_dict().items())
    assert_computes_as(model, SHIPPED, mel, names=("pedal",))


def test_a_gcn_with_one_hot_key_embeddings_starts_as_the_linear_heads_it_was_solved_from(cnn_rnn_export, mel):
    cooccurrence = np.random.default_rng(1).uniform(0.0, 0.4, (88, 88))  # a graph with many edges
    model = Transcriber(shipped_config(variant="crgcn", key_embedding=88, gcn_hidden=96), cooccurrence)
    filled = warm_start(model, cnn_rnn_export)
    assert {"heads.embedding", "heads.gc1.weight", "heads.gc2.weight", "heads.bias"} <= set(filled)
    assert_computes_as(model, cnn_rnn_export, mel)
    model(torch.from_numpy(mel))["onset"].sum().backward()  # and learns through the graph from there
    assert model.heads.embedding.grad.abs().sum() > 0 and model.heads.gc1.weight.grad.abs().sum() > 0


def test_a_gcn_whose_hidden_layer_is_narrower_than_the_keys_cannot_start_from_linear_heads(cnn_rnn_export):
    with pytest.raises(ModelError, match="gcn_hidden >= 88") as info:
        warm_start(Transcriber(shipped_config(variant="crgcn", key_embedding=88, gcn_hidden=64)), cnn_rnn_export)
    assert "\n" not in str(info.value)


def test_a_front_end_of_another_size_is_a_one_line_error():
    with pytest.raises(ModelError, match="does not fit") as info:
        warm_start(Transcriber(shipped_config(lstm_hidden=64)), SHIPPED)
    assert "\n" not in str(info.value)


def test_frozen_batch_norms_keep_their_statistics_in_training(mel):
    model = Transcriber(shipped_config())
    warm_start(model, SHIPPED)
    model.train()
    freeze_batch_norm(model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_var.clone() for m in norms]
    model(torch.from_numpy(mel)).get("onset").sum().backward()
    assert all(torch.equal(b, m.running_var) for b, m in zip(before, norms))
    assert model.front.rnn.training  # only the batch norms left training mode
