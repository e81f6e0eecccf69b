"""Is one model better than another on the same recordings, or within the noise of 23 files?

Reads two or more `keyscribe evaluate-model --json` files (the first is the reference) and prints, per metric,
each model's mean F1, its mean per-file difference from the reference, a 95% bootstrap interval of that
difference (files resampled with replacement, paired), and on how many files it is higher. Writes the table as JSON.

    .venv/bin/python benchmarks/paired.py REFERENCE.json OTHER.json [...] [--out benchmarks/out/paired.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

METRICS = ("frame/f1", "note/f1", "note_offset/f1", "note_offset_velocity/f1")
RESAMPLES = 10_000


def per_file(path: Path) -> dict[str, dict[str, float]]:
    files = json.loads(path.read_text())["files"]
    return {name: {m: scores[m] for m in METRICS} for name, scores in files.items()}


def paired_difference(reference: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> dict:
    """Mean of other - reference over files, its 95% bootstrap interval, and files where other is higher."""
    diff = other - reference
    means = diff[rng.integers(0, diff.size, (RESAMPLES, diff.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": float(diff.mean()), "ci95": [float(low), float(high)],
            "higher": int((diff > 0).sum()), "files": int(diff.size)}


def compare(paths: list[Path], seed: int = 0) -> dict:
    reference = per_file(paths[0])
    rows = {}
    for path in paths[1:]:
        other = per_file(path)
        if set(other) != set(reference):
            raise SystemExit(f"{path}: not scored on the same recordings as {paths[0]}")
        names = sorted(reference)
        rows[str(path)] = {}
        for metric in METRICS:
            ref = np.array([reference[n][metric] for n in names])
            oth = np.array([other[n][metric] for n in names])
            rows[str(path)][metric] = {"reference_mean": float(ref.mean()), "model_mean": float(oth.mean()),
                                       **paired_difference(ref, oth, np.random.default_rng(seed))}
    return {"reference": str(paths[0]), "resamples": RESAMPLES, "models": rows}


def print_table(result: dict) -> None:
    print(f"reference: {result['reference']}")
    print(f"{'model':40s} {'metric':24s} {'ref':>6s} {'model':>6s} {'diff':>7s} {'95% interval':>17s} {'higher':>7s}")
    for path, metrics in result["models"].items():
        for metric, r in metrics.items():
            low, high = r["ci95"]
            print(f"{Path(path).stem[:40]:40s} {metric:24s} {r['reference_mean']:6.3f} {r['model_mean']:6.3f} "
                  f"{r['difference']:+7.3f} [{low:+.3f}, {high:+.3f}] {r['higher']:>3d}/{r['files']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path, help="evaluate-model JSON of the reference model")
    ap.add_argument("others", type=Path, nargs="+", help="evaluate-model JSON of the models to compare")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/paired.json"))
    args = ap.parse_args()
    result = compare([args.reference, *args.others])
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
