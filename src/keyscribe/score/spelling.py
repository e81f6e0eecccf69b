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


def estimate_key(notes: list[Note] | tuple[Note, ...]) -> Key:
    notes = list(notes)
    if not notes:
        return Key(0, "major", "C")
    pt = _partitura()
    name = pt.musicanalysis.estimate_key(_note_array(notes))
    fifths, mode = pt.utils.key_name_to_fifths_mode(name)
    if fifths > 6:  # prefer the flat side for enharmonic keys beyond six sharps
        fifths -= 12
    if fifths < -7:
        fifths += 12
    return Key(int(fifths), "minor" if mode in ("minor", -1) else "major", name)


def spell(notes: list[Note] | tuple[Note, ...]) -> list[tuple[str, int, int]]:
    """(step, alter, octave) per note, in the order given."""
    notes = list(notes)
    if not notes:
        return []
    pt = _partitura()
    sp = pt.musicanalysis.estimate_spelling(_note_array(notes))
    return [(str(s["step"]), int(s["alter"]), int(s["octave"])) for s in sp]
