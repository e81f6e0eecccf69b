#!/usr/bin/env python
"""Do two-beat and four-beat pieces differ in how their first and third beats contrast?

    .venv/bin/python benchmarks/bar_contrast.py [--asap DIR] [--json FILE] [--limit N]

The note tracker writes most two-beat pieces (2/4, 2/2) in four beats per bar (`bar_length.py`). In a four-beat
bar the third beat is weaker than the first; in two-beat bars written in four, "beats 1 and 3" are both
downbeats, so they should be alike, if the performance shows it. Each performance (one per ASAP training piece,
up to 4 per validation piece, never the held-out pieces, as `bar_length.py`) is decoded in bars of four
(`notenet.decode_bars`, the shipped networks) and, at its beats in positions 1 and 3 of the bar, compared on:
- downbeat: the downbeat network's highest probability among the notes within 50 ms of the beat;
- bass: the lowest pitch starting within 50 ms (lower = stronger);
- weight: the sum of duration x velocity of the notes starting within 50 ms;
- harmonic change: 1 - cosine similarity of the pitch-class profiles (duration x velocity) of the two beats
  after the beat and the two before it;
and the difference of the per-frame log-likelihoods of bars of four and of two (`ll 4 - 2`). A contrast is
|mean at 1 - mean at 3| / the feature's standard deviation over all beats (the phase of the bar may be off).
The table gives median and quartiles for the annotated two- and four-beat pieces; where they overlap, the
feature cannot choose the bar length. ~15 min on one core.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from compound_rule import performances
from tqdm import tqdm

from keyscribe.score import asap, notenet
from keyscribe.score.io import load_performance

ROOT = Path(__file__).resolve().parents[1]
NEAR_S = 0.05
FEATURES = ("downbeat", "bass", "weight", "harmonic change", "ll 4 - 2")


def bar_positions(is_downbeat: np.ndarray, beats_per_bar: int) -> np.ndarray:
    """Position of each beat in its bar (0 = downbeat; -1 before the first downbeat)."""
    since = np.full(len(is_downbeat), -1)
    last = None
    for i, down in enumerate(is_downbeat):
        last = i if down else last
        since[i] = -1 if last is None else (i - last) % beats_per_bar
    return since


def harmonic_change(beats: np.ndarray, onset, pitch, weight) -> np.ndarray:
    """Per beat: 1 - cosine of the pitch-class profiles of the two beats after it and the two before it."""
    profile = np.zeros((len(beats) + 1, 12))
    np.add.at(profile, (np.searchsorted(beats, onset, side="right"), pitch % 12), weight)
    change = np.zeros(len(beats))
    for i in range(2, len(beats) - 2):
        before, after = profile[i - 1:i + 1].sum(0), profile[i + 1:i + 3].sum(0)
        norm = np.linalg.norm(before) * np.linalg.norm(after)
        change[i] = 1.0 - before @ after / norm if norm > 0 else 0.0
    return change


def beat_features(beats: np.ndarray, notes, downbeat_prob: np.ndarray) -> np.ndarray:
    """(beats, 4): downbeat probability, minus the bass pitch, weight and harmonic change at each beat."""
    onset = np.array([n.onset_s for n in notes])
    pitch = np.array([n.pitch for n in notes])
    weight = np.array([(n.offset_s - n.onset_s) * n.velocity for n in notes])
    rows = []
    for b in beats:
        near = np.flatnonzero(np.abs(onset - b) < NEAR_S)
        rows.append((downbeat_prob[near].max(), -pitch[near].min(), weight[near].sum()) if near.size else (0.0, -128, 0.0))
    return np.column_stack([np.array(rows, float), harmonic_change(beats, onset, pitch, weight)])


def contrasts(entry, sessions) -> dict:
    perf, ann = load_performance(entry.performance), asap.read_annotations(entry.annotations)
    notes = notenet.sorted_notes(perf)
    probs = notenet.both_probabilities(sessions[0], notes, sessions[1])
    beat_act, downbeat_act = notenet.activations_of(notes, probs)
    decoded = {m: notenet.decode_bars(notes, beat_act, downbeat_act, m) for m in (2, 4)}
    beats, is_downbeat, _ = decoded[4]
    position = bar_positions(is_downbeat, 4)
    values = beat_features(beats, notes, probs[1])
    out = []
    for x in values.T:
        first, third = x[position == 0], x[position == 2]
        out.append(abs(first.mean() - third.mean()) / (x.std() + 1e-9) if first.size and third.size else 0.0)
    out.append((decoded[4][2] - decoded[2][2]) / len(beat_act))
    return {"piece": f"{entry.composer}/{entry.title}", "ref": ann.beats_per_bar, **dict(zip(FEATURES, map(float, out)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asap", default=None)
    ap.add_argument("--limit", type=int, default=None, help="first N performances of each part (a quick look)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "bar_contrast.json")
    args = ap.parse_args(argv)
    sessions = notenet.load_default()
    data = {part: [contrasts(e, sessions) for e in tqdm(entries[:args.limit], desc=part)]
            for part, entries in performances(args.asap).items()}
    print("| part | feature | two-beat pieces: median (quartiles) | four-beat pieces: median (quartiles) |")
    print("|---|---|---|---|")
    for part, rows in data.items():
        for feature in FEATURES:
            cells = []
            for m in (2, 4):
                x = np.array([r[feature] for r in rows if r["ref"] == m])
                q1, median, q3 = np.percentile(x, [25, 50, 75]) if x.size else (np.nan,) * 3
                cells.append(f"{median:.3f} ({q1:.3f} to {q3:.3f}), n={x.size}")
            print(f"| {part} | {feature} | {cells[0]} | {cells[1]} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
