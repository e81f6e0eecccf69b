import numpy as np
import pytest
import torch

from keyscribe.model import HEADS, VARIANTS, ModelConfig, Transcriber, count_parameters, normalised_adjacency
from keyscribe.train import load_model, save_checkpoint


def _cooccurrence():
    rng = np.random.default_rng(0)
    probs = rng.random((88, 88)) ** 4
    np.fill_diagonal(probs, 1.0)
    return probs


@pytest.mark.parametrize("variant", VARIANTS)
def test_output_shapes_and_every_parameter_gets_a_gradient(variant):
    torch.manual_seed(0)
    model = Transcriber(ModelConfig(variant=variant), _cooccurrence())
    out = model(torch.randn(2, 50, 229))
    assert {k: tuple(v.shape) for k, v in out.items()} == {**{h: (2, 50, 88) for h in HEADS}, "pedal": (2, 50, 3)}
    sum(v.pow(2).mean() for v in out.values()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_time_resolution_is_kept_and_output_is_causal_free_of_batch():
    model = Transcriber(ModelConfig(), _cooccurrence()).eval()
    x = torch.randn(3, 77, 229)
    with torch.inference_mode():
        whole = model(x)["onset"]
        single = model(x[1:2])["onset"]
    assert whole.shape[1] == 77
    torch.testing.assert_close(whole[1:2], single, atol=1e-5, rtol=1e-4)


def test_adjacency_is_symmetric_normalised_with_self_loops():
    adj = normalised_adjacency(_cooccurrence(), threshold=0.3, reweight=0.25)
    np.testing.assert_allclose(adj, adj.T, atol=1e-6)
    assert (np.diag(adj) > 0).all()
    assert np.linalg.eigvalsh(adj).max() <= 1.0 + 1e-5  # symmetric normalisation bounds the spectrum


def test_gcn_classifiers_depend_on_the_graph():
    torch.manual_seed(0)
    a = Transcriber(ModelConfig(), _cooccurrence()).eval()
    torch.manual_seed(0)
    b = Transcriber(ModelConfig(), np.eye(88)).eval()
    x = torch.randn(1, 20, 229)
    with torch.inference_mode():
        assert not torch.allclose(a(x)["frame"], b(x)["frame"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path, variant):
    torch.manual_seed(1)
    model = Transcriber(ModelConfig(variant=variant), _cooccurrence())
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint(tmp_path / "m.pt", model, optimizer, {"step": 3})
    loaded = load_model(tmp_path / "m.pt")
    model.eval()
    x = torch.randn(1, 40, 229)
    with torch.inference_mode():
        for key, value in model(x).items():
            torch.testing.assert_close(loaded(x)[key], value, atol=0, rtol=0)
    assert count_parameters(loaded) == count_parameters(model)
