"""Scoring trained models (and the rule-based baseline) on real recordings, for comparing runs.

The ENSTDkAm recordings are for evaluation only: nothing here feeds back into training or decoding
thresholds.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

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
