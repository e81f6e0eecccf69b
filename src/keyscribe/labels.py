"""Notes <-> frame-level label rolls at the model's frame rate, and back.

A note from onset t0 to offset t1 (seconds) at frame rate r covers frames [round(t0 r), round(t1 r)):
its onset roll is 1 at the first of them, its offset roll at the last, its frame roll on all, and its
velocity roll holds the MIDI velocity on all. `rolls_to_notes` inverts this exactly for notes whose
times lie on the frame grid. Rolls are (n_frames, 88) uint8, key 0 = MIDI pitch 21 (A0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from keyscribe.notes import MIN_PITCH, N_KEYS, Note, PedalInterval


@dataclass
class Rolls:
    """Frame-level targets; all arrays (n_frames, 88) uint8 except `pedal` (n_frames,) uint8."""

    onset: np.ndarray
    offset: np.ndarray
    frame: np.ndarray
    velocity: np.ndarray
    pedal: np.ndarray

    @property
    def n_frames(self) -> int:
        return self.frame.shape[0]


def _frame_span(onset_s: float, offset_s: float, frame_rate: float, n_frames: int) -> tuple[int, int]:
    start = int(round(onset_s * frame_rate))
    end = max(int(round(offset_s * frame_rate)), start + 1)  # every note covers at least one frame
    return start, min(end, n_frames)


def notes_to_rolls(notes: Sequence[Note], pedals: Sequence[PedalInterval], n_frames: int,
                   frame_rate: float) -> Rolls:
    """Rasterise notes (and sustain-pedal intervals) to rolls of `n_frames` frames."""
    shape = (n_frames, N_KEYS)
    onset, offset, frame, velocity = (np.zeros(shape, np.uint8) for _ in range(4))
    for note in sorted(notes, key=lambda n: n.onset_s):
        start, end = _frame_span(note.onset_s, note.offset_s, frame_rate, n_frames)
        if start >= n_frames:
            continue
        key = note.pitch - MIN_PITCH
        frame[start:end, key] = 1
        velocity[start:end, key] = note.velocity
        onset[start, key] = 1
        offset[end - 1, key] = 1
    pedal = np.zeros(n_frames, np.uint8)
    for interval in pedals:
        start, end = _frame_span(interval.onset_s, interval.offset_s, frame_rate, n_frames)
        pedal[start:end] = 1
    # A later note's onset inside an earlier note of the same key ends the earlier one there.
    offset &= ~onset | (frame == 0)
    return Rolls(onset, offset, frame, velocity, pedal)


def rolls_to_notes(onset: np.ndarray, frame: np.ndarray, velocity: np.ndarray | None,
                   frame_rate: float) -> list[Note]:
    """Binary onset/frame rolls -> notes: each onset starts a note that lasts while the frame roll is
    on, up to the next onset of the same key. Frames on without any onset start no note."""
    notes = []
    n_frames = frame.shape[0]
    for key in range(onset.shape[1]):
        starts = np.flatnonzero(onset[:, key])
        for i, start in enumerate(starts):
            limit = starts[i + 1] if i + 1 < len(starts) else n_frames
            off = np.flatnonzero(frame[start:limit, key] == 0)
            end = start + (off[0] if off.size else limit - start)
            end = max(end, start + 1)
            vel = int(velocity[start, key]) if velocity is not None else 64
            notes.append(Note(float(start / frame_rate), float(end / frame_rate), key + MIN_PITCH, min(max(vel, 1), 127)))
    return sorted(notes, key=lambda n: (n.onset_s, n.pitch))


def roll_to_pedals(pedal: np.ndarray, frame_rate: float) -> list[PedalInterval]:
    """Binary (n_frames,) pedal roll -> intervals of consecutive on frames."""
    padded = np.concatenate([[0], (np.asarray(pedal) > 0).astype(np.int8), [0]])
    edges = np.diff(padded)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [PedalInterval(float(s / frame_rate), float(e / frame_rate)) for s, e in zip(starts, ends)]
