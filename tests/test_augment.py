"""Augmentation: same length, onsets where they were, reproducible, parameters recorded and JSON-able.

The test signal is synthetic (decaying harmonic tones with 1 ms attacks at known times), so these tests
need neither soundfonts nor samples.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from keyscribe.data import augment as A
from keyscribe.errors import AudioError

SR = 16000
ONSETS = [0.30 + 0.9 * i for i in range(10)]
ONLY = {name: A.AugmentConfig(**{f"p_{n}": float(n == name) for n in A.TRANSFORMS}) for name in A.TRANSFORMS}


@pytest.fixture(scope="module")
def tones() -> np.ndarray:
    rng = np.random.default_rng(0)
    n = int((ONSETS[-1] + 1.2) * SR)
    x = np.zeros(n)
    for onset in ONSETS:
        f0 = 110 * 2 ** (rng.integers(0, 36) / 12)
        t = np.arange(int(1.0 * SR)) / SR
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 9) if f0 * h < 7000)
        tone *= np.minimum(t / 0.001, 1) * np.exp(-t / 0.25) * rng.uniform(0.2, 0.6)
        a = int(round(onset * SR))
        x[a: a + len(t)] += tone[: n - a]
    return x.astype(np.float32)


def onsets_ms(y: np.ndarray, threshold_db: float = -20.0) -> np.ndarray:
    """Detected minus true onsets (ms): first crossing of threshold_db re each tone's peak, measured
    above the level just before it."""
    out = []
    w = round(0.001 * SR)
    env = np.sqrt(np.convolve(y.astype(np.float64) ** 2, np.ones(w) / w, mode="same"))
    for onset in ONSETS:
        a, b = int((onset - 0.08) * SR), int((onset + 0.15) * SR)
        seg = env[a:b]
        base = float(np.median(env[a: a + int(0.05 * SR)]))
        thr = base + (seg.max() - base) * 10 ** (threshold_db / 20)
        out.append(((a + int(np.argmax(seg >= thr))) / SR - onset) * 1e3)
    return np.array(out)


def test_every_transform_keeps_length_and_records_json(tones):
    for name, cfg in ONLY.items():
        for seed in range(3):
            y, params = A.augment(tones, SR, np.random.default_rng(seed), cfg)
            assert y.dtype == np.float32 and y.shape == tones.shape, name
            assert np.isfinite(y).all() and np.abs(y).max() <= 1.0, name
            assert params["applied"] == [name] and name in params
            json.dumps(params)  # JSON-able as it is


def test_default_chain_reproducible(tones):
    a, pa = A.augment(tones, SR, np.random.default_rng(42))
    b, pb = A.augment(tones, SR, np.random.default_rng(42))
    assert a.tobytes() == b.tobytes() and pa == pb
    c, pc = A.augment(tones, SR, np.random.default_rng(43))
    assert c.tobytes() != a.tobytes()
    assert json.loads(json.dumps(A.config_dict(A.AugmentConfig())))["p_reverb"] == 0.6


@pytest.mark.parametrize("name", ["detune", "eq", "reverb", "compress", "lowpass", "phone", "gain", "codec"])
def test_onsets_stay_put(tones, name):
    dry = onsets_ms(tones)
    for seed in range(4):
        y, params = A.augment(tones, SR, np.random.default_rng(seed), ONLY[name])
        shift = onsets_ms(y) - dry
        assert np.abs(shift).max() <= 5.0, (name, params[name], shift)


@pytest.mark.parametrize("codec", ["mp3", "opus", "aac", "vorbis"])
def test_codecs_realigned(tones, codec):
    cfg = A.AugmentConfig(**{f"p_{n}": float(n == "codec") for n in A.TRANSFORMS}, codecs=(codec,), codec_kbps=(48,))
    y, params = A.augment(tones, SR, np.random.default_rng(0), cfg)
    assert params["codec"]["codec"] == codec
    if codec == "aac":
        assert params["codec"]["delay_samples"] == 1024  # its priming samples, found by correlation
    corr = float(np.dot(y, tones) / (np.linalg.norm(y) * np.linalg.norm(tones)))
    assert corr > 0.9, (codec, corr)
    assert np.abs(onsets_ms(y) - onsets_ms(tones)).max() <= 2.0


def test_reverb_rirs_start_at_the_direct_sound():
    bank = A.rir_bank(SR)
    assert len(bank) == A.AugmentConfig().rir_bank_size
    for h, pre, info in bank:
        assert int(np.argmax(np.abs(h))) == pre and h[pre] == pytest.approx(1.0)
        assert pre <= 40 and len(h) >= pre + int(0.9 * info["rt60_s"] * SR)
        # energy decays at about the room's RT60 (Schroeder integral, -5..-25 dB slope)
        edc = np.cumsum((h[pre:].astype(np.float64) ** 2)[::-1])[::-1]
        edc_db = 10 * np.log10(edc / edc[0] + 1e-30)
        t5, t25 = np.argmax(edc_db < -5), np.argmax(edc_db < -25)
        rt60 = 3 * (t25 - t5) / SR
        assert 0.4 * info["rt60_s"] < rt60 < 1.6 * info["rt60_s"], (rt60, info["rt60_s"])


@pytest.mark.parametrize("f0", [440.0, 1000.0])
def test_detune_moves_pitch_not_time(f0):
    """Above ~330 Hz (periods shorter than twice the 1.5 ms splice search) steady tones are spliced in
    phase: their pitch moves by the whole amount and their level does not dip at the splices."""
    t = np.arange(3 * SR) / SR
    x = (0.5 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
    for cents in (-15.0, 15.0):
        y, info = A.detune(x, SR, cents)
        assert len(y) == len(x)
        seg = y[SR // 2: SR // 2 + 2 * SR]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 16 * SR))
        f = np.argmax(spec) / 16
        assert 1200 * math.log2(f / f0) == pytest.approx(cents, abs=1.0)
        frames = np.sqrt(np.mean(seg.reshape(-1, 80).astype(np.float64) ** 2, axis=1))  # 5 ms RMS
        assert 20 * np.log10(frames.max() / frames.min()) < 1.0
        assert info["max_onset_shift_ms"] < 4.5


def test_noise_snr_and_gain_level(tones):
    y, params = A.augment(tones, SR, np.random.default_rng(3), ONLY["noise"])
    noise = y - tones
    snr = 10 * np.log10(A.active_power(tones, SR) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(params["noise"]["snr_db"], abs=1.0)
    assert 15 <= params["noise"]["snr_db"] <= 40
    y, params = A.augment(tones, SR, np.random.default_rng(3), ONLY["gain"])
    if not params["gain"]["peak_limited"]:
        level = 10 * np.log10(A.active_power(y, SR))
        assert level == pytest.approx(params["gain"]["loudness_dbfs"], abs=0.1)


def test_rejects_stereo():
    with pytest.raises(AudioError):
        A.augment(np.zeros((2, 100), np.float32), SR, np.random.default_rng(0))
