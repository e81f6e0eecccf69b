"""Scoring trained models (and the rule-based baseline) on real recordings, for comparing runs.

The ENSTDkAm recordings are for evaluation only: nothing here feeds back into training or decoding
thresholds.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from keyscribe.audio import load_audio, loudness_gain
from keyscribe.data.maps import maps_recordings
from keyscribe.decode import DecodeConfig, decode_notes, decode_pedals
from keyscribe.errors import KeyscribeError
from keyscribe.evaluate import (ERROR_TYPES, VELOCITY_BANDS, error_types, evaluate_performance, mean_scores,
                                 note_metrics, per_key_counts, recall_by_velocity, summarise_errors)
from keyscribe.features import FeatureConfig, log_mel
from keyscribe.inference import INPUT_LOUDNESS_DBFS, run_decode_config
from keyscribe.midi import read_labels
from keyscribe.notes import Performance
from keyscribe.train import (decoding_transcriber, evaluate_on_excerpts, excerpt_reference, load_model,
                             model_from_payload, model_transcriber, probabilities)


def checkpoint_transcriber(checkpoint: str | os.PathLike, decode: DecodeConfig | None = None,
                           features: FeatureConfig = FeatureConfig()) -> Callable:
    """A function log-mel -> Performance using a training checkpoint (torch, whole file at once), decoded
    with `decode` or else its run's [decode] settings."""
    return model_transcriber(load_model(checkpoint), decode or run_decode_config(checkpoint), features)


def model_file_transcriber(model: str | os.PathLike | None = None) -> Callable:
    """Like `checkpoint_transcriber` for a training checkpoint (.pt); for an exported model (.onnx, or
    None: the shipped one) through onnxruntime, decoded with the settings saved beside it."""
    if model is not None and Path(model).suffix == ".pt":
        return checkpoint_transcriber(model)
    from keyscribe.inference import load_model as load_runtime

    runtime = load_runtime(model, device="cpu")
    return decoding_transcriber(runtime.probabilities, runtime.decode_config, runtime.features)


def recording_mel(path: str | os.PathLike, features: FeatureConfig = FeatureConfig(),
                  loudness_dbfs: float | None = INPUT_LOUDNESS_DBFS) -> tuple[np.ndarray, float]:
    """(log-mel, duration in s) of a recording, brought to the active loudness `loudness_dbfs` first as
    the transcription engine does (None: as recorded)."""
    audio = load_audio(path, sample_rate=features.sample_rate)
    if loudness_dbfs is not None:
        audio = audio * np.float32(loudness_gain(audio, features.sample_rate, loudness_dbfs))
    return log_mel(audio, features), audio.size / features.sample_rate


def evaluate_on_recordings(transcribe: Callable, data_dir: str | os.PathLike, *, limit: int | None = None,
                           features: FeatureConfig = FeatureConfig(),
                           loudness_dbfs: float | None = INPUT_LOUDNESS_DBFS) -> dict:
    """`{"mean", "files", "seconds", "audio_seconds"}`: every recording with a tsv in `data_dir`,
    transcribed from its log-mel and scored against its pedal-extended labels. Each recording is first
    scaled to the active loudness `loudness_dbfs` (dBFS, as the transcription engine does; None: as recorded)."""
    recordings = maps_recordings(data_dir)[:limit]
    files, busy, audio_s = {}, 0.0, 0.0
    key_counts = np.zeros((3, 88), np.int64)
    errors, by_velocity = [], []
    for rec in tqdm(recordings, desc="evaluate", unit="file"):
        mel, duration_s = recording_mel(rec.audio_path, features, loudness_dbfs)
        start = time.perf_counter()
        est = transcribe(mel)
        busy += time.perf_counter() - start
        audio_s += duration_s
        ref = read_labels(rec.label_path)
        files[rec.audio_path.stem] = evaluate_performance(ref, est)
        key_counts += per_key_counts(ref, est)
        errors.append(error_types(ref.with_sustain(), est.with_sustain()))
        by_velocity.append(recall_by_velocity(ref, est))
    return {"mean": mean_scores(files), "files": files, "seconds": busy, "audio_seconds": audio_s,
            "per_key": key_counts.tolist(), **summarise_errors(errors, by_velocity)}


def _grid(low: float, high: float) -> tuple[float, ...]:
    return tuple(round(low + 0.05 * i, 2) for i in range(round((high - low) / 0.05) + 1))


# Steps of 0.05: on the 0.1 grid two models' best onset thresholds won by 0.001 (docs/experiments.md)
ONSET_GRID = _grid(0.3, 0.9)
FRAME_GRID = _grid(0.3, 0.7)


def tune_decoding(checkpoint: str | os.PathLike, excerpts: list, features: FeatureConfig = FeatureConfig(),
                  onset_grid=ONSET_GRID, frame_grid=FRAME_GRID) -> tuple[DecodeConfig, dict]:
    """Onset and frame thresholds maximising the mean of note F1 and note-with-offset F1 on synthetic
    validation excerpts (never on the real test recordings), each estimate lengthened by its own decoded
    pedal as `evaluate_on_recordings` does. Returns the config and the grid's scores."""
    model = load_model(checkpoint)
    cached = [(excerpt_reference(ex, features.frame_rate).with_sustain(), probabilities(model, ex.mel))
              for ex in excerpts]
    pedals = [tuple(decode_pedals(probs["pedal_frame"], features.frame_rate, DecodeConfig())) for _, probs in cached]
    grid = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns on empty note lists, which score 0 here
        for onset_t in onset_grid:
            for frame_t in frame_grid:
                decode = DecodeConfig(onset_threshold=onset_t, frame_threshold=frame_t)
                files = {}
                for i, (ref, probs) in enumerate(cached):
                    notes = decode_notes(probs["onset"], probs["frame"], probs["velocity"], features.frame_rate, decode)
                    # note metrics only: the objective needs nothing else, and frame metrics take 95% of the time
                    files[str(i)] = note_metrics(ref, Performance(tuple(notes), pedals[i]).with_sustain())
                mean = mean_scores(files)
                grid[(onset_t, frame_t)] = (mean["note/f1"] + mean["note_offset/f1"]) / 2
    best = max(grid, key=grid.get)
    return DecodeConfig(onset_threshold=best[0], frame_threshold=best[1]), {f"{k[0]}/{k[1]}": v for k, v in grid.items()}


F1_COLUMNS = ("frame", "note", "note_offset", "note_offset_velocity", "pedal")


def loss_curves_png(run_dirs: list[Path], path: Path) -> None:
    """Total training loss (smoothed) and validation note F1 against step, one line per run."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_f1) = plt.subplots(1, 2, figsize=(11, 4))
    for run in run_dirs:
        totals: dict[int, float] = {}
        f1: dict[int, float] = {}
        with open(run / "log.csv") as f:
            for row in csv.DictReader(f):
                step, name, value = int(row["step"]), row["name"], float(row["value"])
                if name.startswith("loss/"):
                    totals[step] = totals.get(step, 0.0) + value
                elif name == "validation/note/f1":
                    f1[step] = value
        steps = np.array(sorted(totals))
        if steps.size:
            values = np.array([totals[s] for s in steps])
            width = max(1, len(values) // 100)
            smooth = np.convolve(values, np.ones(width) / width, mode="valid")
            ax_loss.plot(steps[width - 1:], smooth, label=run.name)
        if f1:
            ax_f1.plot(sorted(f1), [f1[s] for s in sorted(f1)], marker="o", label=run.name)
    ax_loss.set(xlabel="step", ylabel="training loss (sum of heads)", yscale="log")
    ax_f1.set(xlabel="step", ylabel="validation note F1 (synthetic)")
    for ax in (ax_loss, ax_f1):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def per_key_png(counts: np.ndarray, path: Path, title: str) -> None:
    """Stacked TP / FP / FN note onsets per key."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = np.arange(21, 109)
    fig, ax = plt.subplots(figsize=(11, 3.5))
    ax.bar(keys, counts[0], label="true positive", color="tab:green")
    ax.bar(keys, counts[1], bottom=counts[0], label="false positive", color="tab:orange")
    ax.bar(keys, counts[2], bottom=counts[0] + counts[1], label="false negative", color="tab:red")
    ax.set(xlabel="MIDI pitch", ylabel="notes", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _error_table(entries: dict, dataset: str) -> list[str]:
    lines = ["| model | " + " | ".join(ERROR_TYPES).replace("_", " ") + " | onset lag ms (quartiles) |",
             "|---|" + "---|" * (len(ERROR_TYPES) + 1)]
    for name, e in entries.items():
        counts, timing = e[dataset]["error_types"], e[dataset]["onset_timing"]
        lag = "-" if timing["median_s"] is None else (
            f"{1000 * timing['median_s']:.0f} ({1000 * timing['iqr_s'][0]:.0f} to {1000 * timing['iqr_s'][1]:.0f})")
        lines.append(f"| {name} | " + " | ".join(str(counts[t]) for t in ERROR_TYPES) + f" | {lag} |")
    return lines


def _velocity_table(entries: dict, dataset: str) -> list[str]:
    bands = [f"{lo}-{hi - 1}" for lo, hi in zip(VELOCITY_BANDS[:-1], VELOCITY_BANDS[1:])]
    total = np.asarray(next(iter(entries.values()))[dataset]["recall_by_velocity"])[1]
    lines = ["| model | " + " | ".join(f"{b} ({t:,} notes)" for b, t in zip(bands, total)) + " |",
             "|---|" + "---|" * len(bands)]
    for name, e in entries.items():
        found, n = np.asarray(e[dataset]["recall_by_velocity"])
        lines.append(f"| {name} | " + " | ".join(f"{f / t:.3f}" if t else "-" for f, t in zip(found, n)) + " |")
    return lines


def _row(name: str, mean: dict) -> str:
    cells = [mean.get(f"{m}/f1") for m in F1_COLUMNS]
    return f"| {name} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |"


def _model_file_entry(path: Path) -> tuple[str, dict, Callable]:
    """An exported model (.onnx with its sidecar) as a report row: (its model id, what the sidecar says of
    its size and training, a transcriber through onnxruntime with its own decoding settings)."""
    from keyscribe.inference import read_info
    from keyscribe.model import ModelConfig, Transcriber, count_parameters

    info = read_info(path)
    if not info.model_config:
        raise KeyscribeError(f"{path}: no model description beside it ({path.with_suffix('.json').name})")
    entry = {"checkpoint": str(path), "variant": info.model_config["variant"],
             "parameters": count_parameters(Transcriber(ModelConfig.from_dict(info.model_config))),
             "steps": info.metrics.get("training_steps", 0), "train_hours": info.metrics.get("training_hours")}
    return info.model_id, entry, model_file_transcriber(path)


def _run_folder_entry(run: Path) -> tuple[str, dict, Callable]:
    """A training run folder as a report row: (its name, its size and training from the checkpoint, a torch
    transcriber of its best (else latest) checkpoint with the run's decoding settings)."""
    import torch

    from keyscribe.inference import checkpoint_info
    from keyscribe.model import count_parameters

    checkpoint = run / "best.pt" if (run / "best.pt").exists() else run / "latest.pt"
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = model_from_payload(payload)
    info = checkpoint_info(checkpoint, payload)
    entry = {"checkpoint": str(checkpoint), "variant": info.model_config["variant"],
             "parameters": count_parameters(model), "steps": info.metrics.get("training_steps", 0),
             "train_hours": info.metrics.get("training_hours")}
    return run.name, entry, model_transcriber(model, run_decode_config(checkpoint))


def build_report(runs: list[str | os.PathLike], dataset: str | os.PathLike, out_md: str | os.PathLike,
                 maps_dir: str | os.PathLike = "../shared/data/maps/ENSTDkAm", validation_excerpts: int = 60,
                 baseline: bool = True) -> dict:
    """Evaluate every run's best checkpoint (a run folder) or exported model (an .onnx file), and the
    rule-based baseline, on ENSTDkAm and on the synthetic validation set; write `out_md` with tables and PNGs beside it in `<stem>/`."""
    import json
    import platform

    import torch

    from keyscribe.baseline import transcribe_mel
    from keyscribe.data.shards import load_split

    out_md = Path(out_md)
    assets = out_md.parent / out_md.stem
    assets.mkdir(parents=True, exist_ok=True)
    validation = load_split(dataset, "validation")[:validation_excerpts]
    entries = {}
    for run in map(Path, runs):
        if run.suffix == ".onnx":
            name, entry, transcribe = _model_file_entry(run)
        else:
            name, entry, transcribe = _run_folder_entry(run)
        entries[name] = entry | {"maps": evaluate_on_recordings(transcribe, maps_dir),
                                 "validation": evaluate_on_excerpts(transcribe, validation, error_kinds=True)}
    if baseline:
        entries["rule-based (NMF)"] = {"variant": "nmf", "parameters": 0, "steps": 0, "train_hours": 0.0,
                                       "maps": evaluate_on_recordings(transcribe_mel, maps_dir),
                                       "validation": evaluate_on_excerpts(transcribe_mel, validation, error_kinds=True)}
    loss_curves_png([Path(r) for r in runs if Path(r).is_dir()], assets / "loss_curves.png")
    main = next(iter(entries))
    per_key_png(np.array(entries[main]["maps"]["per_key"]), assets / "per_key.png", f"{main} on ENSTDkAm: note onsets per key")
    lines = ["# Results", "",
             "Generated by `keyscribe report` (see README); every number below comes from that command.", "",
             f"Hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU; "
             f"torch {torch.__version__}.", "",
             "## Real recordings: MAPS ENSTDkAm (23 pieces, Disklavier, ambient microphones)", "",
             "Mean F1 over files; references pedal-extended; MAPS's own labels (poor offsets, see README).", "",
             "| model | frame | note | note+offset | note+offset+velocity | pedal | parameters | steps | training h | x real time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in entries.items():
        speed = e["maps"]["audio_seconds"] / max(e["maps"]["seconds"], 1e-9)
        hours = "-" if e["train_hours"] is None else f"{e['train_hours']:.2f}"
        lines.append(_row(name, e["maps"]["mean"]) + f" {e['parameters']:,} | {e['steps']} | {hours} | {speed:.0f} |")
    lines += ["", "steps: optimiser steps (batch size and crop length are in each run's config.json); runs with the "
              "same data, settings and number of steps form an equal-budget comparison of the variants. training h: "
              "wall time, on a machine shared with other jobs. x real time: whole-file inference, one process (torch for a "
              "run folder, onnxruntime for an exported model)."]
    lines += ["", "### Note-onset errors by kind (ENSTDkAm, all files)", "", *_error_table(entries, "maps"), "",
              "missed: reference notes without an estimate within 50 ms; mistimed: of those, the ones with an "
              "estimate of the same key within 150 ms. Other extra notes: octave (a reference onset an octave "
              "away), repeat (the key is still held in the reference), other. Onset lag: estimate minus "
              "reference over notes matched within 150 ms, median and quartiles; the recordings' sound follows "
              "MAPS's MIDI times by a Disklavier's action delay, so every transcriber shows a positive lag here."]
    lines += ["", "### Note-onset recall by reference velocity (ENSTDkAm)", "", *_velocity_table(entries, "maps")]
    lines += ["", f"## Synthetic validation ({len(validation)} excerpts of held-out pieces, rendered and augmented)", "",
              "| model | frame | note | note+offset | note+offset+velocity | pedal |", "|---|---|---|---|---|---|"]
    lines += [_row(name, e["validation"]["mean"]) for name, e in entries.items()]
    lines += ["", "### Note-onset errors by kind (synthetic validation)", "", *_error_table(entries, "validation")]
    lines += ["", "### Note-onset recall by reference velocity (synthetic validation)", "",
              *_velocity_table(entries, "validation")]
    lines += ["", f"## Per file: {main} on ENSTDkAm", "", "| file | frame | note | note+offset | note+offset+velocity | pedal |",
              "|---|---|---|---|---|---|"]
    lines += [_row(stem, scores) for stem, scores in entries[main]["maps"]["files"].items()]
    lines += ["", f"![loss curves]({assets.name}/loss_curves.png)", "", f"![per-key errors]({assets.name}/per_key.png)", ""]
    out_md.write_text("\n".join(lines))
    (assets / "results.json").write_text(json.dumps(entries, indent=1) + "\n")
    return entries
