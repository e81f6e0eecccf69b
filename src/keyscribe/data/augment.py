"""Label-preserving audio augmentation for rendered training audio.

`augment(audio, sample_rate, rng, config)` runs a random chain of transforms, each applied with its own
probability from `AugmentConfig`, and returns `(augmented, params)`: float32 audio of exactly the input's
length, with every onset where it was (so the label rolls made from the performance still fit), and a
JSON-able dict of every drawn parameter. The same `rng` state and config give the same bytes.

The chain, in signal-path order (a piano, a room, a microphone, a device, a file):

1. `detune`   the whole piano +-`detune_cents`: resampled once (soxr) and laid back on the original time
              line in segments anchored at the strongest energy rise of every `detune_segment_s`, with
              4 ms crossfades just before each anchor, each segment's start moved by <= 1.5 ms to splice
              in phase (WSOLA). Onsets move by at most 1.5 ms + (distance to their anchor) x 0.87 %
              (< 4.2 ms at 15 cents; typically < 1 ms). `render(..., detune_cents=)` detunes exactly.
2. `eq`       2-5 random peaking biquads (+- `eq_gain_db`) plus optional low/high shelves (RBJ cookbook).
3. `reverb`   convolution with a room impulse response from a bank simulated once per process with
              pyroomacoustics (image-source model up to order `rir_max_order`, continued by an
              exponentially decaying noise tail at the room's RT60 when the model is cut short). Every RIR
              is cut to start at its direct sound (the largest tap) so the reverberant signal keeps the
              dry signal's onsets; its reverberant part is scaled by a random wet gain.
4. `noise`    white/pink/brown/blue noise at `snr_db` re the signal's active power, optional mains hum.
5. `compress` a feed-forward compressor (threshold re the loud level, ratio, attack, release).
6. `lowpass`  a Butterworth low-pass (2-6 kHz) - a dull microphone or a cheap recorder.
7. `phone`    a 300-3400 Hz-ish band-pass with light tanh distortion - a phone's microphone.
8. `gain`     loudness normalisation to a random level (active RMS, dBFS), peak-limited to 0.99.
9. `codec`    lossy re-encoding with PyAV (mp3, opus, aac, vorbis at low bit rates), decoded and
              re-aligned to the input by cross-correlation (the codec's delay, e.g. AAC's 1024 priming
              samples, is found, not assumed), cut or padded to the original length.

Cost per hour of 16 kHz audio (one core, every transform applied): see `benchmarks/render_augment.py`
and the figures in docs/pianos/README.md.
"""
from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from keyscribe.audio import active_power, frame_power, loudness_gain
from keyscribe.errors import AudioError

TRANSFORMS = ("detune", "eq", "reverb", "noise", "compress", "lowpass", "phone", "gain", "codec")


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (`p_*`) and ranges of the transforms; see the module doc for what each does."""

    p_detune: float = 0.3
    p_eq: float = 0.7
    p_reverb: float = 0.6
    p_noise: float = 0.5
    p_compress: float = 0.3
    p_lowpass: float = 0.1
    p_phone: float = 0.05
    p_gain: float = 1.0
    p_codec: float = 0.1

    detune_cents: float = 15.0
    detune_segment_s: float = 0.15
    eq_bands: tuple[int, int] = (2, 5)
    eq_gain_db: float = 9.0
    eq_q: tuple[float, float] = (0.4, 4.0)
    shelf_gain_db: float = 6.0
    rt60_s: tuple[float, float] = (0.2, 1.2)
    rir_bank_size: int = 24
    rir_bank_seed: int = 20240601
    rir_max_order: int = 12
    wet_gain: tuple[float, float] = (0.4, 1.0)
    snr_db: tuple[float, float] = (15.0, 40.0)
    p_hum: float = 0.25
    compress_threshold_db: tuple[float, float] = (-24.0, -6.0)  # re the 95th-percentile 2 ms level
    compress_ratio: tuple[float, float] = (1.5, 6.0)
    compress_attack_s: tuple[float, float] = (0.002, 0.02)
    compress_release_s: tuple[float, float] = (0.05, 0.4)
    lowpass_hz: tuple[float, float] = (2000.0, 6500.0)
    phone_low_hz: tuple[float, float] = (250.0, 450.0)
    phone_high_hz: tuple[float, float] = (3000.0, 3800.0)
    phone_drive: tuple[float, float] = (1.0, 4.0)
    loudness_dbfs: tuple[float, float] = (-32.0, -16.0)
    codecs: tuple[str, ...] = ("mp3", "opus", "aac", "vorbis")
    codec_kbps: tuple[int, ...] = (24, 32, 48, 64, 96)


def augment(audio: np.ndarray, sample_rate: int, rng: np.random.Generator,
            config: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, dict]:
    """`audio` through a random chain of the transforms above: (float32 audio of the same length, params)."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"augment wants mono audio (1-D), got shape {x.shape}")
    n = len(x)
    params: dict[str, Any] = {"sample_rate": int(sample_rate), "applied": []}
    # Every coin is drawn first, in a fixed order, so which transforms run never shifts the draws of others.
    coins = {name: bool(rng.random() < getattr(config, f"p_{name}")) for name in TRANSFORMS}
    if n == 0:
        return x.copy(), params
    x = x.copy()
    for name in TRANSFORMS:
        if not coins[name]:
            continue
        x, p = _APPLY[name](x, sample_rate, rng, config)
        x = np.asarray(x, dtype=np.float32)
        assert len(x) == n, name
        params["applied"].append(name)
        params[name] = _jsonable(p)
    top = float(np.max(np.abs(x)))
    if not math.isfinite(top):
        raise AudioError("augmentation produced non-finite samples")
    if top > 1.0:  # a codec's overshoot: scale back into range
        x *= np.float32(0.999 / top)
        params["final_scale"] = 0.999 / top
    return x, params


def config_dict(config: AugmentConfig) -> dict:
    """The config as a JSON-able dict (for manifests)."""
    return _jsonable(asdict(config))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    if isinstance(obj, (np.integer, int)) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


# ------------------------------------------------------------------------------------------- detune

def _anchors(x: np.ndarray, sample_rate: int, segment_s: float, hop: int, min_gap: int) -> np.ndarray:
    """Sample indices starting segments: 0, then the strongest energy rise in each `segment_s` block."""
    e = 10 * np.log10(frame_power(x, hop) + 1e-10)
    rise = np.diff(e, prepend=e[0])
    block = max(2, int(round(segment_s * sample_rate / hop)))
    m = len(rise) // block
    anchors = [0]
    if m > 0:
        best = np.argmax(rise[: m * block].reshape(m, block), axis=1) + np.arange(m) * block
        for f in best:
            a = int(f) * hop
            if a - anchors[-1] >= min_gap:
                anchors.append(a)
    return np.array(anchors, dtype=np.int64)


def detune(x: np.ndarray, sample_rate: int, cents: float, segment_s: float = 0.15,
           search_s: float = 0.0015) -> tuple[np.ndarray, dict]:
    """`x` with its pitch moved by `cents`, time line kept (see the module doc).

    Segment k plays the resampled signal from the point that puts its anchor back on the original time
    line, moved by at most `search_s` to the offset whose waveform best continues the previous segment
    through the crossfade (as WSOLA does), so steady tones are spliced in phase instead of beating.
    """
    import soxr
    n = len(x)
    r = 2.0 ** (cents / 1200.0)  # pitch ratio: y[m] = x(m * r)
    y = soxr.resample(x, sample_rate, sample_rate / r, quality="HQ").astype(np.float32)
    hop = max(1, round(0.004 * sample_rate))
    xfade = max(2, round(0.004 * sample_rate))
    search = max(0, round(search_s * sample_rate))
    anchors = _anchors(x, sample_rate, segment_s, hop, min_gap=2 * (xfade + hop))
    cuts = np.maximum(anchors - hop, 0)  # segment k covers [cuts[k], cuts[k+1]); crossfade ends at the cut
    cuts[0] = 0
    nominal = np.round(anchors * (1.0 / r - 1.0)).astype(np.int64)  # output t reads y[t + offset_k]
    pad = int(abs(nominal).max()) + 2 * xfade + hop + search + 8
    ypad = np.zeros(len(y) + 2 * pad + n // 50 + 16, dtype=np.float32)
    ypad[pad: pad + len(y)] = y
    offsets = nominal.copy()
    for k in range(1, len(anchors)):
        c = int(cuts[k])
        a = max(c - xfade, int(cuts[k - 1]))
        ref = ypad[a + int(offsets[k - 1]) + pad: c + xfade + int(offsets[k - 1]) + pad].astype(np.float64)
        lo = a + int(nominal[k]) - search + pad
        cand = ypad[lo: lo + len(ref) + 2 * search].astype(np.float64)
        if search == 0 or not ref.any():
            continue
        corr = np.correlate(cand, ref, mode="valid")
        energy = np.convolve(cand ** 2, np.ones(len(ref)), mode="valid")
        score = corr / np.sqrt(energy + 1e-12)
        offsets[k] = int(nominal[k]) - search + int(np.argmax(score))
    out = np.empty(n, dtype=np.float32)
    bounds = np.append(cuts, n)
    for k in range(len(anchors)):
        a, b, d = int(bounds[k]), int(bounds[k + 1]), int(offsets[k])
        out[a:b] = ypad[a + d + pad: b + d + pad]
    ramp = (0.5 - 0.5 * np.cos(np.pi * (np.arange(xfade) + 0.5) / xfade)).astype(np.float32)
    for k in range(1, len(anchors)):
        c = int(cuts[k])
        a = max(c - xfade, int(cuts[k - 1]))
        w = ramp[xfade - (c - a):]
        prev = ypad[a + int(offsets[k - 1]) + pad: c + int(offsets[k - 1]) + pad]
        new = ypad[a + int(offsets[k]) + pad: c + int(offsets[k]) + pad]
        out[a:c] = prev * (1 - w) + new * w
    seg = np.diff(np.append(anchors, n))
    drift_ms = float(seg.max() * abs(1 - 1 / r) / sample_rate * 1e3) if len(seg) else 0.0
    return out, {"cents": cents, "segments": int(len(anchors)), "max_onset_shift_ms": drift_ms + search_s * 1e3}


def _apply_detune(x, sr, rng, cfg):
    cents = float(rng.uniform(-cfg.detune_cents, cfg.detune_cents))
    return detune(x, sr, cents, cfg.detune_segment_s)


# ----------------------------------------------------------------------------------------------- eq

def biquad(kind: str, f0: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """One second-order section (b0 b1 b2 1 a1 a2) from the RBJ audio-EQ cookbook: 'peak', 'lowshelf',
    'highshelf' (shelf slope 1)."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / sample_rate
    cw, sw = math.cos(w0), math.sin(w0)
    if kind == "peak":
        alpha = sw / (2 * q)
        b = [1 + alpha * a, -2 * cw, 1 - alpha * a]
        den = [1 + alpha / a, -2 * cw, 1 - alpha / a]
    else:
        alpha = sw / 2 * math.sqrt(2)
        sa = 2 * math.sqrt(a) * alpha
        if kind == "lowshelf":
            b = [a * ((a + 1) - (a - 1) * cw + sa), 2 * a * ((a - 1) - (a + 1) * cw), a * ((a + 1) - (a - 1) * cw - sa)]
            den = [(a + 1) + (a - 1) * cw + sa, -2 * ((a - 1) + (a + 1) * cw), (a + 1) + (a - 1) * cw - sa]
        elif kind == "highshelf":
            b = [a * ((a + 1) + (a - 1) * cw + sa), -2 * a * ((a - 1) + (a + 1) * cw), a * ((a + 1) + (a - 1) * cw - sa)]
            den = [(a + 1) - (a - 1) * cw + sa, 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - sa]
        else:
            raise ValueError(f"unknown biquad kind {kind!r}")
    return np.array([b[0], b[1], b[2], den[0], den[1], den[2]]) / den[0]


def _apply_eq(x, sr, rng, cfg):
    from scipy.signal import sosfilt
    top = min(8000.0, 0.45 * sr)
    bands = []
    for _ in range(int(rng.integers(cfg.eq_bands[0], cfg.eq_bands[1] + 1))):
        bands.append({"kind": "peak", "hz": _log_uniform(rng, 60.0, top),
                      "gain_db": float(rng.uniform(-cfg.eq_gain_db, cfg.eq_gain_db)),
                      "q": _log_uniform(rng, *cfg.eq_q)})
    if rng.random() < 0.5:
        bands.append({"kind": "lowshelf", "hz": _log_uniform(rng, 80.0, 400.0),
                      "gain_db": float(rng.uniform(-cfg.shelf_gain_db, cfg.shelf_gain_db)), "q": 0.707})
    if rng.random() < 0.5:
        bands.append({"kind": "highshelf", "hz": _log_uniform(rng, 2000.0, min(6000.0, top)),
                      "gain_db": float(rng.uniform(-cfg.shelf_gain_db, cfg.shelf_gain_db)), "q": 0.707})
    sos = np.stack([biquad(b["kind"], b["hz"], b["gain_db"], b["q"], sr) for b in bands])
    return sosfilt(sos, x).astype(np.float32), {"bands": bands}


# ------------------------------------------------------------------------------------------- reverb

_RIR_BANKS: dict[tuple, list[tuple[np.ndarray, int, dict]]] = {}


def _late_tail(rng: np.random.Generator, n: int, rt60: float, sr: int) -> np.ndarray:
    from scipy.signal import lfilter
    noise = rng.standard_normal(n)
    pole = math.exp(-2 * math.pi * 5000.0 / sr) if sr > 10000 else 0.0  # a little duller than white
    noise = lfilter([1 - pole], [1, -pole], noise)
    t = np.arange(n) / sr
    return noise * 10 ** (-3 * t / rt60)


def simulate_rir(rng: np.random.Generator, sample_rate: int, rt60_range=(0.2, 1.2), max_order: int = 12
                 ) -> tuple[np.ndarray, int, dict]:
    """One random shoebox room's impulse response (float32), the index of its direct sound, and the room.

    The response starts `pre` samples before the direct sound (the fractional-delay filter's leading
    half, <= 40 taps) and is scaled so the direct sound's tap is 1.
    """
    import pyroomacoustics as pra
    while True:
        rt60 = _log_uniform(rng, *rt60_range)
        dims = np.array([rng.uniform(3.0, 20.0), rng.uniform(3.0, 14.0), rng.uniform(2.4, 6.0)])
        try:
            e_abs, full_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # this room cannot be that dry
            continue
        margin = 0.5
        src = np.array([rng.uniform(margin, d - margin) for d in dims])
        mic = np.array([rng.uniform(margin, d - margin) for d in dims])
        src[2] = min(dims[2] - margin, rng.uniform(0.8, 1.5))  # a piano's soundboard height
        dist = float(np.linalg.norm(src - mic))
        if 0.5 <= dist <= 8.0:
            break
    order = int(min(full_order, max_order))
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(float(e_abs)), max_order=order,
                       air_absorption=True)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    h = np.asarray(room.rir[0][0], dtype=np.float64)
    direct = int(np.argmax(np.abs(h)))
    length = direct + int(1.2 * rt60 * sample_rate)  # ~ -72 dB
    if order < full_order:  # continue the cut-short image model by a statistical tail
        c = 343.0
        t_x = direct + int(min(0.5 * rt60, order * float(dims.min()) / c * 0.5) * sample_rate)
        t_x = max(t_x, direct + int(0.02 * sample_rate))
        win = max(8, int(0.005 * sample_rate))
        hp = np.zeros(max(length, t_x + win) + 1)
        hp[: min(len(h), len(hp))] = h[: len(hp)]
        ref = math.sqrt(float(np.mean(hp[t_x - win: t_x + win] ** 2)) + 1e-20)
        tail = _late_tail(rng, len(hp) - t_x, rt60, sample_rate)
        tail *= ref / (math.sqrt(float(np.mean(tail[: 2 * win] ** 2))) + 1e-20)
        xf = np.clip((np.arange(len(hp) - t_x)) / (2 * win), 0, 1)
        hp[t_x:] = hp[t_x:] * (1 - xf) + tail * xf
        h = hp
    h = h[:length]
    pre = min(direct, 40)
    h = h[direct - pre:]
    fade = min(len(h) - pre - 1, int(0.05 * sample_rate))
    if fade > 0:
        h[-fade:] *= np.linspace(1, 0, fade)
    h /= h[pre]
    info = {"rt60_s": rt60, "room_m": dims.tolist(), "source_m": src.tolist(), "mic_m": mic.tolist(),
            "distance_m": dist, "absorption": float(e_abs), "ism_order": order, "ism_full_order": int(full_order)}
    return h.astype(np.float32), pre, info


def rir_bank(sample_rate: int, config: AugmentConfig = AugmentConfig()) -> list[tuple[np.ndarray, int, dict]]:
    """The process-wide bank of simulated RIRs for `sample_rate` (made on first use from the bank seed)."""
    key = (int(sample_rate), config.rir_bank_size, config.rir_bank_seed, tuple(config.rt60_s), config.rir_max_order)
    bank = _RIR_BANKS.get(key)
    if bank is None:
        rng = np.random.default_rng(config.rir_bank_seed)
        bank = [simulate_rir(rng, sample_rate, config.rt60_s, config.rir_max_order)
                for _ in range(config.rir_bank_size)]
        _RIR_BANKS[key] = bank
    return bank


def convolve_aligned(x: np.ndarray, h: np.ndarray, pre: int) -> np.ndarray:
    """`x` convolved with `h` whose direct sound is at index `pre`, cut to len(x) so it stays aligned."""
    from scipy.signal import oaconvolve
    y = oaconvolve(x, h, mode="full")
    return y[pre: pre + len(x)]


def _apply_reverb(x, sr, rng, cfg):
    bank = rir_bank(sr, cfg)
    i = int(rng.integers(len(bank)))
    h, pre, info = bank[i]
    wet = float(rng.uniform(*cfg.wet_gain))
    h = h.copy()
    early = pre + max(1, round(0.0025 * sr))  # keep the direct sound as it is
    h[early:] *= np.float32(wet)
    return convolve_aligned(x, h, pre).astype(np.float32), {"rir": i, "wet_gain": wet, **info}


# -------------------------------------------------------------------------------------------- noise

_PINK_B = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
_PINK_A = [1.0, -2.494956002, 2.017265875, -0.522189400]


def coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-RMS noise: 'white', 'pink' (-3 dB/oct), 'brown' (-6 dB/oct, leaky), 'blue' (+6 dB/oct)."""
    from scipy.signal import lfilter
    w = rng.standard_normal(n, dtype=np.float32)
    if colour == "pink":
        w = lfilter(_PINK_B, _PINK_A, w)
    elif colour == "brown":
        w = lfilter([1.0], [1.0, -0.995], w)
    elif colour == "blue":
        w = np.diff(w, prepend=np.float32(0))
    elif colour != "white":
        raise ValueError(f"unknown noise colour {colour!r}")
    w = np.asarray(w, dtype=np.float32)
    rms = math.sqrt(float(np.mean(np.square(w, dtype=np.float64)))) or 1.0
    return w / np.float32(rms)


def _apply_noise(x, sr, rng, cfg):
    colour = str(rng.choice(["white", "pink", "brown", "blue"]))
    snr = float(rng.uniform(*cfg.snr_db))
    ps = active_power(x, sr)
    noise = coloured_noise(rng, len(x), colour)
    level = math.sqrt(ps / 10 ** (snr / 10)) if ps > 0 else 0.0
    p: dict[str, Any] = {"colour": colour, "snr_db": snr}
    y = x + noise * np.float32(level)
    if rng.random() < cfg.p_hum:
        f0 = float(rng.choice([50.0, 60.0]))
        hum_db = float(rng.uniform(-6.0, 6.0))  # re the noise level
        amps = rng.uniform(0.0, 1.0, size=5) / np.arange(1, 6)
        t = np.arange(sr) / sr  # one second holds a whole number of periods of both
        period = np.sum([a * np.sin(2 * np.pi * f0 * (k + 1) * t + rng.uniform(0, 2 * np.pi))
                         for k, a in enumerate(amps)], axis=0)
        period *= level * 10 ** (hum_db / 20) / (np.sqrt(np.mean(period ** 2)) + 1e-12)
        y += np.resize(period.astype(np.float32), len(x))
        p["hum"] = {"hz": f0, "db_re_noise": hum_db, "harmonics": amps.tolist()}
    return y, p


# ----------------------------------------------------------------------------------------- compress

def compress(x: np.ndarray, sample_rate: int, threshold_db: float, ratio: float, attack_s: float,
             release_s: float) -> np.ndarray:
    """Feed-forward compression on a 2 ms RMS detector; gain reduction rises with the attack time
    constant and falls at most 8.7 dB per release time constant. No make-up gain."""
    from scipy.signal import lfilter
    hop = max(1, round(0.002 * sample_rate))
    level = 10 * np.log10(frame_power(x, hop) + 1e-12)
    gr = np.maximum(0.0, level - threshold_db) * (1 - 1 / ratio)
    idx = np.arange(len(gr), dtype=np.float64)
    fall = 8.686 / release_s * hop / sample_rate  # dB per frame
    held = np.maximum.accumulate(gr + fall * idx) - fall * idx  # max over k<=n of gr[k] - fall (n-k)
    pole = math.exp(-hop / (attack_s * sample_rate))
    smooth = lfilter([1 - pole], [1, -pole], held)
    gain = 10 ** (-smooth / 20)
    centres = (np.arange(len(gain)) + 0.5) * hop
    g = np.interp(np.arange(len(x)), centres, gain).astype(np.float32)
    return x * g


def _apply_compress(x, sr, rng, cfg):
    loud = float(np.percentile(10 * np.log10(frame_power(x, max(1, round(0.002 * sr))) + 1e-12), 95))
    p = {"threshold_db_re_loud": float(rng.uniform(*cfg.compress_threshold_db)),
         "ratio": float(rng.uniform(*cfg.compress_ratio)),
         "attack_s": _log_uniform(rng, *cfg.compress_attack_s),
         "release_s": _log_uniform(rng, *cfg.compress_release_s)}
    y = compress(x, sr, loud + p["threshold_db_re_loud"], p["ratio"], p["attack_s"], p["release_s"])
    return y, p


# ---------------------------------------------------------------------------------- lowpass / phone

def _apply_lowpass(x, sr, rng, cfg):
    from scipy.signal import butter, sosfilt
    hz = _log_uniform(rng, cfg.lowpass_hz[0], min(cfg.lowpass_hz[1], 0.45 * sr))
    order = int(rng.choice([2, 4, 6]))
    sos = butter(order, hz, btype="lowpass", fs=sr, output="sos")
    return sosfilt(sos, x).astype(np.float32), {"hz": hz, "order": order}


def _apply_phone(x, sr, rng, cfg):
    from scipy.signal import butter, sosfilt
    lo = float(rng.uniform(*cfg.phone_low_hz))
    hi = float(min(rng.uniform(*cfg.phone_high_hz), 0.45 * sr))
    drive = float(rng.uniform(*cfg.phone_drive))
    sos = np.concatenate([butter(4, lo, btype="highpass", fs=sr, output="sos"),
                          butter(6, hi, btype="lowpass", fs=sr, output="sos")])
    y = sosfilt(sos, x)
    peak = float(np.max(np.abs(y))) or 1.0
    y = np.tanh(drive * y / peak) * (peak / math.tanh(drive))
    return y.astype(np.float32), {"low_hz": lo, "high_hz": hi, "drive": drive}


# --------------------------------------------------------------------------------------------- gain

def _apply_gain(x, sr, rng, cfg):
    target = float(rng.uniform(*cfg.loudness_dbfs))
    gain = loudness_gain(x, sr, target)
    y = x * np.float32(gain)
    peak = float(np.max(np.abs(y)))
    limited = peak > 0.99
    if limited:
        y *= np.float32(0.99 / peak)
    return y, {"loudness_dbfs": target, "gain_db": 20 * math.log10(gain), "peak_limited": limited}


# -------------------------------------------------------------------------------------------- codec

_CODECS = {  # name: (container, encoder, encoder options, channels)
    "mp3": ("mp3", "libmp3lame", {"compression_level": "7"}, 1),
    "opus": ("ogg", "libopus", {"compression_level": "3"}, 1),
    "aac": ("adts", "aac", {}, 1),
    "vorbis": ("ogg", "vorbis", {"strict": "experimental"}, 2),  # FFmpeg's own encoder: stereo only
}


def _encoder_rate(codec: str, sr: int) -> int:
    if codec == "opus":
        return min((r for r in (8000, 12000, 16000, 24000, 48000) if r >= sr), default=48000)
    if codec == "mp3":
        return min((r for r in (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000) if r >= sr), default=48000)
    return sr


def codec_roundtrip(x: np.ndarray, sample_rate: int, codec: str, kbps: int) -> tuple[np.ndarray, int]:
    """`x` encoded with `codec` at `kbps` and decoded back (any length, at `sample_rate`), and the
    encoded size in bytes."""
    import av
    import soxr
    container, encoder, options, channels = _CODECS[codec]
    rate = _encoder_rate(codec, sample_rate)
    src = x if rate == sample_rate else soxr.resample(x, sample_rate, rate).astype(np.float32)
    buf = io.BytesIO()
    layout = "mono" if channels == 1 else "stereo"
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(encoder, rate=rate, layout=layout, options=dict(options))
        stream.bit_rate = int(kbps) * 1000 * channels
        planes = np.ascontiguousarray(np.broadcast_to(src, (channels, len(src))), dtype=np.float32)
        step = 1 << 16
        for i in range(0, len(src), step):
            chunk = np.ascontiguousarray(planes[:, i: i + step])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    data = buf.getvalue()
    pieces = []
    dec_rate = None
    with av.open(io.BytesIO(data)) as inp:
        for frame in inp.decode(audio=0):
            dec_rate = frame.sample_rate
            arr = frame.to_ndarray()
            if frame.format.is_planar:
                pieces.append(arr.mean(axis=0))
            else:
                pieces.append(arr.reshape(-1, len(frame.layout.channels)).mean(axis=1))
    y = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    if dec_rate and dec_rate != sample_rate:
        y = soxr.resample(y, dec_rate, sample_rate).astype(np.float32)
    return y, len(data)


def best_lag(ref: np.ndarray, y: np.ndarray, sample_rate: int, max_lag: int) -> int:
    """The lag L (samples, |L| <= max_lag) at which y[t + L] best matches ref[t], by cross-correlation
    over the loudest 4 s of `ref`."""
    from scipy.signal import fftconvolve
    win = min(len(ref), 4 * sample_rate)
    p = frame_power(ref, max(1, sample_rate // 10))
    hop = max(1, sample_rate // 10)
    centre = int(np.argmax(p)) * hop + hop // 2 if p.size else 0
    a = int(min(max(0, centre - win // 2), max(0, len(ref) - win)))
    seg = ref[a: a + win].astype(np.float64)
    lo = a - max_lag
    ext = np.zeros(win + 2 * max_lag)
    s0, s1 = max(lo, 0), min(lo + len(ext), len(y))
    if s1 > s0:
        ext[s0 - lo: s1 - lo] = y[s0:s1]
    corr = fftconvolve(ext, seg[::-1], mode="valid")  # corr[k] = sum seg[t] * ext[t + k]
    return int(np.argmax(corr)) - max_lag


def _apply_codec(x, sr, rng, cfg):
    codec = str(rng.choice(list(cfg.codecs)))
    kbps = int(rng.choice(list(cfg.codec_kbps)))
    y, size = codec_roundtrip(x, sr, codec, kbps)
    lag = best_lag(x, y, sr, max_lag=4096)
    out = np.zeros(len(x), dtype=np.float32)
    src0 = max(lag, 0)
    dst0 = max(-lag, 0)
    m = min(len(x) - dst0, len(y) - src0)
    if m > 0:
        out[dst0: dst0 + m] = y[src0: src0 + m]
    return out, {"codec": codec, "kbps": kbps, "bytes": size, "delay_samples": lag}


_APPLY = {"detune": _apply_detune, "eq": _apply_eq, "reverb": _apply_reverb, "noise": _apply_noise,
          "compress": _apply_compress, "lowpass": _apply_lowpass, "phone": _apply_phone,
          "gain": _apply_gain, "codec": _apply_codec}
