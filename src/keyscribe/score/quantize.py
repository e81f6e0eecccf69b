"""Quantise note onsets and key releases to the metrical grid given by the beats.

Per staff and per beat the grid is either duple (16ths of a quarter beat) or, where evident, triple
(eighth-note triplets); compound metres (x/8) divide the beat into six 16ths. Durations come from key
releases (what was played), never from pedal-lengthened sounding time. Positions are exact `Fraction`s
in beats from the first downbeat (negative in an anacrusis).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from keyscribe.notes import Note
from keyscribe.score.beats import Metre, beat_positions, extend_beats

LEAD = 0.125  # an onset up to this fraction of a beat early still belongs to the beat


@dataclass(frozen=True)
class QNote:
    index: int  # position in the input note list
    pitch: int
    staff: int
    onset: Fraction  # beats from the first downbeat
    offset: Fraction
    velocity: int = 64


def _snap(f: float, g: int) -> Fraction:
    return Fraction(int(round(f * g)), g)


def choose_grid(fracs: np.ndarray, compound: bool) -> int:
    """Subdivisions of the beat for the onsets `fracs` (in [-LEAD, 1-LEAD)) of one beat in one staff."""
    if compound:
        return 6
    if len(fracs) == 0:
        return 4
    c4 = np.sum((fracs - np.round(fracs * 4) / 4) ** 2)
    c3 = np.sum((fracs - np.round(fracs * 3) / 3) ** 2)
    thirds = np.sum(np.isin(np.round(fracs * 3).astype(int), (1, 2)) & (np.abs(fracs * 3 - np.round(fracs * 3)) < 0.2))
    if thirds >= 2 and c3 < 0.4 * c4:
        return 3
    return 4


def quantize(notes: list[Note] | tuple[Note, ...], staff: np.ndarray, metre: Metre) -> list[QNote]:
    notes = list(notes)
    if not notes:
        return []
    start = min(n.onset_s for n in notes)
    end = max(n.offset_s for n in notes)
    beats, pre = extend_beats(metre.beats, start, end)
    origin = metre.first_downbeat + pre
    on = beat_positions(np.array([n.onset_s for n in notes]), beats) - origin
    off = beat_positions(np.array([n.offset_s for n in notes]), beats) - origin
    k_on = np.floor(on + LEAD).astype(int)
    grids: dict[tuple[int, int], int] = {}
    for s in (0, 1):
        for k in np.unique(k_on[staff == s]):
            sel = (staff == s) & (k_on == k)
            grids[(s, int(k))] = choose_grid(on[sel] - k, metre.compound)
    default = 6 if metre.compound else 4
    out: list[QNote] = []
    seen: set[tuple[int, int, Fraction]] = set()
    for i, n in enumerate(notes):
        s = int(staff[i])
        k = int(k_on[i])
        g = grids[(s, k)]
        q_on = k + _snap(on[i] - k, g)
        k2 = int(np.floor(off[i] + LEAD))
        g2 = grids.get((s, k2), default)
        q_off = k2 + _snap(off[i] - k2, g2)
        if q_off <= q_on:
            q_off = q_on + Fraction(1, g)
        key = (s, n.pitch, q_on)
        if key in seen:  # a repeated key press collapsed onto one grid point
            continue
        seen.add(key)
        out.append(QNote(i, n.pitch, s, q_on, q_off, n.velocity))
    return out
