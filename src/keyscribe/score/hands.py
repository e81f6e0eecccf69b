"""Split notes into right hand (staff 0, treble) and left hand (staff 1, bass).

Heuristic: notes are grouped into onset clusters (chords); each cluster is cut at the split that best
fits two moving hand positions (running means of each hand's recent pitches), with penalties for a hand
spanning more than an octave and for crossing the other hand. Better than a fixed split at middle C for
music whose hands move (Alberti bass high up, right-hand melodies low down).
"""
from __future__ import annotations

import numpy as np

from keyscribe.notes import Note

CHORD_S = 0.035
MAX_SPAN = 12  # semitones one hand takes in one chord (an octave; tuned on ASAP training scores)
ALPHA = 0.3
LONE_BIAS = 2.0


def _clusters(notes: list[Note]) -> list[list[int]]:
    out: list[list[int]] = []
    start = -1.0
    for i, n in enumerate(notes):
        if out and n.onset_s - start <= CHORD_S:
            out[-1].append(i)
        else:
            out.append([i])
            start = n.onset_s
    return out


def split_hands(notes: list[Note] | tuple[Note, ...], method: str = "track") -> np.ndarray:
    """Staff per note (0 = right hand / treble, 1 = left hand / bass), in the order given."""
    notes = list(notes)
    n = len(notes)
    staff = np.zeros(n, dtype=int)
    if n == 0:
        return staff
    if method == "fixed":
        return np.array([0 if x.pitch >= 60 else 1 for x in notes])
    order = sorted(range(n), key=lambda i: (notes[i].onset_s, notes[i].pitch))
    sorted_notes = [notes[i] for i in order]
    pitches = np.array([x.pitch for x in sorted_notes], float)
    right, left = max(67.0, np.percentile(pitches, 75)), min(53.0, np.percentile(pitches, 25))
    alpha = ALPHA
    for cl in _clusters(sorted_notes):
        ps = sorted(cl, key=lambda i: sorted_notes[i].pitch)
        p = np.array([sorted_notes[i].pitch for i in ps], float)
        best, best_k = np.inf, 0
        for k in range(len(ps) + 1):  # ps[:k] -> left hand, ps[k:] -> right hand
            lh, rh = p[:k], p[k:]
            cost = np.sum(np.abs(lh - left)) + np.sum(np.abs(rh - right))
            if len(lh) and lh.max() - lh.min() > MAX_SPAN:
                cost += 30 * (lh.max() - lh.min() - MAX_SPAN)
            if len(rh) and rh.max() - rh.min() > MAX_SPAN:
                cost += 30 * (rh.max() - rh.min() - MAX_SPAN)
            if len(lh) > 5 or len(rh) > 5:
                cost += 50
            # a lone note: prefer the hand whose position is closer but keep a split at middle C in mind
            if len(p) == 1:
                cost += LONE_BIAS * abs((60 - p[0])) * (1 if (k == 1) == (p[0] >= 60) else 0) / 12
            if cost < best:
                best, best_k = cost, k
        for j, i in enumerate(ps):
            staff[order[i]] = 1 if j < best_k else 0
        if best_k:
            left = (1 - alpha) * left + alpha * float(p[:best_k].mean())
        if best_k < len(ps):
            right = (1 - alpha) * right + alpha * float(p[best_k:].mean())
        # keep the hands apart and in plausible places
        if right - left < 7:
            mid = (right + left) / 2
            right, left = mid + 3.5, mid - 3.5
    return staff
