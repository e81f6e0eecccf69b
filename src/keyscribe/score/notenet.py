"""A beat / downbeat tracker that reads the performed notes as a sequence (onnxruntime inference).

The frame-based network (`beatnet.py`) sees ~80 s of a piano roll but still fires on every eighth in
busy textures, so its metrical level follows the texture rather than the notation. This one reads one
step per note (pitch, chroma, velocity, duration and the log time to the neighbouring onsets), through
convolutions over neighbouring notes and a two-layer bidirectional GRU over the whole piece, and gives
each note the probability that its onset is on a beat and on a downbeat (the PM2S idea: Liu et al., 2022).
The beat and downbeat probabilities become two 50 fps activations (frames without an onset lean to "no
beat") that a bar-pointer HMM over beats and downbeats decodes together (`beats.dbn_bars`, as madmom's
downbeat tracker), once for each bar length; the most likely bar length wins.

Two trainings of the same network by `keyscribe.score.train_notenet` on the ASAP training split give
the two weight files here. `notenet-beats.onnx` was trained on notes with transcription-like errors
(dropped, added and jittered notes, tempo drift) and gives the beats; `notenet.onnx` was trained on the
clean performance MIDI and gives the downbeats. Chosen on the validation pieces, from MIDI and from
rendered-and-transcribed audio (mean of beat and downbeat F1: 0.677 / 0.561 with the clean network
alone, 0.670 / 0.587 with the augmented one alone, 0.696 / 0.598 with both).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from keyscribe.notes import Performance
from keyscribe.score.beats import FPS
N_FEATURES = 18
WEIGHTS = Path(__file__).with_name("notenet.onnx")  # trained on clean MIDI: its downbeats are used
BEAT_WEIGHTS = Path(__file__).with_name("notenet-beats.onnx")  # trained with transcription errors: beats
# The HMM's settings, chosen on the validation pieces. Beat / downbeat F1 over every performance of them
# (55, `benchmarks/beat_hmm.py`) for transition lambda (how cheap a tempo change is; madmom's default is
# 100) x observation lambda (the beat's share of a period): 100 x 16 (the old setting) 0.637 / 0.492,
# 100 x 32 0.566 / 0.436, 10 x 16 0.692 / 0.559, 10 x 32 0.700 / 0.551, 15 x 16 0.691 / 0.561, 15 x 32
# 0.713 / 0.570, 20 x 16 0.676 / 0.552, 20 x 32 0.708 / 0.558, 30 x 16 0.658 / 0.538, 30 x 32 0.693 / 0.553:
# a pianist's tempo moves more from beat to beat than a band's. Per piece (`keyscribe score-eval --split
# validation --max-per-piece 4`) 15, 30, 40 and 50 (x 32) were level on beats and downbeats (0.787-0.802 /
# 0.601-0.612), and 30 wrote the most onsets in the right place per inter-onset interval (0.480; 15: 0.455;
# the old setting 0.409), so 30; from transcribed audio (`--max-per-piece 1 --from-audio salamander`) it
# led too (0.474 against 0.387). Time signatures got worse on these pieces (docs/score/README.md).
# Observation 48 scored 0.740 / 0.561 with transition 15, but from 40 up a frame without an onset is
# nearly neutral, and a strictly timed waltz (the round-trip test) is then tracked at the 300 BPM ceiling.
TRANSITION_LAMBDA = 30.0
OBSERVATION_LAMBDA = 32
# A frame with no onset leans towards "no beat here" (1 / 64 rather than the neutral 1 / lambda), and a
# note's probability sits on its own frame only. Chosen on the validation pieces with the step-2,000
# network: beat F1 0.669 (neutral, spread over +-2 frames) -> 0.739 (own frame) -> 0.752 (and 1 / 64).
NO_ONSET_ACTIVATION = 1.0 / 64
# downbeat probability of a frame with no onset (validation downbeat F1 0.563 / 0.584 / 0.570 for
# 0.1 / 0.25 / 0.4 with the step-2,000 network and the old two-stage decoder)
DOWNBEAT_PRIOR = 0.25
# Beats and downbeats are decoded together (`beats.dbn_bars`), the downbeat evidence weighted x1.5. On the
# validation pieces (`benchmarks/downbeat_weight.py`, means over pieces) beat / downbeat F1, time signature
# and notation onsets per interval were, from MIDI (4 performances a piece): 0.801 / 0.601 / 0.365 / 0.480
# with the earlier decoder (beats first, then bars on them; commit 6df8c63), jointly at weight 1: 0.801 /
# 0.596 / 0.438 / 0.459, 1.5: 0.798 / 0.602 / 0.500 / 0.456, 2: 0.795 / 0.661 / 0.516 / 0.452; from audio
# (`--from-audio salamander`, one a piece) 0.786 / 0.534 / 0.438 / 0.474 before, at 1: 0.777 / 0.565 / 0.438 /
# 0.471, 1.5: 0.778 / 0.572 / 0.438 / 0.472, 2: 0.772 / 0.563 / 0.438 / 0.476. At 2 a strictly timed 72 BPM
# march is tracked at 144 (the downbeat evidence outweighs the beats).
DOWNBEAT_WEIGHT = 1.5
BEATS_PER_BAR = (2, 3, 4)


def note_features(onsets: np.ndarray, offsets: np.ndarray, pitches: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """(N, N_FEATURES) float32, one row per note in the given order (sorted by onset; seconds, MIDI pitch)."""
    n = len(onsets)
    x = np.zeros((n, N_FEATURES), np.float32)
    if n == 0:
        return x
    onsets = np.asarray(onsets, float)
    before = np.diff(onsets, prepend=onsets[0] - 1.0)
    after = np.diff(onsets, append=onsets[-1] + 1.0)
    x[:, 0] = (np.asarray(pitches) - 60) / 24.0
    x[np.arange(n), 1 + np.asarray(pitches) % 12] = 1.0
    x[:, 13] = np.asarray(velocities) / 127.0
    x[:, 14] = np.log(np.maximum(np.asarray(offsets) - onsets, 0.01)) / 2.0
    x[:, 15] = np.log(np.maximum(before, 0.01)) / 2.0
    x[:, 16] = np.log(np.maximum(after, 0.01)) / 2.0
    x[:, 17] = before < 0.035  # sounds together with the previous note (a chord)
    return x


def sorted_notes(perf: Performance):
    return sorted(perf.notes, key=lambda n: (n.onset_s, n.pitch))


def performance_features(notes) -> np.ndarray:
    return note_features(np.array([n.onset_s for n in notes]), np.array([n.offset_s for n in notes]),
                         np.array([n.pitch for n in notes]), np.array([n.velocity for n in notes]))


@lru_cache(maxsize=2)
def _session(path: str):
    if not Path(path).is_file():
        return None
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def load_default() -> tuple | None:
    """(beat session, downbeat session) of the shipped networks (None when a weight file is missing)."""
    beat, downbeat = _session(str(BEAT_WEIGHTS)), _session(str(WEIGHTS))
    return None if beat is None or downbeat is None else (beat, downbeat)


def note_probabilities(session, notes) -> np.ndarray:
    """(2, N): per note, the probability that its onset is on a beat and on a downbeat."""
    x = performance_features(notes)[None]
    (logits,) = session.run(None, {"notes": x})
    return 1.0 / (1.0 + np.exp(-logits[0].T))


def both_probabilities(session, notes, downbeat_session=None) -> np.ndarray:
    """(2, N): beat probabilities from `session`, downbeat probabilities from `downbeat_session` (default the
    same network)."""
    probs = note_probabilities(session, notes)
    if downbeat_session is not None:
        probs[1] = note_probabilities(downbeat_session, notes)[1]
    return probs


def n_frames_of(notes) -> int:
    """Frames at FPS covering every note to its release."""
    return int(max(n.offset_s for n in notes) * FPS) + 2


def onset_activation(notes, probs: np.ndarray, n_frames: int, elsewhere: float) -> np.ndarray:
    """(n_frames,) activation at FPS: an onset frame takes the highest of its notes' `probs`, every other
    frame `elsewhere`."""
    act = np.full(n_frames, elsewhere)
    onset_frames = np.clip(np.round(np.array([n.onset_s for n in notes]) * FPS).astype(int), 0, n_frames - 1)
    act[onset_frames] = 0.0
    np.maximum.at(act, onset_frames, probs)
    return act


def tracked_beats(session, notes, downbeat_session=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(beats (s), per-frame beat activation, (2, N) note probabilities) of sorted `notes`: the HMM's beats
    on the network's activation, trimmed to the notes and snapped to onsets."""
    from keyscribe.score import beats as B

    probs = both_probabilities(session, notes, downbeat_session)
    act = onset_activation(notes, probs[0], n_frames_of(notes), NO_ONSET_ACTIVATION)
    bt = B.dbn_beats(act, FPS, transition_lambda=TRANSITION_LAMBDA, observation_lambda=OBSERVATION_LAMBDA)
    return B.snap_to_onsets(B._trim_to_notes(bt, notes, 0.0), notes, 0.06), act, probs


def bar_activations(session, notes, downbeat_session=None) -> tuple[np.ndarray, np.ndarray]:
    """(beat, downbeat) activations at FPS of sorted `notes` for the bar-pointer HMM (`activations_of` the
    networks' probabilities)."""
    return activations_of(notes, both_probabilities(session, notes, downbeat_session))


def activations_of(notes, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(beat, downbeat) activations at FPS from (2, N) note probabilities: the probabilities on onset frames,
    a low beat rate and the downbeat prior elsewhere."""
    n_frames = n_frames_of(notes)
    return (onset_activation(notes, probs[0], n_frames, NO_ONSET_ACTIVATION),
            onset_activation(notes, probs[1], n_frames, DOWNBEAT_PRIOR))


def decode_bars(notes, beat_act: np.ndarray, downbeat_act: np.ndarray, beats_per_bar: int,
                downbeat_reference: float = 0.5) -> tuple[np.ndarray, np.ndarray, float]:
    """(beats (s), downbeat flag per beat, log-likelihood) of bars of `beats_per_bar` beats, with the beats
    trimmed to the notes and snapped to onsets."""
    from keyscribe.score import beats as B

    bt, is_downbeat, ll = B.dbn_bars(beat_act, downbeat_act, beats_per_bar, FPS,
                                     transition_lambda=TRANSITION_LAMBDA, observation_lambda=OBSERVATION_LAMBDA,
                                     downbeat_weight=DOWNBEAT_WEIGHT, downbeat_reference=downbeat_reference)
    kept = np.isin(bt, B._trim_to_notes(bt, notes, 0.0))
    return B.snap_to_onsets(bt[kept], notes, 0.06), is_downbeat[kept], ll


def estimate_metre_notes(session, perf: Performance, downbeat_session=None):
    """Beats, downbeats and metre from the note network's probabilities (beats from `session`, downbeats from
    `downbeat_session`, default the same network), decoded together by the bar-pointer HMM for 2, 3 and 4
    beats per bar; the most likely bar length wins."""
    from keyscribe.score import beats as B

    notes = sorted_notes(perf)
    beat_act, downbeat_act = bar_activations(session, notes, downbeat_session)
    decoded = [decode_bars(notes, beat_act, downbeat_act, m) for m in BEATS_PER_BAR]
    best = int(np.argmax([ll for _, _, ll in decoded]))
    bt, is_downbeat, _ = decoded[best]
    if len(bt) < 2:
        return B.estimate_metre_rule(perf)
    first = np.flatnonzero(is_downbeat)
    return B.Metre(bt, bt[is_downbeat], BEATS_PER_BAR[best], B.is_compound(notes, bt),
                   60.0 / float(np.median(np.diff(bt))), int(first[0]) if len(first) else 0)
