"""Importers and exporters around `keyscribe.notes`: performance MIDI and MAPS-style tsv labels.

`read_labels` dispatches by suffix, so code that pairs references and estimates need not care which
format a file is in. Notes are key presses (the MIDI note-off time); apply the sustain pedal with
`Performance.with_sustain()` when sounding durations are wanted.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pretty_midi
import symusic

from keyscribe.errors import LabelError
from keyscribe.notes import MAX_PITCH, MIN_PITCH, PEDAL_THRESHOLD, Note, PedalInterval, Performance

SUSTAIN_CC = 64
# MIDI files sometimes hold notes with no length (grace notes quantised to nothing); they are kept
# with this minimum so that every Note is valid and still counts for onset metrics.
MIN_NOTE_S = 0.01
LABEL_SUFFIXES = (".mid", ".midi", ".tsv")


def read_midi(path: str | os.PathLike) -> Performance:
    """Notes (piano range only, drums ignored) and sustain-pedal intervals of a MIDI file."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: no such MIDI file")
    try:  # symusic parses in C++: performance MIDI with dense pedal data is 100x faster than mido
        score = symusic.Score(str(path), ttype="second")
    except Exception as exc:  # symusic raises RuntimeError/ValueError variants for broken files
        raise LabelError(f"{path.name}: not a readable MIDI file ({type(exc).__name__})") from None
    notes = []
    cc_events = []
    for track in score.tracks:
        if track.is_drum:
            continue
        arrays = track.notes.numpy()
        for onset, duration, pitch, velocity in zip(arrays["time"].astype(float), arrays["duration"].astype(float),
                                                    arrays["pitch"].astype(int), arrays["velocity"].astype(int)):
            if MIN_PITCH <= pitch <= MAX_PITCH and velocity > 0:
                onset = max(onset, 0.0)
                notes.append(Note(onset, onset + max(duration, MIN_NOTE_S), int(pitch), int(velocity)))
        controls = track.controls.numpy()
        sustain = controls["number"] == SUSTAIN_CC
        cc_events += list(zip(controls["time"][sustain].astype(float), controls["value"][sustain].astype(int)))
    pedals = pedal_intervals(cc_events, end_s=max((n.offset_s for n in notes), default=0.0))
    return Performance(tuple(notes), tuple(pedals))


def pedal_intervals(cc_events: list[tuple[float, int]], end_s: float) -> list[PedalInterval]:
    """Intervals where CC64 >= 64 from (time_s, value) events; a pedal still down closes at `end_s`."""
    intervals = []
    down_at = None
    for time, value in sorted(cc_events, key=lambda e: e[0]):
        if value >= PEDAL_THRESHOLD and down_at is None:
            down_at = time
        elif value < PEDAL_THRESHOLD and down_at is not None:
            if time > down_at:
                intervals.append(PedalInterval(max(down_at, 0.0), time))
            down_at = None
    if down_at is not None and end_s > down_at:
        intervals.append(PedalInterval(max(down_at, 0.0), end_s))
    return intervals


def write_midi(perf: Performance, path: str | os.PathLike, *, program: int = 0) -> None:
    """Write notes with velocities and the sustain pedal as CC64 127/0 events (one piano track)."""
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=program, name="Piano")
    piano.notes = [pretty_midi.Note(n.velocity, n.pitch, n.onset_s, n.offset_s) for n in perf.notes]
    for p in perf.pedals:
        piano.control_changes.append(pretty_midi.ControlChange(SUSTAIN_CC, 127, p.onset_s))
        piano.control_changes.append(pretty_midi.ControlChange(SUSTAIN_CC, 0, p.offset_s))
    midi.instruments.append(piano)
    midi.write(str(path))


def read_tsv(path: str | os.PathLike) -> Performance:
    """MAPS-style labels: a `# onset,offset,note,velocity` header, then tab-separated rows (s, s, MIDI, vel).

    These notes already sound with the pedal applied; there is no pedal track.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: no such tsv file")
    try:
        rows = np.loadtxt(path, delimiter="\t", comments="#", ndmin=2)
    except ValueError as exc:
        raise LabelError(f"{path.name}: not a tsv of onset, offset, note, velocity ({exc})") from None
    if rows.size and rows.shape[1] < 3:
        raise LabelError(f"{path.name}: expected at least 3 columns (onset, offset, note), got {rows.shape[1]}")
    notes = []
    for row in rows:
        velocity = int(round(row[3])) if rows.shape[1] > 3 else 64
        notes.append(Note(float(row[0]), float(row[1]), int(round(row[2])), min(max(velocity, 1), 127)))
    return Performance(tuple(notes))


def write_tsv(perf: Performance, path: str | os.PathLike) -> None:
    """Write notes in the MAPS-style tsv format that `read_tsv` reads."""
    lines = ["# onset,offset,note,velocity"]
    lines += [f"{n.onset_s:.6f}\t{n.offset_s:.6f}\t{n.pitch}\t{n.velocity}" for n in perf.notes]
    Path(path).write_text("\n".join(lines) + "\n")


def read_labels(path: str | os.PathLike) -> Performance:
    """Read a `.mid`/`.midi` or `.tsv` file by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in (".mid", ".midi"):
        return read_midi(path)
    if suffix == ".tsv":
        return read_tsv(path)
    raise LabelError(f"{Path(path).name}: unknown label format (expected one of {', '.join(LABEL_SUFFIXES)})")

