import numpy as np
import pytest
import torch

from keyscribe.features import harmonic_stack, log_mel
from keyscribe.model import (HEADS, VARIANTS, ModelConfig, Transcriber, count_parameters, init_biases_at_priors,
                             normalised_adjacency)
from keyscribe.train import load_model, save_checkpoint


def _cooccurrence():
    rng = np.random.default_rng(0)
    probs = rng.random((88, 88)) ** 4
    np.fill_diagonal(probs, 1.0)
    return probs


CONFIGS = ([ModelConfig(variant=v) for v in VARIANTS] + [ModelConfig(harmonics=(0.5, 1, 2, 3))]
           + [ModelConfig(frame_stack=16)])
CONFIG_IDS = [f"{c.variant}{'-harmonic' if c.harmonics else ''}{'-frame_stack' if c.frame_stack else ''}"
              for c in CONFIGS]


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_output_shapes_and_every_parameter_gets_a_gradient(config):
    torch.manual_seed(0)
    model = Transcriber(config, _cooccurrence())
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


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path, config):
    torch.manual_seed(1)
    model = Transcriber(config, _cooccurrence())
    optimizer = torch.optim.Adam(model.parameters())
    save_checkpoint(tmp_path / "m.pt", model, optimizer, {"step": 3})
    loaded = load_model(tmp_path / "m.pt")
    model.eval()
    x = torch.randn(1, 40, 229)
    with torch.inference_mode():
        for key, value in model(x).items():
            torch.testing.assert_close(loaded(x)[key], value, atol=0, rtol=0)
    assert count_parameters(loaded) == count_parameters(model)


def test_the_harmonic_stack_puts_a_tones_partials_at_the_keys_whose_harmonics_they_are():
    sr, f0 = 16000, 220.0  # A3, MIDI 57
    t = np.arange(sr) / sr
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    harmonics, bins = (0.5, 1, 2, 3), 3
    weights, offset = harmonic_stack(harmonics, bins)
    stacked = (log_mel(tone) @ weights + offset).reshape(-1, len(harmonics), 88 * bins)[10]
    peak_key = 21 + stacked.argmax(axis=1) // bins
    # channel h holds the spectrum at h x each key's frequency: 220 Hz is the half of A4 (69), the
    # fundamental of A3 (57) and the second harmonic of A2 (45); 3 x E2 (40, 82.4 Hz) = 247 Hz is not a
    # partial of this tone, but 3 x D2 (38, 73.4 Hz) = 220 Hz is.
    assert peak_key[:3].tolist() == [69, 57, 45]
    assert stacked[3][(38 - 21) * bins + 1] > stacked[3][(40 - 21) * bins + 1] + 3.0


def test_the_harmonic_stack_reads_the_floor_above_the_spectrum():
    weights, offset = harmonic_stack((1, 6), 3)
    top = weights.reshape(229, 2, -1)[:, 1, -1]  # the 6th harmonic of C8 (25 kHz) is above 8 kHz
    assert not top.any() and offset.reshape(2, -1)[1, -1] == np.float32(np.log(1e-5))
    assert offset.reshape(2, -1)[0].max() == 0  # every fundamental is inside


@pytest.mark.parametrize("variant,frame_stack", [(v, 0) for v in VARIANTS] + [("crgcn", 16)])
def test_outputs_start_at_the_label_priors(variant, frame_stack):
    model = Transcriber(ModelConfig(variant=variant, frame_stack=frame_stack), _cooccurrence()).eval()
    rates = np.random.default_rng(0).uniform(0.001, 0.2, (len(HEADS), 88))
    init_biases_at_priors(model, rates, np.array([0.01, 0.01, 0.4]))
    with torch.inference_mode():
        out = model(torch.zeros(1, 30, 229))
    for i, head in enumerate(HEADS):
        mean = torch.sigmoid(out[head][0]).mean(0).numpy()
        # the feature term is small at initialisation, so the probabilities sit near the rates
        np.testing.assert_allclose(mean, rates[i], rtol=0.35)
    np.testing.assert_allclose(torch.sigmoid(out["pedal"][0]).mean(0).numpy(), [0.01, 0.01, 0.4], rtol=0.35)


def test_gcn_classifiers_start_at_the_scale_of_a_linear_head():
    # the features' gradients scale with the classifiers: GCN classifiers 5x smaller than a linear head's
    # made crgcn learn far slower than cnn_rnn from the same start
    x = torch.randn(4, 60, 229)
    spread = {}
    for variant in ("crgcn", "cnn_rnn"):
        torch.manual_seed(0)
        model = Transcriber(ModelConfig(variant=variant), _cooccurrence()).eval()
        with torch.inference_mode():
            spread[variant] = model.heads(model.front(x)).std().item()
    assert 0.5 < spread["crgcn"] / spread["cnn_rnn"] < 2.0


def test_the_frame_stack_reads_onsets_without_training_them():
    # Onsets and Frames: the frame loss must not move the onset and offset outputs it conditions on
    torch.manual_seed(0)
    model = Transcriber(ModelConfig(variant="cnn_rnn", frame_stack=16), _cooccurrence())
    mel = torch.randn(2, 40, 229)
    model(mel)["frame"].pow(2).mean().backward()
    head_grad = model.heads.linear.weight.grad.view(len(HEADS), 88, -1).abs().sum(dim=(1, 2))
    assert head_grad[HEADS.index("onset")] == 0 and head_grad[HEADS.index("offset")] == 0
    assert head_grad[HEADS.index("frame")] > 0
    # and the onsets do change the frames
    with torch.no_grad():
        before = model(mel)["frame"].clone()
        model.heads.linear.bias.view(len(HEADS), 88)[HEADS.index("onset")] += 5.0
        assert not torch.allclose(model(mel)["frame"], before)


def test_the_pair_mlp_is_the_mean_over_each_key_s_partners_of_an_mlp_on_the_pair():
    heads = Transcriber(ModelConfig(variant="cnn_rnn_mlp"), _cooccurrence()).heads
    with torch.no_grad():
        for p in heads.pair_mlp.parameters():  # random weights of a useful size, so a wrong formula shows
            p.normal_(0.0, 0.3)
        features = torch.randn(2, 5, heads.base.linear.in_features)
        keys = heads.key_features(features).unflatten(-1, (88, heads.m))
        partners = keys[:, :, heads.neighbours]  # (B, T, 88, K, m), the definition spelt out
        pairs = torch.cat([keys.unsqueeze(3).expand_as(partners), partners], dim=-1)
        expected = heads.base(features) + heads.pair_mlp(pairs).mean(dim=3).transpose(2, 3)
        torch.testing.assert_close(heads(features), expected, atol=1e-5, rtol=1e-5)
