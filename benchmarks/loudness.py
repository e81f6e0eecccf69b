#!/usr/bin/env python
"""How the model's accuracy on ENSTDkAm depends on the recording's level.

    .venv/bin/python benchmarks/loudness.py [--model FILE] [--levels -40 -32 -24 -16] [--json FILE]

Each of the 23 recordings is scaled to each active loudness (dBFS: the mean power of its 50 ms frames
within 50 dB of the loudest, as the training renders' `gain` transform measures it) and transcribed;
the first row is the recordings as they are. The training renders were normalised to -32..-16 dBFS.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from keyscribe.audio import active_power, load_audio
from keyscribe.data.maps import maps_recordings
from keyscribe.report import evaluate_on_recordings, model_file_transcriber

ROOT = Path(__file__).resolve().parents[1]
MAPS_DIR = ROOT.parent / "shared" / "data" / "maps" / "ENSTDkAm"
COLUMNS = ("frame", "note", "note_offset", "note_offset_velocity")


def recorded_levels(maps_dir: Path = MAPS_DIR, sample_rate: int = 16000) -> list[float]:
    """Each recording's active loudness as it is, dBFS."""
    return [10 * np.log10(active_power(load_audio(r.audio_path, sample_rate=sample_rate), sample_rate))
            for r in maps_recordings(maps_dir)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file (.onnx or .pt; default: the shipped model)")
    ap.add_argument("--levels", type=float, nargs="+", default=[-40.0, -32.0, -24.0, -16.0])
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "loudness.json")
    args = ap.parse_args(argv)
    levels = recorded_levels()
    print(f"the recordings' active loudness: {min(levels):.1f} to {max(levels):.1f} dBFS, median {np.median(levels):.1f}")
    transcribe = model_file_transcriber(args.model)
    rows = {}
    for level in [None, *args.levels]:
        result = evaluate_on_recordings(transcribe, MAPS_DIR, loudness_dbfs=level)
        rows["as recorded" if level is None else f"{level:g} dBFS"] = {c: result["mean"][f"{c}/f1"] for c in COLUMNS}
    print("| ENSTDkAm level | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, scores in rows.items():
        print(f"| {name} | " + " | ".join(f"{scores[c]:.3f}" for c in COLUMNS) + " |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": args.model or "shipped", "recorded_dbfs": levels, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
