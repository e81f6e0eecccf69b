#!/usr/bin/env python
"""How the note tracker's metre depends on the weight of the downbeat evidence in its joint HMM (validation
pieces only).

    .venv/bin/python benchmarks/downbeat_weight.py [--weights 1 1.5 2] [--from-audio PIANO [--model FILE]]
                                                   [--json FILE]

For each weight, `keyscribe score-eval --split validation` on the validation pieces (`asap.is_validation`:
kept out of the note networks' training, never the held-out pieces): up to 4 performances per piece from
their MIDI, or 1 per piece rendered on PIANO and transcribed by MODEL (default the shipped one; the
transcriptions are cached in work/score-eval-audio as score-eval does). Means over pieces.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from keyscribe.score import evaluate, notenet

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("beat_f1", "downbeat_f1", "ts_acc", "onset_est_local")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    ap.add_argument("--from-audio", metavar="PIANO", default=None)
    ap.add_argument("--model", default=None, help="transcription model for --from-audio (default: the shipped one)")
    ap.add_argument("--audio-cache", default=str(ROOT / "work" / "score-eval-audio"))
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "downbeat_weight.json")
    args = ap.parse_args(argv)
    hear = evaluate.audio_roundtrip(args.from_audio, args.audio_cache, args.model) if args.from_audio else None
    per_piece = 1 if hear else 4
    print(f"validation pieces, up to {per_piece} performance(s) each, {getattr(hear, 'description', 'from MIDI')}")
    print("| downbeat weight | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS))
    rows = []
    default = notenet.DOWNBEAT_WEIGHT
    try:
        for weight in args.weights:
            notenet.DOWNBEAT_WEIGHT = weight
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = evaluate.evaluate_asap(split="validation", max_per_piece=per_piece, progress=False, hear=hear)
            rows.append({"weight": weight, "performances": result["performances"],
                         **{c: result["summary"][c] for c in COLUMNS}})
            print(f"| {weight:g} | " + " | ".join(f"{rows[-1][c]:.3f}" for c in COLUMNS) + " |", flush=True)
    finally:
        notenet.DOWNBEAT_WEIGHT = default
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"input": getattr(hear, "description", "performance MIDI"), "rows": rows},
                                    indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
