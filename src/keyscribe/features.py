"""Log-mel spectrogram: the one feature computation used by training data and inference alike.

Pure numpy, so inference needs no torch. Audio is processed in blocks of frames, so memory stays
bounded for long recordings; the output is (n_frames, n_mels) float32, frame i centred at
i * hop_length / sample_rate seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from keyscribe.notes import MIN_PITCH, N_KEYS

BLOCK_FRAMES = 4096  # frames per FFT block: bounds memory at ~BLOCK_FRAMES * n_fft floats


@dataclass(frozen=True)
class FeatureConfig:
    """Spectrogram settings; `frame_rate` is the model's frame rate in frames per second."""

    sample_rate: int = 16000
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 229
    fmin_hz: float = 30.0
    fmax_hz: float = 8000.0
    log_floor: float = 1e-5

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Frames a centred STFT gives for `n_samples` samples."""
        return 1 + n_samples // self.hop_length


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    hz = np.asarray(hz, dtype=float)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    linear = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-9) / min_log_hz) / logstep, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    mel = np.asarray(mel, dtype=float)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@lru_cache(maxsize=8)
def mel_filterbank(config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters with Slaney area normalisation."""
    fft_hz = np.linspace(0, config.sample_rate / 2, config.n_fft // 2 + 1)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(config.fmin_hz), hz_to_mel(config.fmax_hz), config.n_mels + 2))
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz[None] - lower) / (centre - lower)
    falling = (upper - fft_hz[None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))
    return weights.T.astype(np.float32)


def log_mel(audio: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """(n_frames, n_mels) float32 log-magnitude mel spectrogram of mono `audio` at `config.sample_rate`."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"log_mel takes mono audio (1-D), got shape {audio.shape}")
    pad = config.n_fft // 2
    padded = np.pad(audio, pad, mode="reflect" if audio.size > pad else "constant")
    n_frames = config.n_frames(audio.size)
    frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft)[:: config.hop_length][:n_frames]
    window = np.hanning(config.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann
    fbank = mel_filterbank(config)
    out = np.empty((n_frames, config.n_mels), dtype=np.float32)
    for start in range(0, n_frames, BLOCK_FRAMES):
        block = frames[start : start + BLOCK_FRAMES] * window
        magnitude = np.abs(np.fft.rfft(block, axis=1)).astype(np.float32)
        out[start : start + BLOCK_FRAMES] = np.log(np.maximum(magnitude @ fbank, config.log_floor))
    return out


def key_grid_hz(bins_per_semitone: int) -> np.ndarray:
    """(N_KEYS * bins_per_semitone,) frequencies in Hz of a log-frequency grid whose bins are centred on
    the piano keys: `bins_per_semitone` bins per key, the key's own frequency in the middle one."""
    offsets = (np.arange(bins_per_semitone) - (bins_per_semitone - 1) / 2) / bins_per_semitone
    pitches = ((MIN_PITCH + np.arange(N_KEYS))[:, None] + offsets[None]).ravel()
    return 440.0 * 2.0 ** ((pitches - 69) / 12)


@lru_cache(maxsize=8)
def harmonic_stack(harmonics: tuple[float, ...], bins_per_semitone: int,
                   config: FeatureConfig = FeatureConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(weights (n_mels, H * F), offset (H * F,)) with `log_mel @ weights + offset` = (T, H, F) read flat:
    for each harmonic h and each frequency f of `key_grid_hz`, the log-mel spectrum at h * f, linearly
    interpolated between mel-band centres. A key's partials then sit at one grid position across the H
    channels, so a small convolution sees a note's fundamental and its harmonics together (Basic Pitch's
    harmonic stacking, done here on the log-mel the models already take). Above `fmax_hz` the value is
    the log floor; below the first band centre, the first band."""
    centres = np.linspace(hz_to_mel(config.fmin_hz), hz_to_mel(config.fmax_hz), config.n_mels + 2)[1:-1]
    grid = key_grid_hz(bins_per_semitone)
    weights = np.zeros((config.n_mels, len(harmonics), grid.size), np.float32)
    offset = np.zeros((len(harmonics), grid.size), np.float32)
    for h, harmonic in enumerate(harmonics):
        target = harmonic * grid
        position = np.clip((hz_to_mel(target) - centres[0]) / (centres[1] - centres[0]), 0, config.n_mels - 1)
        lower = np.minimum(np.floor(position).astype(int), config.n_mels - 2)
        upper_share = position - lower
        inside = target <= config.fmax_hz
        columns = np.arange(grid.size)
        weights[lower[inside], h, columns[inside]] = 1 - upper_share[inside]
        weights[lower[inside] + 1, h, columns[inside]] = upper_share[inside]
        offset[h, ~inside] = np.log(config.log_floor)
    return weights.reshape(config.n_mels, -1), offset.ravel()
