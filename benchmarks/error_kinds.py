#!/usr/bin/env python
"""Which note-onset errors each tool makes on ENSTDkAm, from the MIDI files the peer benchmark wrote.

    .venv/bin/python benchmarks/error_kinds.py [--est benchmarks/out/peers/est] [--json FILE]

Run `benchmarks/peers.py` first: it leaves each tool's transcriptions in `<est>/<tool>/maps/*.mid`.
Every file is scored against its pedal-extended MAPS labels by `keyscribe.evaluate.error_types`: matched
and missed reference notes (50 ms), missed notes that an estimate of the same key finds within 150 ms
(mistimed), the other extra notes by kind (octave, repeat of a held key, other), and the onset lag
(estimate minus reference) of the notes matched within 150 ms.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from keyscribe.midi import read_labels, read_midi
from keyscribe.evaluate import ERROR_TYPES, error_types, summarise_errors

ROOT = Path(__file__).resolve().parents[1]
MAPS_DIR = ROOT.parent / "shared" / "data" / "maps" / "ENSTDkAm"


def tool_errors(est_dir: Path, maps_dir: Path = MAPS_DIR) -> dict:
    results = [error_types(read_labels(maps_dir / f"{est.stem}.tsv").with_sustain(), read_midi(est).with_sustain())
               for est in sorted(est_dir.glob("*.mid")) if (maps_dir / f"{est.stem}.tsv").is_file()]
    summary = summarise_errors(results)
    timing = summary["onset_timing"]
    lag = [None] * 3 if timing["median_s"] is None else [timing["iqr_s"][0], timing["median_s"], timing["iqr_s"][1]]
    return {"files": len(results), **summary["error_types"],
            **{k: None if v is None else 1000 * v for k, v in zip(("lag_ms_q1", "lag_ms_median", "lag_ms_q3"), lag)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--est", type=Path, default=ROOT / "benchmarks" / "out" / "peers" / "est")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "error_kinds.json")
    args = ap.parse_args(argv)
    tools = {d.name: tool_errors(d / "maps") for d in sorted(args.est.iterdir()) if (d / "maps").is_dir()}
    tools = {name: row for name, row in tools.items() if row["files"]}
    if not tools:
        raise SystemExit(f"error: no transcriptions under {args.est}/<tool>/maps; run benchmarks/peers.py first")
    head = ("tool", "files", *ERROR_TYPES, "lag ms (q1 / median / q3)")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, r in tools.items():
        lag = " / ".join(f"{r[k]:.0f}" for k in ("lag_ms_q1", "lag_ms_median", "lag_ms_q3"))
        print(f"| {name} | {r['files']} | " + " | ".join(str(r[k]) for k in ERROR_TYPES) + f" | {lag} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(tools, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
