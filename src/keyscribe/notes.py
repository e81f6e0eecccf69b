"""keyscribe's one data model for a performance: notes and sustain-pedal intervals.

Units everywhere: seconds for times, MIDI pitch numbers (21 = A0 ... 108 = C8) for keys, MIDI velocity
1..127. Importers and exporters (`keyscribe.midi`) and label rolls (`keyscribe.labels`) are built
around these types; nothing else in the package defines its own note type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from keyscribe.errors import LabelError

MIN_PITCH = 21  # A0, the lowest piano key
MAX_PITCH = 108  # C8, the highest piano key
N_KEYS = MAX_PITCH - MIN_PITCH + 1
PEDAL_THRESHOLD = 64  # MIDI CC64 values at or above this hold the dampers off


@dataclass(frozen=True, slots=True)
class Note:
    """One key press: sounding from `onset_s` to `offset_s` (seconds) at MIDI `pitch`, `velocity`."""

    onset_s: float
    offset_s: float
    pitch: int
    velocity: int = 64

    def __post_init__(self) -> None:
        if not (math.isfinite(self.onset_s) and math.isfinite(self.offset_s)):
            raise LabelError(f"note times must be finite, got {self.onset_s}..{self.offset_s}")
        if self.onset_s < 0 or self.offset_s <= self.onset_s:
            raise LabelError(f"note needs 0 <= onset < offset, got {self.onset_s:.4f}..{self.offset_s:.4f} s")
        if not MIN_PITCH <= self.pitch <= MAX_PITCH:
            raise LabelError(f"pitch {self.pitch} is outside the piano range {MIN_PITCH}..{MAX_PITCH}")
        if not 1 <= self.velocity <= 127:
            raise LabelError(f"velocity {self.velocity} is outside 1..127")

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s


@dataclass(frozen=True, slots=True)
class PedalInterval:
    """The sustain pedal held down (CC64 >= 64) from `onset_s` to `offset_s` seconds."""

    onset_s: float
    offset_s: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.onset_s) and math.isfinite(self.offset_s)):
            raise LabelError("pedal times must be finite")
        if self.onset_s < 0 or self.offset_s <= self.onset_s:
            raise LabelError(f"pedal needs 0 <= onset < offset, got {self.onset_s:.4f}..{self.offset_s:.4f} s")


@dataclass(frozen=True)
class Performance:
    """What was played: notes sorted by (onset, pitch) and sustain-pedal intervals sorted by onset."""

    notes: tuple[Note, ...] = ()
    pedals: tuple[PedalInterval, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "notes", tuple(sorted(self.notes, key=lambda n: (n.onset_s, n.pitch))))
        object.__setattr__(self, "pedals", tuple(sorted(self.pedals, key=lambda p: p.onset_s)))

    @property
    def end_s(self) -> float:
        """The time the last note or pedal ends, in seconds (0 for an empty performance)."""
        ends = [n.offset_s for n in self.notes] + [p.offset_s for p in self.pedals]
        return max(ends, default=0.0)

    def with_sustain(self) -> "Performance":
        """The notes as they sound with the pedal applied (see `extend_by_pedal`)."""
        return Performance(tuple(extend_by_pedal(self.notes, self.pedals)), self.pedals)

    def shifted(self, seconds: float) -> "Performance":
        """Every time moved by `seconds`; events that would start before 0 are dropped."""
        notes = [Note(n.onset_s + seconds, n.offset_s + seconds, n.pitch, n.velocity)
                 for n in self.notes if n.onset_s + seconds >= 0]
        pedals = [PedalInterval(p.onset_s + seconds, p.offset_s + seconds)
                  for p in self.pedals if p.onset_s + seconds >= 0]
        return Performance(tuple(notes), tuple(pedals))


def extend_by_pedal(notes: Iterable[Note], pedals: Sequence[PedalInterval]) -> list[Note]:
    """Lengthen notes released under the sustain pedal until the pedal lifts.

    A key released while the pedal is down keeps sounding until the pedal is lifted or the same key
    is struck again, whichever comes first (the convention of Onsets-and-Frames and MAPS labels).
    """
    notes = sorted(notes, key=lambda n: (n.onset_s, n.pitch))
    pedal_on = np.array([p.onset_s for p in pedals])
    pedal_off = np.array([p.offset_s for p in pedals])
    next_onset: dict[int, float] = {}
    extended: list[Note] = []
    for note in reversed(notes):
        offset = note.offset_s
        held = np.flatnonzero((pedal_on <= offset) & (offset < pedal_off))
        if held.size:
            offset = max(offset, float(pedal_off[held].max()))
        restrike = next_onset.get(note.pitch)
        if restrike is not None and restrike < offset:
            offset = max(restrike, note.offset_s)
        extended.append(Note(note.onset_s, offset, note.pitch, note.velocity))
        next_onset[note.pitch] = note.onset_s
    return extended[::-1]


def notes_to_arrays(notes: Sequence[Note]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intervals (n, 2) seconds, pitches (n,) MIDI, velocities (n,)) as mir_eval takes them."""
    intervals = np.array([[n.onset_s, n.offset_s] for n in notes], dtype=float).reshape(-1, 2)
    pitches = np.array([n.pitch for n in notes], dtype=int)
    velocities = np.array([n.velocity for n in notes], dtype=int)
    return intervals, pitches, velocities


def pitch_name(pitch: int) -> str:
    """Scientific pitch name with sharps: 60 -> 'C4', 61 -> 'C#4'."""
    names = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
    return f"{names[pitch % 12]}{pitch // 12 - 1}"
