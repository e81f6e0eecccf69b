"""The inference engine: ONNX export, the two runtimes, streamed features, windows and decoding.

Models here are small random Transcribers exported once per session (the shipped model is not needed):
they check the machinery (export, stitching, streaming), not transcription accuracy.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from keyscribe import inference as inf
from keyscribe.audio import load_audio
from keyscribe.decode import DecodeConfig, decode_notes, decode_pedals
from keyscribe.errors import ModelError
from keyscribe.features import FeatureConfig, log_mel

torch = pytest.importorskip("torch")

SR = 16000
TINY = dict(conv_channels=(4, 8, 8), cnn_out=32, lstm_hidden=16, key_embedding=8, gcn_hidden=16)
DECODE = {"onset_threshold": 0.45, "frame_threshold": 0.4, "pedal_threshold": 0.5, "min_pedal_s": 0.1}


def _transcriber(seed: int = 0, **overrides):
    from keyscribe.model import ModelConfig, Transcriber

    torch.manual_seed(seed)
    cooccurrence = np.random.default_rng(seed).random((88, 88)).astype(np.float32)
    model = Transcriber(ModelConfig(**{**TINY, **overrides}), cooccurrence).eval()
    with torch.no_grad():  # sharper outputs than a fresh init's ~0.5 everywhere, so notes come and go
        model.pedal.weight.mul_(40.0)
        model.heads.embedding.mul_(6.0)
    return model


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A training-run folder: checkpoint best.pt, config.json with [decode], and its ONNX export.
    Made once per test session: the other test files import this fixture, and find the folder here."""
    folder = tmp_path_factory.getbasetemp() / "tiny-model-run"
    if (folder / "tiny.json").is_file():
        return folder
    folder.mkdir()
    model = _transcriber()
    torch.save({"model_config": model.config.to_dict(), "model": model.state_dict(),
                "state": {"step": 12, "best_note_f1": 0.5}}, folder / "best.pt")
    (folder / "config.json").write_text(json.dumps({"model": model.config.to_dict(), "decode": DECODE}))
    inf.export_onnx(folder / "best.pt", folder / "tiny.onnx", model_id="tiny-test", with_torch=True)
    return folder


@pytest.fixture(scope="session")
def onnx_model(model_dir) -> inf.Model:
    return inf.load_model(model_dir / "tiny.onnx", device="cpu")


@pytest.fixture(scope="session")
def torch_model(model_dir) -> inf.Model:
    return inf.load_model(model_dir / "best.pt", device="cpu", threads=1)  # no thread-pool contention


@pytest.fixture(scope="session")
def audio_70s(maps_dir) -> np.ndarray:
    return load_audio(maps_dir / "MAPS_MUS-chpn_op25_e3_ENSTDkAm.flac")[:70 * SR]


# ---------------------------------------------------------------------------------------------- export


def test_export_writes_onnx_and_sidecar_with_the_runs_decode_thresholds(model_dir):
    info = json.loads((model_dir / "tiny.json").read_text())
    assert info["model_id"] == "tiny-test"
    assert info["decode"] == DECODE
    assert info["features"]["n_mels"] == 229 and info["features"]["hop_length"] == 512
    assert info["metrics"]["validation_note_f1"] == 0.5
    assert info["outputs"] == list(inf.OUTPUTS)
    assert len(info["sha256"]) == 64 and "CC BY-NC-SA" in info["licence"]
    assert (model_dir / "tiny.pt").is_file()
    assert not list(model_dir.glob(".*tmp"))


@pytest.mark.parametrize("option", [{"harmonics": (0.5, 1, 2, 3)}, {"frame_stack": 16}], ids=["harmonics", "frame_stack"])
def test_model_options_export_and_run_the_same_in_onnxruntime(tmp_path, audio_70s, option):
    model = _transcriber(**option)
    path = inf.export_onnx(model, tmp_path / "option.onnx")  # the export checks onnxruntime against torch
    mel = log_mel(audio_70s[:4 * SR])
    ours = inf.load_model(path, device="cpu").probabilities(mel)
    with torch.inference_mode():
        ref = torch.sigmoid(model(torch.from_numpy(mel)[None])["frame"][0]).numpy()
    assert np.abs(ours["frame"] - ref).max() < 1e-4
    name, value = next(iter(option.items()))
    assert json.loads(path.with_suffix(".json").read_text())["model_config"][name] == (list(value) if isinstance(value, tuple) else value)


def test_a_model_loads_from_its_onnx_json_or_folder(model_dir, onnx_model):
    assert onnx_model.runtime == "onnxruntime" and onnx_model.model_id == "tiny-test"
    assert onnx_model.decode_config == DecodeConfig(**DECODE)
    for given in (model_dir / "tiny.json", model_dir):
        assert inf.load_model(given, device="cpu").model_id == "tiny-test"
    assert inf.load_model(onnx_model) is onnx_model


def test_onnxruntime_and_torch_agree(onnx_model, torch_model, audio_70s):
    mel = log_mel(audio_70s[:8 * SR])
    ours, ref = onnx_model.probabilities(mel), torch_model.probabilities(mel)
    assert set(ours) == set(inf.PROBABILITIES)
    for name in inf.PROBABILITIES:
        assert np.abs(ours[name] - ref[name]).max() < 1e-3, name
    # and through the windows, batched
    window = inf.WindowConfig(window_s=6.0, context_s=1.0, batch=3)
    a = inf.probabilities_windowed(onnx_model, audio_70s[:16 * SR], window)
    b = inf.probabilities_windowed(torch_model, audio_70s[:16 * SR], window)
    assert max(np.abs(a[k] - b[k]).max() for k in inf.PROBABILITIES) < 1e-3


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "nope.onnx", "no such model file"),
    (lambda d: (d / "bad.onnx").write_bytes(b"not a graph") and d / "bad.onnx", "not a loadable ONNX model"),
    (lambda d: (d / "bad.pt").write_bytes(b"not a checkpoint") and d / "bad.pt", "not a usable keyscribe checkpoint"),
    (lambda d: (d / "m.txt").write_text("x") and d / "m.txt", "not a model file"),
    (lambda d: d, "expected one .onnx model"),
])
def test_a_bad_model_is_a_one_line_model_error(tmp_path, make, message):
    with pytest.raises(ModelError, match=message) as error:
        inf.load_model(make(tmp_path), device="cpu")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("config_text, message", [
    ('{"decode": {"onset_treshold": 0.6}}', "unknown \\[decode\\] keys: onset_treshold"),
    ('{"decode": ', "cannot read the decode settings"),
])
def test_a_checkpoint_whose_run_config_is_bad_is_a_one_line_model_error(model_dir, tmp_path, config_text, message):
    shutil.copy(model_dir / "best.pt", tmp_path / "best.pt")
    (tmp_path / "config.json").write_text(config_text)
    with pytest.raises(ModelError, match=message) as error:
        inf.load_model(tmp_path / "best.pt", device="cpu")
    assert "\n" not in str(error.value)


def test_the_shipped_model_missing_is_a_clear_model_error(tmp_path, monkeypatch):
    monkeypatch.setattr(inf, "MODEL_DIR", tmp_path)
    with pytest.raises(ModelError, match="shipped model keyscribe-piano.onnx is missing"):
        inf.load_model(None, device="cpu")


def test_an_unknown_device_is_an_error():
    with pytest.raises(inf.KeyscribeError, match="unknown device"):
        inf.resolve_device("tpu")


def test_cuda_without_a_gpu_is_a_one_line_error(model_dir, monkeypatch):
    monkeypatch.setattr(inf, "_torch_cuda_available", lambda: False)
    monkeypatch.setattr(inf, "_ort_cuda_available", lambda: False)
    with pytest.raises(inf.KeyscribeError, match="neither torch nor onnxruntime sees a CUDA GPU"):
        inf.load_model(model_dir / "tiny.onnx", device="cuda")


def test_on_a_gpu_an_onnx_model_runs_in_torch_from_its_weights_or_auto_falls_back_to_the_cpu(model_dir, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setattr(inf, "resolve_device", lambda device: "cuda")  # as on a machine with a GPU
    monkeypatch.setattr(inf, "_ort_cuda_available", lambda: False)
    monkeypatch.setattr(inf, "TorchModel", lambda module, info, path, device, threads: ("torch", path.name, device))
    assert inf.load_model(model_dir / "tiny.onnx", device="cuda") == ("torch", "tiny.pt", "cuda")
    for name in ("tiny.onnx", "tiny.json"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())  # without tiny.pt
    fallback = inf.load_model(tmp_path / "tiny.onnx", device="auto")
    assert isinstance(fallback, inf.OnnxModel) and fallback.device == "cpu"
    with pytest.raises(ModelError, match="needs onnxruntime-gpu or the torch weights tiny.pt"):
        inf.load_model(tmp_path / "tiny.onnx", device="cuda")


# ---------------------------------------------------------------------------------------------- features


@pytest.mark.parametrize("n_samples", [1, 700, 1024, 1025, 2048, 5000, 3 * SR + 17])
@pytest.mark.parametrize("chunk", [1, 333, 4096, 10 * SR])
def test_streamed_log_mel_equals_log_mel_of_the_whole(n_samples, chunk):
    if chunk == 1 and n_samples > 5000:
        pytest.skip("one-sample chunks of a long signal are only slow")
    audio = np.random.default_rng(n_samples).normal(0, 0.1, n_samples).astype(np.float32)
    mel = inf.StreamingMel()
    parts = [mel.push(audio[i:i + chunk]) for i in range(0, n_samples, chunk)] + [mel.finish()]
    got, ref = np.concatenate(parts), log_mel(audio)
    assert got.shape == ref.shape == (FeatureConfig().n_frames(n_samples), 229)
    assert np.abs(got - ref).max() < 1e-4


# ---------------------------------------------------------------------------------------------- windows


class _Identity(inf.Model):
    """Outputs frame numbers, so stitching errors (lost, repeated or shifted frames) show."""

    def __init__(self):
        super().__init__(inf.ModelInfo("identity"), None)
        self.shapes = []

    def run(self, mel):
        self.shapes.append(mel.shape[:2])
        col = mel[..., :1]
        return {"onset": np.repeat(col, 88, -1), "offset": np.repeat(col, 88, -1), "frame": np.repeat(col, 88, -1),
                "velocity": np.repeat(col, 88, -1), "pedal": np.repeat(col, 3, -1)}


@pytest.mark.parametrize("n_frames", [1, 100, 624, 625, 626, 1000, 1126, 5000])
@pytest.mark.parametrize("context_s, batch", [(0.0, 1), (2.0, 1), (3.0, 4)])
def test_windows_cover_every_frame_once_in_order(n_frames, context_s, batch):
    model = _Identity()
    mel = np.repeat(np.arange(n_frames, dtype=np.float32)[:, None], 229, 1)
    blocks = [mel[i:i + 313] for i in range(0, n_frames, 313)]
    window = inf.WindowConfig(window_s=20.0, context_s=context_s, batch=batch)
    parts = list(inf.iter_probabilities(model, blocks, window))
    joined = np.concatenate([p["onset"][:, 0] for _, p in parts])
    np.testing.assert_array_equal(joined, np.arange(n_frames))
    assert [first for first, _ in parts] == list(np.cumsum([0] + [len(p["onset"]) for _, p in parts[:-1]]))
    assert max(t for _, t in model.shapes) <= 625


def test_stitched_probabilities_of_70_s_equal_the_whole_recordings(onnx_model, audio_70s):
    whole = inf.probabilities_whole(onnx_model, audio_70s)
    stitched = inf.probabilities_windowed(onnx_model, audio_70s)
    for name in inf.PROBABILITIES:
        assert stitched[name].shape == whole[name].shape
        assert np.abs(stitched[name] - whole[name]).max() < 1e-4, name


def test_stitched_notes_of_70_s_equal_the_whole_recordings(onnx_model, audio_70s):
    whole = inf.probabilities_whole(onnx_model, audio_70s)
    cfg, rate = onnx_model.decode_config, onnx_model.features.frame_rate
    ref_notes = decode_notes(whole["onset"], whole["frame"], whole["velocity"], rate, cfg)
    ref_pedals = decode_pedals(whole["pedal_frame"], rate, cfg)
    result = inf.transcribe_chunks(onnx_model, inf.array_chunks(audio_70s, SR, 10.0))
    assert len(ref_notes) > 100 and len(ref_pedals) > 3
    assert result.n_frames == len(whole["onset"]) and result.n_samples == len(audio_70s)
    ours = {(round(n.onset_s, 3), n.pitch) for n in result.notes}
    theirs = {(round(n.onset_s, 3), n.pitch) for n in ref_notes}
    assert len(ours ^ theirs) <= 0.01 * len(theirs)  # a probability within 1e-4 of a threshold may flip
    assert len(result.pedals) == len(ref_pedals)


# ---------------------------------------------------------------------------------------------- decoding


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    from scipy.ndimage import uniform_filter1d
    return uniform_filter1d(x, k, axis=0)


@pytest.mark.parametrize("seed", range(12))
def test_streaming_decoder_equals_the_batch_decoder_exactly(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 700))
    onset = (_smooth(rng.random((n, 88)).astype(np.float32), 3) ** 3 * 2).astype(np.float32)
    frame = (_smooth(rng.random((n, 88)).astype(np.float32), 9) * 1.2).astype(np.float32)
    velocity = rng.random((n, 88)).astype(np.float32)
    pedal = (_smooth(rng.random(n).astype(np.float32), 7) * 1.1).astype(np.float32)
    cfg = DecodeConfig(onset_threshold=float(rng.uniform(0.3, 0.6)), frame_threshold=float(rng.uniform(0.4, 0.6)))
    decoder = inf.StreamingDecoder(31.25, cfg)
    cuts = np.unique(np.concatenate([[0, n], rng.integers(0, n, size=int(rng.integers(0, 25)))]))
    if seed == 0:
        cuts = np.arange(n + 1)  # one frame at a time
    for a, b in zip(cuts[:-1], cuts[1:]):
        decoder.push(onset[a:b], frame[a:b], velocity[a:b], pedal[a:b])
    notes, pedals = decoder.finish()
    assert notes == decode_notes(onset, frame, velocity, 31.25, cfg)
    assert pedals == decode_pedals(pedal, 31.25, cfg)


def test_the_engine_never_imports_torch_on_the_onnx_path(model_dir, tmp_path):
    import subprocess

    wav = tmp_path / "tone.wav"
    t = np.arange(3 * SR) / SR
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)
    code = ("import sys, keyscribe; assert 'onnxruntime' not in sys.modules; "
            f"t = keyscribe.transcribe({str(wav)!r}, model={str(model_dir / 'tiny.onnx')!r}, device='cpu'); "
            "assert 'torch' not in sys.modules, 'torch imported'; print(t.duration_s)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == pytest.approx(3.0)


def test_errors_from_the_reader_thread_and_the_callback_reach_the_caller(onnx_model):
    import threading

    from keyscribe.errors import AudioError

    def failing_chunks():
        yield np.zeros(SR * 10, np.float32)
        yield np.zeros(SR * 10, np.float32)
        raise AudioError("x.mp3: cannot decode the audio (damaged)")

    with pytest.raises(AudioError, match="damaged"):
        inf.transcribe_chunks(onnx_model, failing_chunks())

    def stop(done_s):
        raise KeyboardInterrupt

    endless = (np.zeros(SR * 10, np.float32) for _ in range(10_000))
    with pytest.raises(KeyboardInterrupt):
        inf.transcribe_chunks(onnx_model, endless, progress=stop)
    assert not [t for t in threading.enumerate() if t.name == "keyscribe-audio"]
