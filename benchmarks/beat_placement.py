#!/usr/bin/env python
"""Level or placement: what a score-eval run's beat errors are made of.

    keyscribe score-eval --json notes.json                      # held-out pieces, ~5 min
    .venv/bin/python benchmarks/beat_placement.py notes.json [--json FILE]

Reads the per-performance rows of a `keyscribe score-eval --json` file and prints, over performances:
beat F1 and beat F1 at the best metrical level (`beat_f1_any_level`), how many performances fall in each
band of either, and beat F1 of the performances tracked at the annotated tempo (median tempo within 10%)
against the rest. If the level were the only error, the second group would score near 1.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BANDS = (0.0, 0.5, 0.7, 0.9, 1.01)
SAME_TEMPO = 0.1  # relative: a median tempo this close to the annotated one counts as the annotated level


def summarise(rows: list[dict]) -> dict:
    f1 = np.array([r["beat_f1"] for r in rows])
    any_level = np.array([r["beat_f1_any_level"] for r in rows])
    ratio = np.array([r["est"]["tempo_bpm"] / r["ref"]["tempo_bpm"] for r in rows])
    same = np.abs(ratio - 1) <= SAME_TEMPO
    return {"performances": len(rows), "beat_f1": float(f1.mean()), "beat_f1_any_level": float(any_level.mean()),
            "bands": [f"{lo:.1f}-{min(hi, 1.0):.1f}" for lo, hi in zip(BANDS[:-1], BANDS[1:])],
            "beat_f1_band_counts": np.histogram(f1, BANDS)[0].tolist(),
            "any_level_band_counts": np.histogram(any_level, BANDS)[0].tolist(),
            "at_annotated_tempo": int(same.sum()),
            "beat_f1_at_annotated_tempo": float(f1[same].mean()) if same.any() else float("nan"),
            "beat_f1_elsewhere": float(f1[~same].mean()) if (~same).any() else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("score_eval_json", type=Path)
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args(argv)
    result = json.loads(args.score_eval_json.read_text())
    s = summarise(result["per_performance"])
    print(f"{result['input']}, {result['split']} split: {s['performances']} performances (mean over performances)")
    print(f"beat F1 {s['beat_f1']:.3f}, at the best metrical level {s['beat_f1_any_level']:.3f}")
    print("| beat F1 band | " + " | ".join(s["bands"]) + " |")
    print("|---|" + "---|" * len(s["bands"]))
    print("| annotated level | " + " | ".join(map(str, s["beat_f1_band_counts"])) + " |")
    print("| best level | " + " | ".join(map(str, s["any_level_band_counts"])) + " |")
    print(f"tracked at the annotated tempo (within {SAME_TEMPO:.0%}): {s['at_annotated_tempo']} performances, "
          f"beat F1 {s['beat_f1_at_annotated_tempo']:.3f}; the others {s['beat_f1_elsewhere']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
