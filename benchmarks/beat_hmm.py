#!/usr/bin/env python
"""How the note tracker's beat and downbeat F1 depend on its HMM's two settings (validation pieces only).

    .venv/bin/python benchmarks/beat_hmm.py [--transition 100 10 15 20 30] [--observation 16 32] [--json FILE]

Every ASAP performance of the validation pieces (`asap.is_validation`: kept out of the networks'
training, never the held-out pieces) is tracked with the shipped note networks for each pair of
transition lambda (how cheap a tempo change is) and observation lambda (the beat's share of a beat
period). Mean over performances of mir_eval's beat F1 (70 ms) for beats and downbeats.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from keyscribe.score import notenet
from keyscribe.score.train_beats import validation_score, validation_set

ROOT = Path(__file__).resolve().parents[1]


def score(val: list[tuple], sessions, transition: float, observation: int) -> tuple[float, float]:
    """Mean beat and downbeat F1 of the shipped note networks with the HMM at these settings."""
    old = notenet.TRANSITION_LAMBDA, notenet.OBSERVATION_LAMBDA
    notenet.TRANSITION_LAMBDA, notenet.OBSERVATION_LAMBDA = transition, observation
    try:
        return validation_score(val, lambda perf: notenet.estimate_metre_notes(sessions[0], perf, sessions[1]))
    finally:
        notenet.TRANSITION_LAMBDA, notenet.OBSERVATION_LAMBDA = old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--asap", default=None)
    ap.add_argument("--transition", type=float, nargs="+", default=[100.0, 10.0, 15.0, 20.0, 30.0])
    ap.add_argument("--observation", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "beat_hmm.json")
    args = ap.parse_args(argv)
    val = validation_set(args.asap, every_performance=True)
    sessions = notenet.load_default()
    print(f"{len(val)} validation performances")
    print("| transition lambda | observation lambda | beat F1 | downbeat F1 |\n|---|---|---|---|")
    rows = []
    for transition, observation in itertools.product(args.transition, args.observation):
        beat, downbeat = score(val, sessions, transition, observation)
        rows.append({"transition": transition, "observation": observation, "beat_f1": beat, "downbeat_f1": downbeat})
        print(f"| {transition:g} | {observation} | {beat:.3f} | {downbeat:.3f} |", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"performances": len(val), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
