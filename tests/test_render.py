"""Renderers: onsets on their labels, silence after releases, the pedal, reproducibility.

A note's onset in the audio is where its 1 ms RMS envelope first reaches -30 dB re the note's peak (the
start of the energy rise; the sampler trims its samples to that point and FluidSynth's note-ons are sent
early by each preset's measured latency). Pianos whose files are missing are skipped, except in CI,
where `make test` has run scripts/setup-system.sh and a missing piano is a failure.
"""
from __future__ import annotations

import os

import mido
import numpy as np
import pytest

from keyscribe.data import render as R
from keyscribe.data import sampler as S
from keyscribe.midi import read_midi
from keyscribe.notes import Note, PedalInterval, Performance

SR = 16000
PIANO_NAMES = list(R.PIANOS)


def need(piano: str) -> None:
    if not R.PIANOS[piano].is_installed():
        msg = f"piano {piano} is not installed (scripts/setup-system.sh)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def envelope_db(y: np.ndarray, ref: float | None = None) -> np.ndarray:
    env = S.envelope(y, round(0.001 * SR))
    return 20 * np.log10(env / (ref if ref is not None else env.max()) + 1e-12)


def onset_error_ms(y: np.ndarray, onset_s: float, threshold_db: float = -30.0) -> float:
    """Detected onset minus label (ms): first -30 dB crossing re the note's peak, searched from 50 ms early."""
    a, b = int((onset_s - 0.05) * SR), int((onset_s + 0.4) * SR)
    env = S.envelope(y[a:b], round(0.001 * SR))
    first = int(np.argmax(env >= env.max() * 10 ** (threshold_db / 20)))
    return ((a + first) / SR - onset_s) * 1e3


@pytest.fixture(scope="module")
def two_bars(tmp_path_factory) -> Performance:
    """Two 4/4 bars at 60 bpm written as a MIDI file and read back: one key per beat from its offbeat, held half a beat,
    velocities from pp to f, from the bass to the treble (below the undamped top keys)."""
    path = tmp_path_factory.mktemp("midi") / "two_bars.mid"
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    pitches = [36, 48, 55, 60, 64, 67, 72, 84]
    velocities = [40, 60, 80, 100, 50, 70, 90, 110]
    now = 0
    for i, (p, v) in enumerate(zip(pitches, velocities)):
        start = 480 * i + 240  # offbeat start keeps the first note clear of t = 0
        track.append(mido.Message("note_on", note=p, velocity=v, time=start - now))
        track.append(mido.Message("note_off", note=p, velocity=0, time=240))
        now = start + 240
    mid.save(path)
    perf = read_midi(path)
    assert len(perf.notes) == 8 and perf.notes[0].onset_s == pytest.approx(0.5)
    return perf


@pytest.mark.parametrize("piano", PIANO_NAMES)
def test_onsets_on_labels_and_silence_after_release(piano, two_bars):
    need(piano)
    y = R.render(two_bars, piano, SR, tail_s=1.5)
    assert y.dtype == np.float32 and len(y) == round((two_bars.end_s + 1.5) * SR)
    assert float(np.max(np.abs(y))) == pytest.approx(R.PEAK, rel=1e-6)
    errors = [onset_error_ms(y, n.onset_s) for n in two_bars.notes]
    assert max(abs(e) for e in errors) <= 5.0, errors
    db = envelope_db(y)
    # Nothing before the first note, and the key releases are heard as releases: 0.45 s after each key
    # comes up (just before the next key goes down) the sound is >= 35 dB down, 1 s after the last
    # it is gone (-60 dB re the render's peak).
    assert db[: int(0.49 * SR)].max() < -60
    for note, nxt in zip(two_bars.notes, two_bars.notes[1:]):
        gap = db[int((note.offset_s + 0.45) * SR): int((nxt.onset_s - 0.005) * SR)]
        assert gap.max() < -35, (piano, note, gap.max())
    assert db[int((two_bars.end_s + 1.0) * SR):].max() < -60


@pytest.mark.parametrize("piano", PIANO_NAMES)
def test_pedal_holds_notes(piano):
    need(piano)
    notes = (Note(0.2, 0.5, 48, 80), Note(0.2, 0.5, 64, 80))
    dry = R.render(Performance(notes), piano, SR, tail_s=3.0)
    held = R.render(Performance(notes, (PedalInterval(0.1, 2.0),)), piano, SR, tail_s=1.5)
    assert len(dry) == len(held)
    window = slice(int(1.2 * SR), int(1.9 * SR))
    ring_held = np.sqrt(np.mean(held[window] ** 2))
    ring_dry = np.sqrt(np.mean(dry[window] ** 2))
    assert 20 * np.log10(ring_held / (ring_dry + 1e-9)) > 25  # the pedal keeps them sounding
    assert envelope_db(held)[int(1.5 * SR): int(1.9 * SR)].max() > -40
    assert envelope_db(held)[int(3.0 * SR):].max() < -60  # and they stop once it is lifted


@pytest.mark.parametrize("piano", PIANO_NAMES)
def test_same_seed_same_bytes(piano, two_bars):
    need(piano)
    perf = Performance(two_bars.notes, (PedalInterval(1.0, 3.2),))
    a = R.render(perf, piano, SR, seed=7)
    R.render(Performance((Note(0.0, 0.3, 70, 127),)), piano, SR)  # unrelated work in between
    b = R.render(perf, piano, SR, seed=7)
    assert a.tobytes() == b.tobytes()


def test_salamander_seed_changes_only_layer_choice():
    need("salamander")
    perf = Performance(tuple(Note(0.1 + 0.8 * i, 0.3 + 0.8 * i, 60 + i, 64) for i in range(12)))
    a, b = R.render(perf, "salamander", SR, seed=1), R.render(perf, "salamander", SR, seed=2)
    assert a.tobytes() != b.tobytes()
    for note in perf.notes:
        assert abs(onset_error_ms(a, note.onset_s)) <= 0.2 and abs(onset_error_ms(b, note.onset_s)) <= 0.2


def test_salamander_onsets_of_every_layer():
    """Across layers and keys (every 5th key, 3 layers: fast enough for CI), the -30 dB point of every
    sample is on the label to the sample, and the -20 dB point within 16 ms (slow soft bass attacks)."""
    need("salamander")
    sampler = S.get_sampler(SR)
    keys = range(21, 109, 5)
    at30 = sampler.onset_report(-30.0, layers=(0, 7, 15), pitches=keys)
    at20 = sampler.onset_report(-20.0, layers=(0, 7, 15), pitches=keys)
    assert np.abs(at30).max() <= 1000 / SR
    assert at20.min() >= 0 and at20.max() <= 16.0
    assert np.median(at20) <= 5.0


def test_salamander_dampers_restrike_and_undamped_keys():
    need("salamander")
    lo = R.render(Performance((Note(0.1, 0.4, 60, 90),)), "salamander", SR, tail_s=2.0)
    hi = R.render(Performance((Note(0.1, 0.4, 96, 90),)), "salamander", SR, tail_s=2.0)
    late = slice(int(1.2 * SR), int(1.6 * SR))
    assert envelope_db(lo)[late].max() < -60  # damped at its release
    assert envelope_db(hi)[late].max() > -40  # the top 18 keys have no dampers
    # A re-struck key cuts its previous note: with the pedal down, two strikes sound like one note
    # restarted, not two notes stacked (the second strike's level is that of one strike).
    pedal = (PedalInterval(0.0, 3.0),)
    one = R.render(Performance((Note(1.0, 1.2, 48, 100),), pedal), "salamander", SR, tail_s=0.5)
    two = R.render(Performance((Note(0.1, 0.3, 48, 100), Note(1.0, 1.2, 48, 100)), pedal), "salamander", SR,
                   tail_s=0.5)
    after = slice(int(1.5 * SR), int(2.5 * SR))
    ratio_db = 20 * np.log10(np.sqrt(np.mean(two[after] ** 2)) / np.sqrt(np.mean(one[after] ** 2)))
    assert abs(ratio_db) < 1.5, ratio_db


def test_fluidsynth_events_land_within_a_millisecond():
    """FluidSynth applies events at its 64-frame block boundaries; at twice the output rate an event
    lands on the nearest one, within +-1 ms of its time, wherever it falls between them."""
    need("fluidr3-grand")
    errors = []
    for shift_ms in np.arange(0.0, 2.0, 0.25):
        onset = 0.5 + shift_ms / 1e3
        y = R.render(Performance((Note(onset, 0.8, 60, 90),)), "fluidr3-grand", SR)
        errors.append(onset_error_ms(y, onset))
    assert max(abs(e) for e in errors) <= 1.0 + 2e3 / SR, errors


def test_available_pianos_and_errors():
    names = R.available_pianos()
    assert set(names) <= set(R.PIANOS)
    assert {"fluidr3-grand", "musescore-grand", "musescore-bright", "musescore-mellow", "salamander"} <= set(R.PIANOS)
    with pytest.raises(R.PianoUnavailableError):
        R.render(Performance(), "no-such-piano")
    if names:
        silent = R.render(Performance(), names[0], SR, tail_s=0.25)
        assert len(silent) == 4000 and not silent.any()


@pytest.mark.parametrize("piano", ["salamander", "fluidr3-grand"])
def test_render_detune_is_exact_and_keeps_onsets(piano):
    need(piano)
    perf = Performance((Note(0.5, 2.5, 69, 90), Note(2.7, 3.0, 45, 90)))

    def peak_hz(y):
        seg = y[int(0.8 * SR): int(2.3 * SR)]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 32 * SR))
        band = slice(int(400 * 32), int(480 * 32))
        return (band.start + int(np.argmax(spec[band]))) / 32

    base = R.render(perf, piano, SR)
    up = R.render(perf, piano, SR, detune_cents=15.0)
    assert len(up) == len(base)
    assert 1200 * np.log2(peak_hz(up) / peak_hz(base)) == pytest.approx(15.0, abs=1.0)
    for note in perf.notes:
        assert abs(onset_error_ms(up, note.onset_s) - onset_error_ms(base, note.onset_s)) <= 1.5
