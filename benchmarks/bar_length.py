#!/usr/bin/env python
"""How the note tracker's bar-pointer HMM should weigh the downbeat network, for the choice of bar length (2, 3
or 4 beats) and the downbeats: its downbeat probabilities taken relative to a reference rate
(`beats.dbn_bars(downbeat_reference=...)`; 0.5 was the only behaviour until session 14).

    .venv/bin/python benchmarks/bar_length.py [--asap DIR] [--json FILE] [--limit N]

The same performances as `compound_rule.py`: one per ASAP training piece, up to 4 per validation piece,
never the held-out pieces. Each is decoded for every bar length and reference (`notenet.decode_bars` on the shipped
note networks' activations, as `notenet.estimate_metre_notes`; ~3 s per performance and reference on one
core) and the most likely bar length is kept, as the tracker does. Scored: bar length right (against
`Annotations.beats_per_bar`), beat and downbeat F1 (mir_eval, 70 ms), mean over pieces. The reference is chosen
on the training pieces; the validation column checks it.

A second table does the same for a fixed per-frame bias added to each bar length's log-likelihood (bias(2) = 0)
at reference 0.5: the five best (bias(3), bias(4)) on the training pieces.
"""
from __future__ import annotations

import argparse
import itertools
import json
import warnings
from collections import defaultdict
from pathlib import Path

import mir_eval
import numpy as np
from compound_rule import performances
from tqdm import tqdm

from keyscribe.score import asap, notenet
from keyscribe.score.io import load_performance

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = (0.5, 0.45, 0.4, 0.3)
BIASES = tuple(np.round(np.arange(-0.03, 0.0301, 0.0025), 4))  # per frame, at reference 0.5


def decode(entry, sessions) -> dict:
    """Log-likelihood, beat and downbeat F1 of each bar length and reference, for one performance."""
    perf, ann = load_performance(entry.performance), asap.read_annotations(entry.annotations)
    notes = notenet.sorted_notes(perf)
    beat_act, downbeat_act = notenet.bar_activations(sessions[0], notes, sessions[1])
    row = {"piece": f"{entry.composer}/{entry.title}", "ref": ann.beats_per_bar, "frames": len(beat_act), "fits": {}}
    for reference in REFERENCES:
        for m in notenet.BEATS_PER_BAR:
            bt, is_db, ll = notenet.decode_bars(notes, beat_act, downbeat_act, m, downbeat_reference=reference)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row["fits"][f"{reference} {m}"] = {
                    "ll": ll, "beat_f1": float(mir_eval.beat.f_measure(ann.beats, bt, 0.07)),
                    "downbeat_f1": float(mir_eval.beat.f_measure(ann.downbeats, bt[is_db], 0.07))}
    return row


def score(rows: list[dict], reference: float, bias: dict[int, float] | None = None) -> dict[str, float]:
    """Bar length accuracy, beat and downbeat F1 when the most likely bar length is kept (log-likelihood +
    frames x bias[m]), mean over pieces."""
    per_piece = defaultdict(list)
    for r in rows:
        def weight(m: int) -> float:
            return r["fits"][f"{reference} {m}"]["ll"] + r["frames"] * (bias or {}).get(m, 0.0)
        m = max(notenet.BEATS_PER_BAR, key=weight)
        got = r["fits"][f"{reference} {m}"]
        per_piece[r["piece"]].append((m == r["ref"], got["beat_f1"], got["downbeat_f1"]))
    means = np.array([np.mean(v, axis=0) for v in per_piece.values()]).mean(axis=0)
    return dict(zip(("length", "beat", "downbeat"), map(float, means)))


def print_table(label: str, table: list[dict], parts) -> None:
    print(f"{label:>14} " + " ".join(f"{part + ' ' + k:>18}" for part in parts for k in ("length", "beat",
                                                                                        "downbeat")))
    for t in table:
        print(f"{t['setting']:>14} " + " ".join(f"{t[f'{part}_{k}']:18.3f}" for part in parts
                                                for k in ("length", "beat", "downbeat")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asap", default=None)
    ap.add_argument("--limit", type=int, default=None, help="first N performances of each part (a quick look)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "bar_length.json")
    args = ap.parse_args(argv)
    sessions = notenet.load_default()
    data = {part: [decode(e, sessions) for e in tqdm(entries[:args.limit], desc=part)]
            for part, entries in performances(args.asap).items()}
    for part, rows in data.items():
        refs = defaultdict(int)
        for r in rows:
            refs[r["ref"]] += 1
        print(f"{part}: {len(rows)} performances, annotated bar lengths {dict(sorted(refs.items()))}")
    def scored(setting: str, reference: float, bias=None) -> dict:
        return {"setting": setting, **{f"{part}_{k}": v for part, rows in data.items()
                                       for k, v in score(rows, reference, bias).items()}}

    table = [scored(f"{ref}", ref) for ref in REFERENCES]
    print_table("reference", table, data)
    biases = [scored(f"{b3:+.4f} {b4:+.4f}", 0.5, {3: b3, 4: b4}) for b3, b4 in itertools.product(BIASES, BIASES)]
    biases.sort(key=lambda t: -t["train_length"])
    print_table("bias 3, bias 4", [scored("+0.0000 +0.0000", 0.5)] + biases[:5], data)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": data, "references": table, "biases": biases}, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
