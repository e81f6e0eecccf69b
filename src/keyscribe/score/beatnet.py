"""A small learned beat / downbeat tracker on performed notes (numpy inference; torch only to train).

Input: a 50 fps piano-roll of note onsets (88 keys, velocity), onset chroma, the number of held keys and
the sustain pedal (102 channels). Network: a non-causal temporal convolutional network (1x1 input layer,
10 residual blocks of dilated kernel-5 convolutions with dilations 1..512, 32 channels, ~80 s receptive
field), two sigmoid outputs per frame: beat and downbeat. Trained by `keyscribe.score.train_beats` on the
ASAP training split (pieces held out by `asap.split_of` are never seen). Weights: `beatnet.npz` here.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from keyscribe.notes import MIN_PITCH, N_KEYS, Performance

FPS = 50
N_IN = N_KEYS + 12 + 2
CHANNELS = 32
KERNEL = 5
DILATIONS = tuple(2 ** i for i in range(10))
WEIGHTS = Path(__file__).with_name("beatnet.npz")


def features(onsets: np.ndarray, offsets: np.ndarray, pitches: np.ndarray, velocities: np.ndarray,
             pedals: np.ndarray | None = None, n_frames: int | None = None, fps: int = FPS) -> np.ndarray:
    """(N_IN, T) float32 input of the network from note arrays (seconds, MIDI pitch, velocity)."""
    end = float(np.max(offsets)) if len(offsets) else 0.0
    t = n_frames or int(end * fps) + 1
    x = np.zeros((N_IN, t), np.float32)
    if len(onsets) == 0:
        return x
    fi = np.clip(np.round(onsets * fps).astype(int), 0, t - 1)
    keys = np.clip(pitches - MIN_PITCH, 0, N_KEYS - 1)
    v = velocities.astype(np.float32) / 127.0
    np.maximum.at(x, (keys, fi), v)
    np.add.at(x, (N_KEYS + pitches % 12, fi), v)
    held = np.zeros(t + 1, np.float32)
    fo = np.clip(np.round(offsets * fps).astype(int), 0, t)
    np.add.at(held, fi, 1.0)
    np.add.at(held, fo, -1.0)
    x[N_KEYS + 12] = np.cumsum(held)[:t] / 10.0
    if pedals is not None and len(pedals):
        for a, b in pedals:
            x[N_KEYS + 13, int(a * fps):int(b * fps) + 1] = 1.0
    return x


def performance_features(perf: Performance, n_frames: int | None = None) -> np.ndarray:
    on = np.array([n.onset_s for n in perf.notes])
    off = np.array([n.offset_s for n in perf.notes])
    p = np.array([n.pitch for n in perf.notes])
    v = np.array([n.velocity for n in perf.notes])
    ped = np.array([[q.onset_s, q.offset_s] for q in perf.pedals]).reshape(-1, 2)
    return features(on, off, p, v, ped, n_frames)


# ----------------------------------------------------------------------------------------------- numpy net
def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, dilation: int = 1) -> np.ndarray:
    """'same' 1-D convolution: x (C_in, T), w (C_out, C_in, K), b (C_out,)."""
    c_out, _, k = w.shape
    pad = dilation * (k - 1) // 2
    xp = np.pad(x, ((0, 0), (pad, pad)))
    t = x.shape[1]
    y = np.repeat(b[:, None], t, axis=1).astype(np.float32)
    for j in range(k):
        y += w[:, :, j] @ xp[:, j * dilation:j * dilation + t]
    return y


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def forward(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """(2, T) beat and downbeat probabilities."""
    h = _elu(_conv(x, params["inp.weight"], params["inp.bias"]))
    for i, d in enumerate(DILATIONS):
        r = _elu(_conv(h, params[f"blocks.{i}.conv.weight"], params[f"blocks.{i}.conv.bias"], d))
        r = _conv(r, params[f"blocks.{i}.mix.weight"], params[f"blocks.{i}.mix.bias"])
        h = h + r
    y = _conv(h, params["out.weight"], params["out.bias"])
    return 1.0 / (1.0 + np.exp(-y))


@lru_cache(maxsize=2)
def _load(path: str) -> dict[str, np.ndarray] | None:
    p = Path(path)
    if not p.is_file():
        return None
    with np.load(p) as z:
        return {k: z[k].astype(np.float32) for k in z.files}


def load_default() -> dict[str, np.ndarray] | None:
    return _load(str(WEIGHTS))


def activations(params: dict[str, np.ndarray], perf: Performance) -> np.ndarray:
    x = performance_features(perf)
    return forward(params, x)


def estimate_metre_model(params: dict[str, np.ndarray], perf: Performance):
    from keyscribe.score import beats as B

    notes = perf.notes
    act = activations(params, perf)
    beat_act = np.maximum(act[0], act[1])
    bt = B.dbn_beats(beat_act, FPS, observation_lambda=8, power=2.0)
    bt = B._trim_to_notes(bt, notes, 0.0)
    bt = B.snap_to_onsets(bt, notes, 0.06)
    if len(bt) < 2:
        return B.estimate_metre_rule(perf)
    db = B.peak_near(act[1], bt, FPS)
    ev = (db - db.mean()) / (db.std() + 1e-9)
    return B._finish(notes, bt, ev, db_prob=db)
