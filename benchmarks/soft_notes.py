#!/usr/bin/env python
"""Why the model misses soft notes: how they stand out in its input, what it answers, and when, by velocity.

    .venv/bin/python benchmarks/soft_notes.py [--model FILE] [--dataset work/dataset] [--excerpts 150] [--json FILE]

For every reference note of the 23 ENSTDkAm recordings (brought to -24 dBFS as `keyscribe transcribe` does)
and of the first `--excerpts` synthetic validation excerpts (rendered and augmented as the training audio is):
- onset rise: how much the note's onset stands out in the log-mel, the model's input: the increase at its
  first three harmonics (the largest of the three), the highest of the four frames from its labelled onset
  on minus the mean of the three frames ending two frames before it (natural-log units of magnitude, 1.0 =
  x2.7). Notes of a chord share harmonics, so this is an upper bound for any one note of a chord.
- peak onset: the model's highest onset probability for the note's key from one frame before to three after
  the labelled onset (-32 to +96 ms), and the share of notes where it reaches the decoding threshold.
- found: a decoded note of the same key within 50 ms (the note-F1 criterion), and the lag of the nearest
  decoded onset of that key when within 150 ms (quartiles, ms), with the share of those later than 50 ms.
An analysis, not a fit: nothing is chosen from these figures.
"""
from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path

import mir_eval
import numpy as np
from tqdm import tqdm

from keyscribe.data.maps import maps_recordings
from keyscribe.data.shards import load_split
from keyscribe.decode import decode_notes
from keyscribe.features import FeatureConfig, hz_to_mel
from keyscribe.inference import Model, load_model
from keyscribe.midi import read_labels
from keyscribe.notes import MIN_PITCH, Note
from keyscribe.report import recording_mel
from keyscribe.train import excerpt_reference

ROOT = Path(__file__).resolve().parents[1]
MAPS_DIR = ROOT.parent / "shared" / "data" / "maps" / "ENSTDkAm"
VELOCITY_BANDS = ((0, 29), (30, 44), (45, 59), (60, 74), (75, 89), (90, 127))
HARMONICS = (1, 2, 3)
BEFORE, AFTER = 3, 4  # frames: the baseline ends two frames before the onset; the peak is sought in AFTER frames
PEAK_WINDOW = (-1, 3)  # frames around the labelled onset searched for the model's onset peak
FOUND_S, NEAR_S = 0.05, 0.15


@lru_cache(maxsize=None)
def harmonic_bins(pitch: int, features: FeatureConfig) -> list[int]:
    """The mel bands whose centres are nearest to the first harmonics of `pitch` (below fmax)."""
    centres = np.linspace(hz_to_mel(features.fmin_hz), hz_to_mel(features.fmax_hz), features.n_mels + 2)[1:-1]
    f0 = float(mir_eval.util.midi_to_hz(pitch))
    return [int(np.argmin(np.abs(centres - hz_to_mel(h * f0)))) for h in HARMONICS if h * f0 < features.fmax_hz]


def onset_rise(mel: np.ndarray, frame: int, pitch: int, features: FeatureConfig) -> float:
    """The onset rise of a note of `pitch` starting at `frame` (nan too near either end)."""
    start = frame - 1 - BEFORE
    if start < 0 or frame + AFTER > len(mel):
        return float("nan")
    bins = harmonic_bins(pitch, features)
    before = mel[start:frame - 1, bins].mean(axis=0)
    after = mel[frame:frame + AFTER, bins].max(axis=0)
    return float(np.max(after - before))


def note_rows(mel: np.ndarray, reference: list[Note], model: Model) -> list[tuple[int, float, float, float]]:
    """(velocity, onset rise, peak onset probability, lag in s to the nearest decoded onset of the key)."""
    probs = model.probabilities(mel)
    frame_rate = model.features.frame_rate
    decoded: dict[int, list[float]] = {}
    for note in decode_notes(probs["onset"], probs["frame"], probs["velocity"], frame_rate, model.decode_config):
        decoded.setdefault(note.pitch, []).append(note.onset_s)
    rows = []
    for note in reference:
        frame, key = int(round(note.onset_s * frame_rate)), note.pitch - MIN_PITCH
        window = probs["onset"][max(0, frame + PEAK_WINDOW[0]):frame + PEAK_WINDOW[1] + 1, key]
        lags = np.array(decoded.get(note.pitch, [np.inf])) - note.onset_s
        rows.append((note.velocity, onset_rise(mel, frame, note.pitch, model.features),
                     float(window.max()) if window.size else 0.0, float(lags[np.argmin(np.abs(lags))])))
    return rows


def real_rows(model: Model) -> list:
    rows = []
    for rec in tqdm(maps_recordings(MAPS_DIR), desc="ENSTDkAm", unit="file"):
        mel, _ = recording_mel(rec.audio_path, model.features)
        rows += note_rows(mel, list(read_labels(rec.label_path).notes), model)
    return rows


def synthetic_rows(dataset: Path, n_excerpts: int, model: Model) -> list:
    rows = []
    for excerpt in tqdm(load_split(dataset, "validation")[:n_excerpts], desc="synthetic", unit="excerpt"):
        mel = np.asarray(excerpt.mel, dtype=np.float32)
        rows += note_rows(mel, list(excerpt_reference(excerpt, model.features.frame_rate).notes), model)
    return rows


def by_band(rows: list, onset_threshold: float) -> list[dict]:
    table = np.array(rows, dtype=float)
    out = []
    for lo, hi in VELOCITY_BANDS:
        band = table[(table[:, 0] >= lo) & (table[:, 0] <= hi)]
        if not len(band):
            continue
        rise, peak, lag = band[:, 1], band[:, 2], band[:, 3]
        near_ms = lag[np.abs(lag) < NEAR_S] * 1000
        q1, median, q3 = np.percentile(near_ms, [25, 50, 75]) if near_ms.size else (np.nan,) * 3
        out.append({"velocity": f"{lo}-{hi}", "notes": len(band),
                    "rise_median": round(float(np.nanmedian(rise)), 2),
                    "peak_at_threshold": round(float(np.mean(peak >= onset_threshold)), 3),
                    "found_50ms": round(float(np.mean(np.abs(lag) < FOUND_S)), 3),
                    "near_150ms": round(float(np.mean(np.abs(lag) < NEAR_S)), 3),
                    "lag_ms_quartiles": [round(float(q), 1) for q in (q1, median, q3)],
                    "near_later_than_50ms": round(float(np.mean(near_ms > FOUND_S * 1000)), 3) if near_ms.size else None})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="an .onnx model or a checkpoint (default: the shipped model)")
    ap.add_argument("--dataset", type=Path, default=ROOT / "work" / "dataset")
    ap.add_argument("--excerpts", type=int, default=150)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "soft_notes.json")
    args = ap.parse_args(argv)
    model = load_model(args.model)
    threshold = model.decode_config.onset_threshold
    result = {"model": model.model_id, "onset_threshold": threshold,
              "ENSTDkAm": by_band(real_rows(model), threshold),
              "synthetic validation": by_band(synthetic_rows(args.dataset, args.excerpts, model), threshold)}
    print(f"{model.model_id}, onset threshold {threshold}")
    print("| audio | velocity | notes | onset rise (median) | peak onset >= threshold | found (50 ms) "
          "| within 150 ms | lag ms (quartiles) | of those, later than 50 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("ENSTDkAm", "synthetic validation"):
        for b in result[name]:
            q1, median, q3 = b["lag_ms_quartiles"]
            print(f"| {name} | {b['velocity']} | {b['notes']:,} | {b['rise_median']:.2f} | {b['peak_at_threshold']:.2f} "
                  f"| {b['found_50ms']:.2f} | {b['near_150ms']:.2f} | {median:.0f} ({q1:.0f} to {q3:.0f}) "
                  f"| {b['near_later_than_50ms']:.2f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
