#!/usr/bin/env python
"""What the model's own sustain pedal does to its frame and offset scores, on real and on synthetic audio.

    .venv/bin/python benchmarks/pedal.py [--model FILE] [--excerpts 120] [--json FILE]

The model's frames are trained on pedal-extended labels, and it also writes the pedal it hears (CC64),
which a MIDI player (and `keyscribe evaluate-model`) applies to the notes. Each set is scored both ways
against its pedal-extended references: the estimate with its own pedal applied (what a listener hears,
the protocol of `evaluate-model`) and as decoded. Where the pedal estimate is right the first scores
higher (the pedal holds notes whose sound the model lost); where it holds the pedal through releases,
lower. `pedal down` is the share of the recording's time the estimate holds the pedal. The synthetic
excerpts are validation excerpts with pedal labels (`work/dataset`), so there the release events can be
scored too (mir_eval, 100 ms); ENSTDkAm's labels have no pedal track.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import mir_eval
import numpy as np
from tqdm import tqdm

from keyscribe.data.maps import maps_recordings
from keyscribe.data.shards import load_split
from keyscribe.evaluate import evaluate_performance
from keyscribe.features import FeatureConfig
from keyscribe.midi import read_labels
from keyscribe.notes import Performance
from keyscribe.report import model_file_transcriber, recording_mel
from keyscribe.train import excerpt_reference

ROOT = Path(__file__).resolve().parents[1]
MAPS_DIR = ROOT.parent / "shared" / "data" / "maps" / "ENSTDkAm"
COLUMNS = ("frame/precision", "frame/recall", "frame/f1", "note_offset/f1")


def pedal_down_share(est: Performance, duration_s: float) -> float:
    return sum(p.offset_s - p.onset_s for p in est.pedals) / duration_s


def both_ways(ref: Performance, est: Performance) -> dict[str, dict[str, float]]:
    """Scores of `est` with its own pedal applied and as decoded, against the pedal-extended `ref`."""
    ref = ref.with_sustain()
    return {"own pedal applied": evaluate_performance(ref, est.with_sustain(), pedal_extend=False),
            "as decoded": evaluate_performance(ref, Performance(est.notes), pedal_extend=False)}


def release_matches(ref: Performance, est: Performance, end_s: float) -> tuple[int, int, int]:
    """(matched, estimated, reference) pedal releases before `end_s` (an excerpt's cut is no release)."""
    ref_up = np.array([p.offset_s for p in ref.pedals if p.offset_s < end_s])
    est_up = np.array([p.offset_s for p in est.pedals if p.offset_s < end_s])
    matched = len(mir_eval.util.match_events(ref_up, est_up, 0.1)) if len(ref_up) and len(est_up) else 0
    return matched, len(est_up), len(ref_up)


def score_recordings(transcribe, features: FeatureConfig) -> tuple[list, list]:
    rows, shares = [], []
    for rec in tqdm(maps_recordings(MAPS_DIR), desc="ENSTDkAm", unit="file"):
        mel, duration_s = recording_mel(rec.audio_path, features)
        est = transcribe(mel)
        rows.append(both_ways(read_labels(rec.label_path), est))
        shares.append(pedal_down_share(est, duration_s))
    return rows, shares


def score_excerpts(transcribe, excerpts: list, features: FeatureConfig) -> tuple[list, list, np.ndarray]:
    rows, shares, releases = [], [], np.zeros(3, int)
    for ex in tqdm(excerpts, desc="synthetic", unit="excerpt"):
        est = transcribe(np.asarray(ex.mel, np.float32))
        ref = excerpt_reference(ex, features.frame_rate)
        duration = ex.mel.shape[0] / features.frame_rate
        rows.append(both_ways(ref, est))
        shares.append(pedal_down_share(est, duration))
        releases += release_matches(ref, est, duration - 0.05)
    return rows, shares, releases


def mean_table(rows: list[dict]) -> dict[str, dict[str, float]]:
    return {way: {c: float(np.mean([r[way][c] for r in rows])) for c in COLUMNS} for way in rows[0]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model file (.onnx or .pt; default: the shipped model)")
    ap.add_argument("--dataset", default=str(ROOT / "work" / "dataset"), help="rendered dataset with a validation split")
    ap.add_argument("--excerpts", type=int, default=120, help="validation excerpts to read (those with pedal labels are used)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "pedal.json")
    args = ap.parse_args(argv)
    features = FeatureConfig()
    transcribe = model_file_transcriber(args.model)
    real, real_share = score_recordings(transcribe, features)
    excerpts = [ex for ex in load_split(args.dataset, "validation")[: args.excerpts] if ex.has_pedal]
    synth, synth_share, releases = score_excerpts(transcribe, excerpts, features)
    out = {"model": args.model or "shipped",
           "ENSTDkAm": {"files": len(real), "pedal_down": float(np.mean(real_share)), "scores": mean_table(real)},
           "synthetic": {"excerpts": len(synth), "pedal_down": float(np.mean(synth_share)), "scores": mean_table(synth),
                         "releases": {"matched": int(releases[0]), "estimated": int(releases[1]), "reference": int(releases[2])}}}
    print("| set | estimate | frame precision | frame recall | frame F1 | note+offset F1 | pedal down |")
    print("|---|---|---|---|---|---|---|")
    for name in ("ENSTDkAm", "synthetic"):
        for way, scores in out[name]["scores"].items():
            print(f"| {name} | {way} | " + " | ".join(f"{scores[c]:.3f}" for c in COLUMNS) + f" | {out[name]['pedal_down']:.2f} |")
    m, e, r = releases
    print(f"synthetic pedal releases within 100 ms: precision {m / max(e, 1):.3f}, recall {m / max(r, 1):.3f} ({m} of {r})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
