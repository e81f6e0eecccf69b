"""Dataset statistics of a folder of MIDI/tsv labels, and the key co-occurrence matrix.

The co-occurrence matrix is the GCN's adjacency: entry (i, j) is P(key j sounds | key i sounds),
counted over frames of the pedal-extended notes at the model frame rate.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from keyscribe.errors import LabelError
from keyscribe.features import FeatureConfig
from keyscribe.labels import notes_to_rolls
from keyscribe.midi import LABEL_SUFFIXES, read_labels
from keyscribe.notes import MIN_PITCH, N_KEYS, pitch_name

EDGE_THRESHOLD = 0.1  # P(j|i) at or above this counts as an edge in the reported graph statistics


def label_files(data_dir: str | os.PathLike) -> list[Path]:
    """Every .mid/.midi/.tsv below `data_dir`, sorted; score MIDI (`midi_score.mid`) is skipped."""
    root = Path(data_dir)
    if not root.is_dir():
        raise LabelError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in LABEL_SUFFIXES and p.stem != "midi_score")
    if not files:
        raise LabelError(f"{root}: no .mid/.midi/.tsv files found")
    return files


def cooccurrence_counts(frame_roll: np.ndarray) -> np.ndarray:
    """(88, 88) number of frames in which keys i and j both sound (the diagonal: frames key i sounds)."""
    active = frame_roll.astype(np.float32)
    return active.T @ active


def conditional_probabilities(counts: np.ndarray) -> np.ndarray:
    """P(j | i) = count(i, j) / count(i, i); rows of keys that never sound are zero."""
    diag = np.diag(counts).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        probs = np.where(diag[:, None] > 0, counts / diag[:, None], 0.0)
    return probs


def graph_summary(probs: np.ndarray, threshold: float = EDGE_THRESHOLD) -> dict:
    """Edge count, sparsity and degree statistics of the directed graph P(j|i) >= threshold, i != j."""
    off_diag = ~np.eye(len(probs), dtype=bool)
    edges = (probs >= threshold) & off_diag
    degree = edges.sum(axis=1)
    return {"edge_threshold": threshold, "edges": int(edges.sum()), "nonzero_pairs": int(((probs > 0) & off_diag).sum()),
            "sparsity": float(1 - edges.sum() / off_diag.sum()), "degree_mean": float(degree.mean()),
            "degree_median": float(np.median(degree)), "degree_max": int(degree.max()), "degree_min": int(degree.min())}


def dataset_stats(data_dir: str | os.PathLike, out_dir: str | os.PathLike, config: FeatureConfig = FeatureConfig()) -> dict:
    """Compute every statistic for `data_dir`, write .npy/.csv/.json/.png into `out_dir`, return the summary."""
    files = label_files(data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes_per_key = np.zeros(N_KEYS, np.int64)
    counts = np.zeros((N_KEYS, N_KEYS), np.float64)
    polyphony = np.zeros(N_KEYS + 1, np.int64)
    durations, velocities, total_s = [], [], 0.0
    for path in tqdm(files, desc="stats", unit="file"):
        perf = read_labels(path).with_sustain()
        n_frames = int(np.ceil(perf.end_s * config.frame_rate)) + 1
        frame = notes_to_rolls(perf.notes, (), n_frames, config.frame_rate).frame
        counts += cooccurrence_counts(frame)
        polyphony += np.bincount(frame.sum(axis=1), minlength=N_KEYS + 1)
        np.add.at(notes_per_key, [n.pitch - MIN_PITCH for n in perf.notes], 1)
        durations += [n.duration_s for n in perf.notes]
        velocities += [n.velocity for n in perf.notes]
        total_s += perf.end_s
    probs = conditional_probabilities(counts)
    summary = {"files": len(files), "hours": total_s / 3600, "notes": int(notes_per_key.sum()),
               "keys_used": int((notes_per_key > 0).sum()),
               "duration_s": _describe(np.array(durations)), "velocity": _describe(np.array(velocities)),
               "polyphony_mean_when_sounding": float((np.arange(N_KEYS + 1)[1:] * polyphony[1:]).sum() / max(polyphony[1:].sum(), 1)),
               "polyphony_max": int(np.flatnonzero(polyphony).max()),
               "graph": graph_summary(probs)}
    _write_outputs(out, probs, counts, notes_per_key, polyphony, np.array(durations), np.array(velocities), summary)
    return summary


def _describe(values: np.ndarray) -> dict:
    if values.size == 0:
        return {}
    q = np.percentile(values, [5, 50, 95])
    return {"mean": float(values.mean()), "p5": float(q[0]), "median": float(q[1]), "p95": float(q[2])}


def _write_outputs(out: Path, probs, counts, notes_per_key, polyphony, durations, velocities, summary) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [pitch_name(p) for p in range(MIN_PITCH, MIN_PITCH + N_KEYS)]
    np.save(out / "cooccurrence.npy", probs.astype(np.float32))
    np.save(out / "cooccurrence_counts.npy", counts)
    header = "key," + ",".join(names)
    rows = [f"{names[i]}," + ",".join(f"{v:.6f}" for v in probs[i]) for i in range(N_KEYS)]
    (out / "cooccurrence.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plots = {
        "notes_per_key.png": lambda ax: (ax.bar(np.arange(MIN_PITCH, MIN_PITCH + N_KEYS), notes_per_key), ax.set_xlabel("MIDI pitch"), ax.set_ylabel("notes")),
        "durations.png": lambda ax: (ax.hist(np.clip(durations, 0, 5), bins=100), ax.set_xlabel("sounding duration (s, clipped at 5)")),
        "velocities.png": lambda ax: (ax.hist(velocities, bins=np.arange(129) - 0.5), ax.set_xlabel("MIDI velocity")),
        "polyphony.png": lambda ax: (ax.bar(np.arange(len(polyphony)), polyphony), ax.set_xlabel("keys sounding in a frame"), ax.set_xlim(-0.5, 30)),
        "degree.png": lambda ax: (ax.hist(((probs >= EDGE_THRESHOLD) & ~np.eye(N_KEYS, dtype=bool)).sum(1), bins=30), ax.set_xlabel(f"out-degree (P >= {EDGE_THRESHOLD})")),
    }
    for name, draw in plots.items():
        fig, ax = plt.subplots(figsize=(8, 3.5))
        draw(ax)
        fig.tight_layout()
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(probs, origin="lower", cmap="magma", extent=(MIN_PITCH - .5, MIN_PITCH + N_KEYS - .5) * 2)
    ax.set_xlabel("key j (MIDI)"); ax.set_ylabel("key i (MIDI)"); ax.set_title("P(j sounds | i sounds)")
    fig.colorbar(image)
    fig.tight_layout()
    fig.savefig(out / "cooccurrence.png", dpi=80)
    plt.close(fig)


def format_summary(summary: dict) -> str:
    g = summary["graph"]
    return "\n".join([
        f"files {summary['files']}, {summary['hours']:.1f} h, notes {summary['notes']}, keys used {summary['keys_used']}/88",
        f"duration s: {summary['duration_s']}", f"velocity: {summary['velocity']}",
        f"polyphony (mean when sounding) {summary['polyphony_mean_when_sounding']:.2f}, max {summary['polyphony_max']}",
        f"graph P(j|i) >= {g['edge_threshold']}: edges {g['edges']}, nonzero pairs {g['nonzero_pairs']}, "
        f"sparsity {g['sparsity']:.3f}, degree mean {g['degree_mean']:.1f} median {g['degree_median']:.0f} "
        f"min {g['degree_min']} max {g['degree_max']}"])
