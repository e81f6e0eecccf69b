"""Model probabilities -> notes and pedal intervals. numpy only, so inference needs no torch.

Onsets-and-Frames decoding: a note starts at each run of frames whose onset probability passes
`onset_threshold` (timed at the run's peak, refined to a fraction of a frame by a parabola through the
peak and its neighbours), and lasts while the frame probability passes `frame_threshold`, until the
next onset of the same key. Velocity is the velocity output at the peak, scaled to 1..127.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keyscribe.notes import MIN_PITCH, Note, PedalInterval


@dataclass(frozen=True)
class DecodeConfig:
    onset_threshold: float = 0.5
    frame_threshold: float = 0.5
    pedal_threshold: float = 0.5
    min_pedal_s: float = 0.1  # shorter pedal presses are flicker of the estimate, not pedalling


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of runs of True in a 1-D mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _subframe_peak(curve: np.ndarray, start: int, end: int) -> float:
    """Index of the maximum of curve[start:end], refined by parabolic interpolation."""
    peak = start + int(np.argmax(curve[start:end]))
    if 0 < peak < len(curve) - 1:
        left, mid, right = curve[peak - 1], curve[peak], curve[peak + 1]
        denom = left - 2 * mid + right
        if denom < 0:
            return peak + float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5))
    return float(peak)


def decode_notes(onset: np.ndarray, frame: np.ndarray, velocity: np.ndarray, frame_rate: float,
                 config: DecodeConfig = DecodeConfig()) -> list[Note]:
    """(n_frames, 88) probabilities in [0, 1] -> notes sorted by onset, then pitch."""
    n_frames, n_keys = onset.shape
    notes = []
    for key in range(n_keys):
        starts, ends = _runs(onset[:, key] >= config.onset_threshold)
        for i, (start, end) in enumerate(zip(starts, ends)):
            limit = starts[i + 1] if i + 1 < len(starts) else n_frames
            silent = np.flatnonzero(frame[end:limit, key] < config.frame_threshold)
            stop = end + (silent[0] if silent.size else limit - end)
            onset_frame = _subframe_peak(onset[:, key], start, end)
            peak = min(int(round(onset_frame)), n_frames - 1)
            vel = int(np.clip(round(float(velocity[peak, key]) * 127), 1, 127))
            onset_s = max(onset_frame, 0.0) / frame_rate
            offset_s = max(stop / frame_rate, onset_s + 1.0 / frame_rate)
            notes.append(Note(onset_s, offset_s, key + MIN_PITCH, vel))
    return sorted(notes, key=lambda n: (n.onset_s, n.pitch))


def decode_pedals(pedal_frame: np.ndarray, frame_rate: float, config: DecodeConfig = DecodeConfig()) -> list[PedalInterval]:
    """(n_frames,) pedal-down probability -> intervals at least `min_pedal_s` long."""
    starts, ends = _runs(np.asarray(pedal_frame) >= config.pedal_threshold)
    return [PedalInterval(s / frame_rate, e / frame_rate) for s, e in zip(starts, ends)
            if (e - s) / frame_rate >= config.min_pedal_s]
