"""The rule-based baseline: NMF with fixed per-key spectral templates, then onset peak-picking.

Nothing is learned from labelled performances: each key's template is the mean mel spectrum of that
key played alone on the rendering pianos. Activations come from KL-divergence NMF with the templates
fixed (multiplicative updates); a note starts where a key's activation jumps, and ends when it falls
below a fraction of its peak.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from keyscribe.features import FeatureConfig, log_mel
from keyscribe.notes import MIN_PITCH, N_KEYS, Note, Performance

TEMPLATE_PIANOS = ("fluidr3-grand", "musescore-grand", "salamander")


@dataclass(frozen=True)
class BaselineConfig:
    iterations: int = 30
    onset_rise: float = 0.05  # minimum jump of a key's activation between frames, relative to the file's maximum
    min_level: float = 0.04  # minimum activation at the onset peak, relative to the file's maximum
    release_ratio: float = 0.2  # a note ends when its activation falls below this fraction of its peak
    velocity: int = 64


@lru_cache(maxsize=2)
def key_templates(features: FeatureConfig = FeatureConfig(), pianos: tuple[str, ...] = TEMPLATE_PIANOS) -> np.ndarray:
    """(n_mels, 88) non-negative templates, each column summing to 1: the mean mel magnitude of the first
    300 ms of each key played alone (velocity 80), averaged over the installed template pianos."""
    from keyscribe.data.render import available_pianos, render
    installed = [p for p in pianos if p in available_pianos()] or available_pianos()[:1]
    templates = np.zeros((features.n_mels, N_KEYS))
    frames = slice(int(0.1 * features.frame_rate), int(0.4 * features.frame_rate))
    for piano in installed:
        for key in range(N_KEYS):
            audio = render(Performance((Note(0.1, 1.1, key + MIN_PITCH, 80),)), piano, features.sample_rate)
            spectrum = np.exp(log_mel(audio, features))[frames].mean(axis=0)
            templates[:, key] += spectrum / spectrum.sum()
    return (templates / len(installed)).astype(np.float32)


def nmf_activations(magnitude: np.ndarray, templates: np.ndarray, iterations: int) -> np.ndarray:
    """(88, n_frames) activations H >= 0 minimising KL(V || W H) with W fixed; V is (n_mels, n_frames)."""
    eps = 1e-9
    h = np.full((templates.shape[1], magnitude.shape[1]), magnitude.mean() + eps, dtype=np.float32)
    column_sums = templates.sum(axis=0)[:, None] + eps
    for _ in range(iterations):
        h *= (templates.T @ (magnitude / (templates @ h + eps))) / column_sums
    return h


def transcribe_mel(mel: np.ndarray, config: BaselineConfig = BaselineConfig(),
                   features: FeatureConfig = FeatureConfig()) -> Performance:
    """(n_frames, n_mels) log-mel -> notes by NMF and peak-picking."""
    magnitude = np.maximum(np.exp(mel.T) - features.log_floor, 0.0).astype(np.float32)
    h = nmf_activations(magnitude, key_templates(features), config.iterations)
    h = h / (h.max() + 1e-9)
    rise = np.diff(h, axis=1, prepend=0.0)
    notes = []
    for key in range(N_KEYS):
        candidates = np.flatnonzero((rise[key] >= config.onset_rise))
        end = -1
        for t in candidates:
            if t < end:
                continue
            peak_t = t + int(np.argmax(h[key, t:t + 4]))
            peak = h[key, peak_t]
            if peak < config.min_level:
                continue
            below = np.flatnonzero(h[key, peak_t:] < config.release_ratio * peak)
            end = peak_t + (below[0] if below.size else h.shape[1] - peak_t)
            notes.append(Note(t / features.frame_rate, max(end, t + 1) / features.frame_rate, key + MIN_PITCH, config.velocity))
    return Performance(tuple(notes))


def transcribe_audio(audio: np.ndarray, config: BaselineConfig = BaselineConfig(),
                     features: FeatureConfig = FeatureConfig()) -> Performance:
    return transcribe_mel(log_mel(audio, features), config, features)
