#!/usr/bin/env python
"""At which metrical level the note tracker follows each validation performance, against the annotations.

    .venv/bin/python benchmarks/beat_levels.py [--json FILE]

Every ASAP performance of the validation pieces (never the held-out pieces) is tracked with the shipped
note networks. At each annotated beat, the ratio of the annotated to the tracked local beat period (medians
within 3 s) says which level the tracker is on there: 1 (right), 2 (twice as many beats), 1/2, 3/2, ...
Printed per performance: the share of annotated beats at each level and the median tempi. It tells errors
inside a piece (a tracker switching level) from whole pieces tracked at another level.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from keyscribe.score import asap, notenet
from keyscribe.score.io import load_performance
from keyscribe.score.train_beats import validation_entries

ROOT = Path(__file__).resolve().parents[1]
# log2 bin edges of the ratio; the labels name each bin's level
EDGES = (-9, -1.8, -1.2, -0.8, -0.42, -0.2, 0.2, 0.42, 0.8, 1.2, 1.8, 9)
LEVELS = ("<1/3", "1/3", "1/2", "2/3", "3/4", "1", "4/3", "3/2", "2", "3", ">3")


def level_shares(tracked: np.ndarray, annotated: np.ndarray, window_s: float = 3.0) -> np.ndarray:
    """Share of annotated beats in each EDGES bin of log2(annotated period / tracked period)."""
    ratios = []
    for t in annotated[1:-1]:
        tb, ta = tracked[np.abs(tracked - t) < window_s], annotated[np.abs(annotated - t) < window_s]
        if len(tb) >= 3 and len(ta) >= 3:
            ratios.append(np.median(np.diff(ta)) / np.median(np.diff(tb)))
    if not ratios:
        return np.zeros(len(EDGES) - 1)
    return np.histogram(np.log2(ratios), bins=EDGES)[0] / len(ratios)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asap", default=None)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "beat_levels.json")
    args = ap.parse_args(argv)
    entries = validation_entries(args.asap, every_performance=True)
    sessions = notenet.load_default()
    print("| performance | " + " | ".join(LEVELS) + " | annotated BPM | tracked BPM |")
    print("|---|" + "---|" * (len(LEVELS) + 2))
    rows = []
    for e in entries:
        name = f"{e.composer}/{e.title}/{Path(e.performance).stem}"
        perf, ann = load_performance(e.performance), asap.read_annotations(e.annotations)
        tracked, _, _ = notenet.tracked_beats(sessions[0], notenet.sorted_notes(perf), sessions[1])
        shares = level_shares(np.asarray(tracked), np.asarray(ann.beats))
        bpm = (60 / float(np.median(np.diff(ann.beats))), 60 / float(np.median(np.diff(tracked))))
        rows.append({"performance": name, "shares": dict(zip(LEVELS, shares.round(3).tolist())),
                     "annotated_bpm": bpm[0], "tracked_bpm": bpm[1]})
        print(f"| {name} | " + " | ".join(f"{s:.2f}" for s in shares) + f" | {bpm[0]:.0f} | {bpm[1]:.0f} |", flush=True)
    at_level = np.mean([r["shares"]["1"] for r in rows])
    print(f"mean share of annotated beats tracked at their own level: {at_level:.3f} ({len(rows)} performances)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"performances": rows, "mean_at_level": at_level}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
