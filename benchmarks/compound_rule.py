#!/usr/bin/env python
"""How well `beats.is_compound` tells compound metres (6/8, 9/8, 12/8) from simple ones, for a grid of its two
thresholds, on the beats the shipped note tracker finds.

    .venv/bin/python benchmarks/compound_rule.py [--asap DIR] [--json FILE]

One performance per ASAP training piece, the validation pieces apart (`asap.is_validation`, up to 4
performances each); never the held-out pieces. Each is tracked once (`notenet.estimate_metre_notes`, ~30 min
for all on one core); `beats.subdivision_shares` on its beats gives the shares of the in-between onsets near
thirds and near quarters of the beat, and the rule "compound when thirds > MIN and thirds > RATIO x quarters"
is scored for each (MIN, RATIO): accuracy against the annotated time signature (`evaluate._annotated_compound`),
mean over pieces. The thresholds are chosen on the training pieces; the validation column checks them.
"""
from __future__ import annotations

import argparse
import itertools
import json
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from keyscribe.score import asap, beats, notenet
from keyscribe.score.evaluate import _annotated_compound
from keyscribe.score.io import load_performance

ROOT = Path(__file__).resolve().parents[1]
MINS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55)
RATIOS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)


def performances(asap_dir) -> dict[str, list]:
    """{"train": one entry per training piece, "validation": up to 4 per validation piece}."""
    seen: dict = defaultdict(int)
    out: dict[str, list] = {"train": [], "validation": []}
    for e in asap.entries(asap_dir, split="train"):
        part = "validation" if asap.is_validation(e.composer, e.title) else "train"
        seen[(e.composer, e.title)] += 1
        if seen[(e.composer, e.title)] <= (4 if part == "validation" else 1):
            out[part].append(e)
    return out


def shares_of(entries, sessions) -> list[tuple]:
    """(piece, annotated compound, (thirds, quarters) or None) per performance."""
    rows = []
    for e in tqdm(entries, unit="performance"):
        perf, ann = load_performance(e.performance), asap.read_annotations(e.annotations)
        metre = notenet.estimate_metre_notes(sessions[0], perf, sessions[1])
        compound = _annotated_compound(ann.time_signatures[0][1]) if ann.time_signatures else False
        rows.append(((e.composer, e.title), compound, beats.subdivision_shares(perf.notes, metre.beats)))
    return rows


def accuracy(rows, min_thirds: float, ratio: float) -> float:
    per_piece = defaultdict(list)
    for piece, compound, shares in rows:
        said = shares is not None and shares[0] > min_thirds and shares[0] > ratio * shares[1]
        per_piece[piece].append(said == compound)
    return float(np.mean([np.mean(v) for v in per_piece.values()]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asap", default=None)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "compound_rule.json")
    args = ap.parse_args(argv)
    sessions = notenet.load_default()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = {part: shares_of(entries, sessions) for part, entries in performances(args.asap).items()}
    for part, rows in data.items():
        print(f"{part}: {len(rows)} performances, {sum(c for _, c, _ in rows)} in a compound metre")
    grid = [{"min_thirds": m, "ratio": r, **{part: accuracy(rows, m, r) for part, rows in data.items()}}
            for m, r in itertools.product(MINS, RATIOS)]
    grid.sort(key=lambda g: (-g["train"], -g["min_thirds"]))
    shipped = {"min_thirds": beats.COMPOUND_MIN_THIRDS, "ratio": beats.COMPOUND_THIRDS_OVER_QUARTERS,
               **{part: accuracy(rows, beats.COMPOUND_MIN_THIRDS, beats.COMPOUND_THIRDS_OVER_QUARTERS)
                  for part, rows in data.items()}}
    print("| min thirds | thirds / quarters | training pieces | validation pieces |\n|---|---|---|---|")
    for g in [shipped] + grid[:12]:
        print(f"| {g['min_thirds']:.2f} | {g['ratio']:.1f} | {g['train']:.3f} | {g['validation']:.3f} |"
              + (" shipped" if g is shipped else ""))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"shipped": shipped, "grid": grid}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
