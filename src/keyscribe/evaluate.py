"""Transcription metrics with mir_eval: frame, note, note-with-offset(-and-velocity) and pedal.

Metric names follow Onsets-and-Frames: `frame/f1`, `note/f1` (onsets within 50 ms), `note_offset/f1`
(offsets within 20% of the duration or 50 ms), `note_offset_velocity/f1`, and `pedal/f1` (frame-level
sustain pedal, only when both sides have pedal), each also with `/precision` and `/recall`.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mir_eval
import numpy as np

from keyscribe.errors import LabelError
from keyscribe.labels import notes_to_rolls
from keyscribe.midi import LABEL_SUFFIXES, read_labels
from keyscribe.notes import MIN_PITCH, N_KEYS, Performance, notes_to_arrays

EVAL_FRAME_RATE = 100.0  # frames per second of the frame-level grid, independent of the model's
METRICS = ("frame", "note", "note_offset", "note_offset_velocity", "pedal")


@dataclass(frozen=True)
class EvalConfig:
    onset_tolerance_s: float = 0.05
    offset_ratio: float = 0.2
    offset_min_tolerance_s: float = 0.05
    velocity_tolerance: float = 0.1
    frame_rate: float = EVAL_FRAME_RATE


def _midi_to_hz(pitches: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(pitches, dtype=float) - 69.0) / 12.0)


def _prf(prefix: str, precision: float, recall: float, f1: float) -> dict[str, float]:
    return {f"{prefix}/precision": float(precision), f"{prefix}/recall": float(recall), f"{prefix}/f1": float(f1)}


def _f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def frame_metrics(ref: Performance, est: Performance, config: EvalConfig = EvalConfig()) -> dict[str, float]:
    """Frame-level P/R/F1 of sounding notes with mir_eval.multipitch on a `config.frame_rate` grid."""
    n_frames = int(np.ceil(max(ref.end_s, est.end_s) * config.frame_rate)) + 1
    times = np.arange(n_frames) / config.frame_rate
    freqs = []
    for perf in (ref, est):
        frame = notes_to_rolls(perf.notes, (), n_frames, config.frame_rate).frame
        freqs.append([_midi_to_hz(np.flatnonzero(row) + MIN_PITCH) for row in frame])
    scores = mir_eval.multipitch.evaluate(times, freqs[0], times, freqs[1])
    precision, recall = scores["Precision"], scores["Recall"]
    return _prf("frame", precision, recall, _f1(precision, recall))


def note_metrics(ref: Performance, est: Performance, config: EvalConfig = EvalConfig()) -> dict[str, float]:
    """Note-level P/R/F1: onset only, with offset, and with offset and velocity."""
    ref_iv, ref_p, ref_v = notes_to_arrays(ref.notes)
    est_iv, est_p, est_v = notes_to_arrays(est.notes)
    ref_hz, est_hz = _midi_to_hz(ref_p), _midi_to_hz(est_p)
    out: dict[str, float] = {}
    for name, offset_ratio in (("note", None), ("note_offset", config.offset_ratio)):
        p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
            ref_iv, ref_hz, est_iv, est_hz, onset_tolerance=config.onset_tolerance_s,
            offset_ratio=offset_ratio, offset_min_tolerance=config.offset_min_tolerance_s)
        out.update(_prf(name, p, r, f))
    p, r, f, _ = mir_eval.transcription_velocity.precision_recall_f1_overlap(
        ref_iv, ref_hz, ref_v, est_iv, est_hz, est_v, onset_tolerance=config.onset_tolerance_s,
        offset_ratio=config.offset_ratio, offset_min_tolerance=config.offset_min_tolerance_s,
        velocity_tolerance=config.velocity_tolerance)
    out.update(_prf("note_offset_velocity", p, r, f))
    return out


def pedal_metrics(ref: Performance, est: Performance, config: EvalConfig = EvalConfig()) -> dict[str, float]:
    """Frame-level P/R/F1 of the sustain pedal being down."""
    n_frames = int(np.ceil(max(ref.end_s, est.end_s) * config.frame_rate)) + 1
    ref_roll = notes_to_rolls((), ref.pedals, n_frames, config.frame_rate).pedal.astype(bool)
    est_roll = notes_to_rolls((), est.pedals, n_frames, config.frame_rate).pedal.astype(bool)
    tp = float(np.sum(ref_roll & est_roll))
    precision = tp / est_roll.sum() if est_roll.any() else 0.0
    recall = tp / ref_roll.sum() if ref_roll.any() else 0.0
    return _prf("pedal", precision, recall, _f1(precision, recall))


def evaluate_performance(ref: Performance, est: Performance, *, pedal_extend: bool = True,
                         config: EvalConfig = EvalConfig()) -> dict[str, float]:
    """All metrics for one recording. `pedal_extend` applies each side's own sustain pedal to its notes
    (a no-op for notes already sounding to the pedal's release, and for files without pedal)."""
    if pedal_extend:
        ref, est = ref.with_sustain(), est.with_sustain()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns on empty note lists, which score 0 here
        scores = {**frame_metrics(ref, est, config), **note_metrics(ref, est, config)}
    if ref.pedals and est.pedals:
        scores.update(pedal_metrics(ref, est, config))
    return scores


def per_key_counts(ref: Performance, est: Performance, onset_tolerance_s: float = 0.05) -> np.ndarray:
    """(3, 88) true positive, false positive and false negative note onsets per key."""
    ref_iv, ref_p, _ = notes_to_arrays(ref.notes)
    est_iv, est_p, _ = notes_to_arrays(est.notes)
    counts = np.zeros((3, N_KEYS), np.int64)
    ref_hit, est_hit = _hit_masks(_matches(ref_iv, ref_p, est_iv, est_p, onset_tolerance_s), len(ref_p), len(est_p))
    np.add.at(counts[0], ref_p[ref_hit] - MIN_PITCH, 1)
    np.add.at(counts[1], est_p[~est_hit] - MIN_PITCH, 1)
    np.add.at(counts[2], ref_p[~ref_hit] - MIN_PITCH, 1)
    return counts


ERROR_TYPES = ("matched", "missed", "mistimed", "extra_octave", "extra_repeat", "extra_other")
VELOCITY_BANDS = (0, 30, 45, 60, 75, 90, 128)  # MIDI velocity band edges for `recall_by_velocity`


def recall_by_velocity(ref: Performance, est: Performance, onset_tolerance_s: float = 0.05,
                       bands: tuple[int, ...] = VELOCITY_BANDS) -> np.ndarray:
    """(2, len(bands) - 1) reference notes found (onset within the tolerance) and reference notes in
    all, per band of the reference velocity [bands[i], bands[i + 1])."""
    ref_iv, ref_p, ref_v = notes_to_arrays(ref.notes)
    est_iv, est_p, _ = notes_to_arrays(est.notes)
    ref_hit, _ = _hit_masks(_matches(ref_iv, ref_p, est_iv, est_p, onset_tolerance_s), len(ref_p), len(est_p))
    band = np.digitize(ref_v, bands[1:-1])
    return np.stack([np.bincount(band[ref_hit], minlength=len(bands) - 1),
                     np.bincount(band, minlength=len(bands) - 1)])


def error_types(ref: Performance, est: Performance, onset_tolerance_s: float = 0.05,
                timing_window_s: float = 0.15) -> tuple[dict[str, int], np.ndarray]:
    """Note-onset errors by kind, and the onset deviations (s, estimate minus reference) of the notes
    matched within `timing_window_s` (a wider window, so a constant lag shows whole).

    mistimed: a reference note missed at `onset_tolerance_s` but matched within `timing_window_s` (it is
    also counted as missed; its estimate is one extra note, counted only here). The other extra notes:
    `octave` when a reference onset an octave away is within the tolerance (harmonics heard as notes),
    `repeat` when a reference note of the same key is still held (a sustained note struck again), else
    `other`."""
    ref_iv, ref_p, _ = notes_to_arrays(ref.notes)
    est_iv, est_p, _ = notes_to_arrays(est.notes)
    strict, wide = (_matches(ref_iv, ref_p, est_iv, est_p, tol) for tol in (onset_tolerance_s, timing_window_s))
    ref_hit, est_hit = _hit_masks(strict, len(ref_p), len(est_p))
    counts = dict.fromkeys(ERROR_TYPES, 0)
    counts["matched"] = int(ref_hit.sum())
    counts["missed"] = int((~ref_hit).sum())
    mistimed = [j for i, j in wide if not ref_hit[i] and not est_hit[j]]
    counts["mistimed"] = len(mistimed)
    for j in np.setdiff1d(np.flatnonzero(~est_hit), mistimed):
        near = np.abs(ref_iv[:, 0] - est_iv[j, 0]) <= onset_tolerance_s
        if np.any(near & (np.abs(ref_p - est_p[j]) == 12)):
            counts["extra_octave"] += 1
        elif np.any((ref_p == est_p[j]) & (ref_iv[:, 0] < est_iv[j, 0]) & (ref_iv[:, 1] > est_iv[j, 0])):
            counts["extra_repeat"] += 1
        else:
            counts["extra_other"] += 1
    deviations = np.array([est_iv[j, 0] - ref_iv[i, 0] for i, j in wide])
    return counts, deviations


def _matches(ref_iv, ref_p, est_iv, est_p, onset_tolerance_s: float) -> list[tuple[int, int]]:
    if not (len(ref_p) and len(est_p)):
        return []
    return mir_eval.transcription.match_notes(ref_iv, _midi_to_hz(ref_p), est_iv, _midi_to_hz(est_p), onset_tolerance=onset_tolerance_s,
                                              offset_ratio=None)


def _hit_masks(matches: list[tuple[int, int]], n_ref: int, n_est: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the reference and estimated notes that `matches` pairs."""
    ref_hit, est_hit = np.zeros(n_ref, bool), np.zeros(n_est, bool)
    for i, j in matches:
        ref_hit[i] = est_hit[j] = True
    return ref_hit, est_hit


def summarise_errors(per_file: list[tuple[dict[str, int], np.ndarray]], velocity_counts: list[np.ndarray] = ()
                     ) -> dict:
    """`{"error_types": totals, "onset_timing": {"median_s", "iqr_s"}, "recall_by_velocity": [found,
    total]}` over `error_types` (and `recall_by_velocity`) results."""
    totals = {k: int(sum(counts[k] for counts, _ in per_file)) for k in ERROR_TYPES}
    deviations = np.concatenate([d for _, d in per_file]) if per_file else np.zeros(0)
    timing = {"median_s": float(np.median(deviations)) if deviations.size else None,
              "iqr_s": [float(q) for q in np.percentile(deviations, [25, 75])] if deviations.size else None}
    found_total = np.sum(velocity_counts, axis=0) if len(velocity_counts) else np.zeros((2, len(VELOCITY_BANDS) - 1))
    return {"error_types": totals, "onset_timing": timing, "recall_by_velocity": found_total.astype(int).tolist()}


def pair_files(ref_dir: str | os.PathLike, est_dir: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(reference, estimate) pairs with the same stem; raises if a folder is missing or nothing pairs."""
    folders = []
    for label, folder in (("reference", ref_dir), ("estimate", est_dir)):
        folder = Path(folder)
        if not folder.is_dir():
            raise LabelError(f"{folder}: {label} folder does not exist")
        folders.append({p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in LABEL_SUFFIXES})
    refs, ests = folders
    pairs = [(refs[stem], ests[stem]) for stem in sorted(refs) if stem in ests]
    if not pairs:
        raise LabelError(f"no files pair by name between {ref_dir} and {est_dir} (.mid/.midi/.tsv)")
    return pairs


def mean_scores(per_file: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """Mean of each metric over the files that have it; None where no file has it."""
    keys = [f"{m}/{s}" for m in METRICS for s in ("precision", "recall", "f1")]
    means: dict[str, float | None] = {}
    for key in keys:
        values = [scores[key] for scores in per_file.values() if key in scores]
        means[key] = float(np.mean(values)) if values else None
    return means


def evaluate_folders(ref_dir: str | os.PathLike, est_dir: str | os.PathLike, *, pedal_extend: bool = True,
                     config: EvalConfig = EvalConfig()) -> dict:
    """`{"mean": {...}, "files": {stem: {...}}, "unpaired": [...]}` for every file pair."""
    pairs = pair_files(ref_dir, est_dir)
    files = {ref.stem: evaluate_performance(read_labels(ref), read_labels(est), pedal_extend=pedal_extend,
                                            config=config) for ref, est in pairs}
    paired = {ref.stem for ref, _ in pairs}
    unpaired = sorted(p.stem for p in Path(ref_dir).iterdir()
                      if p.suffix.lower() in LABEL_SUFFIXES and p.stem not in paired)
    return {"mean": mean_scores(files), "files": files, "unpaired": unpaired}


def format_table(result: dict) -> str:
    """A fixed-width table: one row per file, then the mean; F1 of each metric."""
    width = max([len(s) for s in result["files"]] + [4])
    header = f"{'file':<{width}}  " + "  ".join(f"{m:>20}" for m in METRICS)
    lines = [header, "-" * len(header)]

    def row(name: str, scores: dict) -> str:
        cells = [scores.get(f"{m}/f1") for m in METRICS]
        return f"{name:<{width}}  " + "  ".join(f"{'-' if c is None else f'{c:.4f}':>20}" for c in cells)

    lines += [row(stem, scores) for stem, scores in result["files"].items()]
    lines += ["-" * len(header), row("mean", result["mean"])]
    if result.get("unpaired"):
        lines.append(f"({len(result['unpaired'])} reference files had no estimate: {', '.join(result['unpaired'][:5])}...)")
    return "\n".join(lines)


def format_velocity_recall(found_total) -> str:
    """One line per velocity band: the share of reference notes found, of how many."""
    found, total = np.asarray(found_total)
    lines = ["note-onset recall by reference velocity"]
    for lo, hi, f, t in zip(VELOCITY_BANDS[:-1], VELOCITY_BANDS[1:], found, total):
        lines.append(f"  {lo:>3}-{hi - 1:<3}  {f / t:.3f}  of {t} notes" if t else f"  {lo:>3}-{hi - 1:<3}  -      no notes")
    return "\n".join(lines)


def write_json(result: dict, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
