"""Scoring trained models (and the rule-based baseline) on real recordings, for comparing runs.

The ENSTDkAm recordings are for evaluation only: nothing here feeds back into training or decoding
thresholds.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from keyscribe.audio import load_audio
from keyscribe.data.maps import maps_recordings
from keyscribe.decode import DecodeConfig, decode_notes, decode_pedals
from keyscribe.evaluate import evaluate_performance, mean_scores
from keyscribe.features import FeatureConfig, log_mel
from keyscribe.midi import read_labels
from keyscribe.notes import Performance

Transcribe = Callable[["object"], Performance]  # (n_frames, n_mels) log-mel -> Performance


def model_transcriber(checkpoint: str | os.PathLike, decode: DecodeConfig | None = None,
                      features: FeatureConfig = FeatureConfig()) -> Callable:
    """A function log-mel -> Performance using a training checkpoint (torch, whole file at once)."""
    from keyscribe.train import load_model, probabilities, run_decode_config
    model = load_model(checkpoint)
    decode = decode or run_decode_config(checkpoint)

    def transcribe(mel) -> Performance:
        probs = probabilities(model, mel)
        notes = decode_notes(probs["onset"], probs["frame"], probs["velocity"], features.frame_rate, decode)
        return Performance(tuple(notes), tuple(decode_pedals(probs["pedal_frame"], features.frame_rate, decode)))

    return transcribe


def evaluate_on_recordings(transcribe: Callable, data_dir: str | os.PathLike, *, limit: int | None = None,
                           features: FeatureConfig = FeatureConfig()) -> dict:
    """`{"mean", "files", "seconds", "audio_seconds"}`: every recording with a tsv in `data_dir`,
    transcribed from its log-mel and scored against its pedal-extended labels."""
    recordings = maps_recordings(data_dir)[:limit]
    files, busy, audio_s = {}, 0.0, 0.0
    for rec in tqdm(recordings, desc="evaluate", unit="file"):
        audio = load_audio(rec.audio_path, sample_rate=features.sample_rate)
        start = time.perf_counter()
        est = transcribe(log_mel(audio, features))
        busy += time.perf_counter() - start
        audio_s += audio.size / features.sample_rate
        files[rec.audio_path.stem] = evaluate_performance(read_labels(rec.label_path), est)
    return {"mean": mean_scores(files), "files": files, "seconds": busy, "audio_seconds": audio_s}


def evaluate_on_excerpts(transcribe: Callable, excerpts: list, features: FeatureConfig = FeatureConfig()) -> dict:
    """`{"mean", "files"}` over rendered validation excerpts (references from their label rolls)."""
    from keyscribe.train import excerpt_reference
    files = {ex.id: evaluate_performance(excerpt_reference(ex, features.frame_rate), transcribe(np.asarray(ex.mel, np.float32)),
                                         pedal_extend=False) for ex in tqdm(excerpts, desc="validation", unit="excerpt")}
    return {"mean": mean_scores(files), "files": files}


def tune_decoding(checkpoint: str | os.PathLike, excerpts: list, features: FeatureConfig = FeatureConfig(),
                  onset_grid=(0.3, 0.4, 0.5, 0.6, 0.7), frame_grid=(0.3, 0.4, 0.5, 0.6)) -> tuple[DecodeConfig, dict]:
    """Onset and frame thresholds maximising the mean of note F1 and note-with-offset F1 on synthetic
    validation excerpts (never on the real test recordings). Returns the config and the grid's scores."""
    from keyscribe.train import excerpt_reference, load_model, probabilities
    model = load_model(checkpoint)
    cached = [(excerpt_reference(ex, features.frame_rate), probabilities(model, ex.mel)) for ex in excerpts]
    grid = {}
    for onset_t in onset_grid:
        for frame_t in frame_grid:
            decode = DecodeConfig(onset_threshold=onset_t, frame_threshold=frame_t)
            files = {}
            for i, (ref, probs) in enumerate(cached):
                notes = decode_notes(probs["onset"], probs["frame"], probs["velocity"], features.frame_rate, decode)
                files[str(i)] = evaluate_performance(ref, Performance(tuple(notes)), pedal_extend=False)
            mean = mean_scores(files)
            grid[(onset_t, frame_t)] = (mean["note/f1"] + mean["note_offset/f1"]) / 2
    best = max(grid, key=grid.get)
    return DecodeConfig(onset_threshold=best[0], frame_threshold=best[1]), {f"{k[0]}/{k[1]}": v for k, v in grid.items()}


def per_key_counts(ref: Performance, est: Performance, onset_tolerance_s: float = 0.05) -> np.ndarray:
    """(3, 88) true positive, false positive and false negative note onsets per key."""
    import mir_eval
    from keyscribe.notes import MIN_PITCH, N_KEYS, notes_to_arrays
    ref_iv, ref_p, _ = notes_to_arrays(ref.notes)
    est_iv, est_p, _ = notes_to_arrays(est.notes)
    hz = lambda p: 440.0 * 2.0 ** ((p - 69.0) / 12.0)  # noqa: E731
    matched = mir_eval.transcription.match_notes(ref_iv, hz(ref_p), est_iv, hz(est_p), onset_tolerance=onset_tolerance_s,
                                                 offset_ratio=None) if len(ref_p) and len(est_p) else []
    counts = np.zeros((3, N_KEYS), np.int64)
    ref_hit = np.zeros(len(ref_p), bool)
    est_hit = np.zeros(len(est_p), bool)
    for i, j in matched:
        ref_hit[i] = est_hit[j] = True
    np.add.at(counts[0], ref_p[ref_hit] - MIN_PITCH, 1)
    np.add.at(counts[1], est_p[~est_hit] - MIN_PITCH, 1)
    np.add.at(counts[2], ref_p[~ref_hit] - MIN_PITCH, 1)
    return counts
