"""Metre and tempo from performed notes: beats, downbeats, beats per bar, compound or simple.

Two trackers share one decoder:

* `rule` (baseline): a note-onset salience envelope (velocity, chord size, bass, length), a smoothed
  local-tempo path from windowed autocorrelation, and Ellis-style dynamic-programming beat tracking.
* `model`: a small temporal convolutional network on a piano-roll of onsets (`beatnet.py`) predicts beat
  and downbeat activations; a bar-pointer HMM (`dbn_beats`) turns them into beats.

Both place downbeats with a Viterbi over the position in the bar (`decode_downbeats`), which also picks
2, 3 or 4 beats per bar. A third, `notes` (`notenet.py`, a network over the note sequence), is the
default (`auto`): its beat and downbeat probabilities are decoded together by the bar-pointer HMM
(`dbn_bars`); see `estimate_metre`.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.ndimage import gaussian_filter1d

from keyscribe.errors import ScoreError
from keyscribe.notes import Note, Performance

FPS = 50  # frames per second of every envelope / activation here
# Compound metre (6/8, 9/8, 12/8) from where the onsets between beats fall, on the shipped tracker's beats:
# chosen on the ASAP training pieces (`benchmarks/compound_rule.py`). Performed timing puts few onsets
# within 0.04 beat of a third, so the rule compares thirds with quarters rather than asking for a majority.
COMPOUND_MIN_THIRDS = 0.25
COMPOUND_THIRDS_OVER_QUARTERS = 1.1
MIN_PERIOD_S, MAX_PERIOD_S = 0.2, 2.0


@dataclass
class Metre:
    """Beat times (s), downbeat times (s), beats per bar, whether beats divide in three, tempo (bpm)."""

    beats: np.ndarray
    downbeats: np.ndarray
    beats_per_bar: int
    compound: bool
    tempo_bpm: float
    first_downbeat: int  # index into `beats` of the first downbeat

    @property
    def time_signature(self) -> str:
        if self.compound:
            return f"{3 * self.beats_per_bar}/8"
        return f"{self.beats_per_bar}/4"

    @property
    def beat_ql(self) -> Fraction:
        """Length of one beat in quarter notes (1 for x/4, 3/2 for x/8 compound)."""
        return Fraction(3, 2) if self.compound else Fraction(1)


# ----------------------------------------------------------------------------------------------- features
def onset_envelope(notes: tuple[Note, ...] | list[Note], fps: int = FPS, n_frames: int | None = None) -> np.ndarray:
    """Salience of note onsets per frame: louder, lower, longer and chordal onsets weigh more."""
    end = max((n.onset_s for n in notes), default=0.0)
    n = n_frames or int(end * fps) + fps * 2
    env = np.zeros(n)
    if not notes:
        return env
    on = np.array([x.onset_s for x in notes])
    off = np.array([x.offset_s for x in notes])
    pitch = np.array([x.pitch for x in notes])
    vel = np.array([x.velocity for x in notes])
    dur = np.clip(off - on, 0.05, 2.0)
    w = (0.3 + vel / 127.0) * (0.6 + np.sqrt(dur)) * (1.0 + 0.6 * (pitch < 55))
    idx = np.clip(np.round(on * fps).astype(int), 0, n - 1)
    np.add.at(env, idx, w)
    env = gaussian_filter1d(env, 1.0)
    return env / (env.max() + 1e-9)


# ----------------------------------------------------------------------------------------------- tempo
def _log_prior(periods: np.ndarray, centre: float = 0.55, width_oct: float = 0.9) -> np.ndarray:
    return -0.5 * (np.log2(periods / centre) / width_oct) ** 2


def local_periods(act: np.ndarray, fps: int = FPS, win_s: float = 8.0, hop_s: float = 1.0,
                  prior_centre: float = 0.55, clean: bool = False, width: float = 0.9,
                  comb: float = 0.5) -> np.ndarray:
    """Beat period (frames) per frame: windowed autocorrelation + Viterbi smoothing over log-period."""
    lags = np.unique(np.round(np.geomspace(MIN_PERIOD_S * fps, MAX_PERIOD_S * fps, 60)).astype(int))
    win, hop = int(win_s * fps), int(hop_s * fps)
    n = len(act)
    centres = np.arange(0, max(n, 1), hop)
    x = act - gaussian_filter1d(act, fps * 0.5)
    obs = np.zeros((len(centres), len(lags)))
    for i, c in enumerate(centres):
        a, b = max(0, c - win // 2), min(n, c + win // 2)
        seg = x[a:b]
        if len(seg) < 2 * lags.max():
            seg = x[max(0, min(a, n - 2 * lags.max() - 1)):min(n, max(b, 2 * lags.max() + 1))]
        ac = np.array([np.dot(seg[:-l], seg[l:]) / (len(seg) - l) if l < len(seg) else 0.0 for l in lags])
        # comb: a beat period is supported by its double (bar-ish level) and its half
        ac2 = np.array([ac[np.argmin(np.abs(lags - 2 * l))] if 2 * l <= lags.max() else 0.0 for l in lags])
        if clean:
            # a beat activation peaks on beats only: prefer the shortest strong period (penalise a lag
            # whose half is as strong, i.e. a bar-level or double-beat period)
            ach = np.array([ac[np.argmin(np.abs(lags - l / 2))] if l / 2 >= lags.min() else 0.0 for l in lags])
            obs[i] = ac - 0.6 * np.maximum(ach, 0)
        else:
            obs[i] = ac + comb * np.maximum(ac2, 0)
    obs = obs / (np.abs(obs).max(axis=1, keepdims=True) + 1e-9)
    score = obs * 4.0 + _log_prior(lags / fps, prior_centre, width)[None, :]
    # Viterbi: penalise tempo jumps in log2 units
    logl = np.log2(lags)
    trans = -8.0 * (logl[:, None] - logl[None, :]) ** 2
    dp = score[0].copy()
    back = np.zeros(obs.shape, dtype=int)
    for i in range(1, len(centres)):
        cand = dp[:, None] + trans
        back[i] = np.argmax(cand, axis=0)
        dp = cand[back[i], np.arange(len(lags))] + score[i]
    path = np.zeros(len(centres), dtype=int)
    path[-1] = int(np.argmax(dp))
    for i in range(len(centres) - 1, 0, -1):
        path[i - 1] = back[i, path[i]]
    per = lags[path].astype(float)
    return np.interp(np.arange(n), centres, per)


def track_beats(act: np.ndarray, periods: np.ndarray, fps: int = FPS, tightness: float = 6.0) -> np.ndarray:
    """Ellis (2007) dynamic-programming beat tracking with a frame-dependent period. Returns seconds."""
    n = len(act)
    if n == 0 or act.max() <= 0:
        return np.zeros(0)
    score = np.zeros(n)
    back = np.full(n, -1)
    a = act / (act.max() + 1e-9)
    for t in range(n):
        p = periods[t]
        lo, hi = int(t - 2 * p), int(t - p / 2)
        if hi < 0:
            score[t] = a[t]
            continue
        lo = max(lo, 0)
        taus = np.arange(lo, hi + 1)
        pen = -tightness * np.log((t - taus) / p) ** 2
        cand = score[taus] + pen
        k = int(np.argmax(cand))
        score[t] = a[t] + cand[k]
        back[t] = taus[k]
    # end: best score among frames in the last period
    last_p = int(periods[-1])
    tail = np.arange(max(0, n - last_p - 1), n)
    # take the last local maximum with a salient activation
    t = int(tail[np.argmax(score[tail] - 0.0 * tail)])
    beats = [t]
    while back[t] >= 0:
        t = int(back[t])
        beats.append(t)
    return np.array(beats[::-1], dtype=float) / fps


def dbn_beats(act: np.ndarray, fps: int = FPS, min_bpm: float = 30.0, max_bpm: float = 300.0,
              transition_lambda: float = 100.0, observation_lambda: int = 16, power: float = 1.0) -> np.ndarray:
    """Beat times (s) from a beat activation with a bar-pointer style HMM (as madmom's DBN tracker): `dbn_bars`
    with one beat per bar and no downbeat evidence. Unlike the autocorrelation tempo, this rewards the
    metrical level whose beats all land on activation peaks."""
    beats, _, _ = dbn_bars(np.asarray(act, float) ** power, None, 1, fps, min_bpm, max_bpm, transition_lambda,
                           observation_lambda)
    return beats


def dbn_bars(beat_act: np.ndarray, downbeat_act: np.ndarray | None, beats_per_bar: int, fps: int = FPS,
             min_bpm: float = 30.0, max_bpm: float = 300.0, transition_lambda: float = 100.0,
             observation_lambda: int = 16, downbeat_weight: float = 1.0, downbeat_reference: float = 0.5
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """(beat times (s), downbeat flag per beat, log-likelihood) of a bar-pointer HMM over beats and
    downbeats at once, as madmom's downbeat tracker (Böck et al., 2016).

    States are (beat interval tau in frames, position in a bar of `beats_per_bar` beats); the position
    advances one frame per frame, and at the end of each beat the interval may change with probability
    ~ exp(-lambda |tau'/tau - 1|). The first 1/observation_lambda of each beat emits the beat activation,
    the rest its complement shared among the other frames. The downbeat activation (probabilities, or None)
    adds `downbeat_weight` x its log to the first beat of the bar and x the log of its complement
    everywhere else, so the downbeats can move the beats and the likelihoods of different bar lengths
    compare. Both are taken relative to `downbeat_reference` (log p / ref, log (1 - p) / (1 - ref)): at 0.5 a
    bar length gains from a downbeat only where p > 0.5, so a network whose downbeat probabilities are
    calibrated to the rarity of downbeats among notes (mostly below 0.5 even on true downbeats) makes the
    longest bar win; at the probability it gives frames without onsets, a frame without evidence is neutral."""
    pb = np.clip(np.asarray(beat_act, float), 1e-6, 1 - 1e-6)
    n, m = len(pb), beats_per_bar
    taus = np.arange(max(2, int(np.floor(60.0 * fps / max_bpm))), int(np.ceil(60.0 * fps / min_bpm)) + 1)
    n_tau = len(taus)
    first = np.concatenate([[0], np.cumsum(m * taus)[:-1]])  # each tau owns a block of m * tau positions
    tau_of = np.repeat(np.arange(n_tau), m * taus)
    position = np.arange(len(tau_of)) - first[tau_of]
    on_beat = position % taus[tau_of] < np.maximum(1, taus[tau_of] / observation_lambda)
    kind = np.where(on_beat, np.where(position < taus[tau_of], 2, 1), 0)  # off beat, beat, downbeat
    start = first[None, :] + np.arange(m)[:, None] * taus[None, :]  # (beat in bar, tau): first state
    end = start + taus[None, :] - 1
    from_beat = (np.arange(m) - 1) % m
    log_a = -transition_lambda * np.abs(taus[None, :] / taus[:, None] - 1)  # (tau before, tau after)
    log_a -= np.log(np.exp(log_a).sum(axis=1, keepdims=True))
    log_a_by_after = np.ascontiguousarray(log_a.T)  # the maximum runs over the last, contiguous axis
    if downbeat_act is None:
        down = np.zeros((n, 2))
    else:
        pd = np.clip(np.asarray(downbeat_act, float), 1e-6, 1 - 1e-6)
        ref = downbeat_reference
        down = downbeat_weight * np.stack([np.log((1 - pd) / (1 - ref)), np.log(pd / ref)], axis=1)  # (not, is)
    emission = np.stack([np.log((1 - pb) / (observation_lambda - 1)) + down[:, 0], np.log(pb) + down[:, 0],
                         np.log(pb) + down[:, 1]], axis=1)
    v = emission[0][kind] - np.log(len(kind))
    back = np.zeros((n, m, n_tau), dtype=np.int16)
    for t in range(1, n):
        cand = v[end[from_beat]][:, None, :] + log_a_by_after[None]  # (beat, tau after, tau before)
        back[t] = np.argmax(cand, axis=2)
        new = np.empty_like(v)
        new[1:] = v[:-1]
        new[start] = np.take_along_axis(cand, back[t][:, :, None], axis=2)[:, :, 0]
        v = new + emission[t][kind]
    beat_of_start = {int(start[k, j]): (k, j) for k in range(m) for j in range(n_tau)}
    s, beats, downbeat = int(np.argmax(v)), [], []
    for t in range(n - 1, -1, -1):
        if s in beat_of_start:
            k, j = beat_of_start[s]
            beats.append(t)
            downbeat.append(k == 0)
            s = int(end[from_beat[k], back[t, k, j]]) if t > 0 else s
        else:
            s -= 1
    return np.array(beats[::-1], dtype=float) / fps, np.array(downbeat[::-1], bool), float(v.max())


def peak_near(curve: np.ndarray, times: np.ndarray, fps: int = FPS) -> np.ndarray:
    """The highest value of a per-frame `curve` within one frame of each time (s), times past either end
    taken at the end."""
    fi = np.clip(np.round(times * fps).astype(int), 0, len(curve) - 1)
    return np.max(np.stack([curve[np.clip(fi + k, 0, len(curve) - 1)] for k in (-1, 0, 1)]), axis=0)


def _trim_to_notes(beats: np.ndarray, notes, period: float) -> np.ndarray:
    if len(beats) == 0 or not notes:
        return beats
    first = min(n.onset_s for n in notes)
    last = max(n.onset_s for n in notes)
    return beats[(beats >= first - 0.05) & (beats <= last + 0.05)]


# ----------------------------------------------------------------------------------------------- metre
def beat_features(notes, beats: np.ndarray) -> np.ndarray:
    """Per-beat evidence for a downbeat: onset salience, bass onsets, harmonic change, long notes."""
    nb = len(beats)
    if nb == 0:
        return np.zeros((0, 4))
    on = np.array([x.onset_s for x in notes])
    pitch = np.array([x.pitch for x in notes])
    vel = np.array([x.velocity for x in notes])
    dur = np.array([x.offset_s - x.onset_s for x in notes])
    ibi = np.median(np.diff(beats)) if nb > 1 else 0.5
    tol = min(0.07, 0.2 * ibi)
    feats = np.zeros((nb, 4))
    chroma = np.zeros((nb, 12))
    edges = np.concatenate([beats - tol, [beats[-1] + ibi]])
    seg = np.searchsorted(edges, on, side="right") - 1
    low_ref = np.percentile(pitch, 20) if len(pitch) else 48
    for i in range(nb):
        near = np.abs(on - beats[i]) <= tol
        if near.any():
            feats[i, 0] = np.sum(vel[near]) / 127.0
            feats[i, 1] = float(pitch[near].min() <= low_ref)
            feats[i, 3] = np.log1p(dur[near].max() / ibi)
        inseg = seg == i
        if inseg.any():
            np.add.at(chroma[i], pitch[inseg] % 12, np.minimum(dur[inseg], ibi) * (1 + (pitch[inseg] < 60)))
    norm = chroma / (np.linalg.norm(chroma, axis=1, keepdims=True) + 1e-9)
    feats[1:, 2] = 1.0 - np.sum(norm[1:] * norm[:-1], axis=1)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    return feats


def choose_metre(db_evidence: np.ndarray, candidates=(2, 3, 4), bias=None) -> tuple[int, int, float]:
    """Best (beats_per_bar, phase) by mean downbeat evidence at phase positions minus the rest."""
    bias = bias or {2: 0.0, 3: 0.0, 4: 0.05}
    best = (4, 0, -np.inf)
    n = len(db_evidence)
    for m in candidates:
        if n < 2 * m:
            continue
        for ph in range(m):
            on = db_evidence[ph::m]
            mask = np.ones(n, bool)
            mask[ph::m] = False
            s = on.mean() - db_evidence[mask].mean() + bias.get(m, 0.0)
            if s > best[2]:
                best = (m, ph, s)
    return best


def subdivision_shares(notes, beats: np.ndarray) -> tuple[float, float] | None:
    """(near thirds, near quarters): the shares of the onsets between beats that lie within 0.04 beat of a
    third / of a quarter (or half) of the beat; None with fewer than 8 onsets between beats."""
    if len(beats) < 4:
        return None
    x = beat_positions(np.array([n.onset_s for n in notes]), beats)
    frac = x - np.floor(x)
    frac = frac[(frac > 0.1) & (frac < 0.9)]
    if len(frac) < 8:
        return None
    near3 = np.abs(frac * 3 - np.round(frac * 3)) / 3 < 0.04
    near4 = np.abs(frac * 4 - np.round(frac * 4)) / 4 < 0.04
    return float(near3.mean()), float(near4.mean())


def is_compound(notes, beats: np.ndarray) -> bool:
    """True when more onsets between beats fall on thirds of the beat than on its halves and quarters
    (COMPOUND_THIRDS_OVER_QUARTERS times as many) and at least COMPOUND_MIN_THIRDS of them do."""
    shares = subdivision_shares(notes, beats)
    return shares is not None and shares[0] > COMPOUND_MIN_THIRDS and shares[0] > COMPOUND_THIRDS_OVER_QUARTERS * shares[1]


# ----------------------------------------------------------------------------------------------- helpers
def extend_beats(beats: np.ndarray, start: float, end: float) -> tuple[np.ndarray, int]:
    """Extrapolate the beat grid (with the edge periods) to cover [start, end]; returns (beats, n_prepended)."""
    beats = np.asarray(beats, float)
    if len(beats) < 2:
        p = 0.5
        beats = np.array([0.0, p]) if len(beats) == 0 else np.array([beats[0], beats[0] + p])
    pre = []
    p0 = beats[1] - beats[0]
    t = beats[0] - p0
    while t > start - p0:
        pre.append(t)
        t -= p0
    post = []
    p1 = beats[-1] - beats[-2]
    t = beats[-1] + p1
    while t < end + p1:
        post.append(t)
        t += p1
    return np.concatenate([pre[::-1], beats, post]), len(pre)


def beat_positions(times: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Fractional beat index of each time (linear between beats, extrapolated at the ends)."""
    times = np.asarray(times, float)
    idx = np.arange(len(beats), dtype=float)
    x = np.interp(times, beats, idx)
    lo = times < beats[0]
    x[lo] = (times[lo] - beats[0]) / (beats[1] - beats[0])
    hi = times > beats[-1]
    x[hi] = len(beats) - 1 + (times[hi] - beats[-1]) / (beats[-1] - beats[-2])
    return x


def snap_to_onsets(beats: np.ndarray, notes, window: float = 0.05) -> np.ndarray:
    """Move each beat to the nearest note onset within `window` seconds (activations are 20 ms frames)."""
    if not notes or len(beats) == 0:
        return beats
    on = np.unique(np.array([n.onset_s for n in notes]))
    j = np.clip(np.searchsorted(on, beats), 1, len(on) - 1)
    left, right = on[j - 1], on[j]
    nearest = np.where(np.abs(beats - left) <= np.abs(right - beats), left, right)
    return np.where(np.abs(nearest - beats) <= window, nearest, beats)


def decode_downbeats(p_db: np.ndarray, candidates=(2, 3, 4), switch: float = 0.02,
                     bias: dict[int, float] | None = None) -> tuple[int, np.ndarray]:
    """Beats per bar and downbeat flags from per-beat downbeat probabilities.

    Viterbi over the position in the bar for each bar length (a beat advances the position by one; with
    probability `switch` the bar restarts elsewhere, absorbing beat-tracking slips); the bar length with
    the highest likelihood (plus `bias`) wins."""
    p = np.clip(p_db, 1e-4, 1 - 1e-4)
    bias = bias or {}
    best = (-np.inf, 4, np.zeros(len(p), bool))
    for m in candidates:
        if len(p) < m:
            continue
        emit = np.stack([np.log(p)] + [np.log(1 - p)] * (m - 1), axis=1)  # (n, m)
        trans = np.full((m, m), np.log(switch / max(m - 1, 1)))
        for a in range(m):
            trans[a, (a + 1) % m] = np.log(1 - switch)
        dp = emit[0] - np.log(m)
        back = np.zeros((len(p), m), int)
        for i in range(1, len(p)):
            cand = dp[:, None] + trans
            back[i] = np.argmax(cand, axis=0)
            dp = cand[back[i], np.arange(m)] + emit[i]
        ll = float(dp.max()) + bias.get(m, 0.0) * len(p)  # bias per beat
        if ll > best[0]:
            path = np.zeros(len(p), int)
            path[-1] = int(np.argmax(dp))
            for i in range(len(p) - 1, 0, -1):
                path[i - 1] = back[i, path[i]]
            best = (ll, m, path == 0)
    return best[1], best[2]


def _finish(notes, beats: np.ndarray, db_evidence: np.ndarray, compound: bool | None = None,
            db_prob: np.ndarray | None = None, bar_bias: dict[int, float] | None = None) -> Metre:
    if len(beats) < 2:
        raise ScoreError("too few notes to find a beat")
    if db_prob is not None and len(beats) >= 4:
        m, flags = decode_downbeats(db_prob, bias=bar_bias)
        comp = is_compound(notes, beats) if compound is None else compound
        idx = np.flatnonzero(flags)
        if len(idx) == 0:
            idx = np.array([0])
        tempo = 60.0 / float(np.median(np.diff(beats)))
        return Metre(beats, beats[idx], m, comp, tempo, int(idx[0]))
    m, ph, _ = choose_metre(db_evidence)
    comp = is_compound(notes, beats) if compound is None else compound
    downbeats = beats[ph::m]
    tempo = 60.0 / float(np.median(np.diff(beats)))
    return Metre(beats, downbeats, m, comp, tempo, ph)


# ----------------------------------------------------------------------------------------------- level
# A conditional-logit choice between the tracked beats, every other beat (two phases) and twice as many
# beats, learned on 200 ASAP training performances (validation pieces: beat F1 0.608 -> 0.643). Features:
# log2(bpm/100), its square, log(1 + onsets per beat), fraction of beats on an onset, log salience
# contrast beats vs midpoints, and the learned beat activation at beats and at midpoints.
_LEVEL_MU = np.array([0.1216, 0.8698, 2.0769, 0.9045, 0.652, 0.6045, 0.3589, 0.0])
_LEVEL_SD = np.array([0.9247, 0.9938, 0.5788, 0.1081, 0.6162, 0.1719, 0.2477, 1.0])
_LEVEL_W = np.array([-0.3263, -0.1636, -1.4017, 0.0074, -0.3142, 1.4842, -0.7873, -0.0])


def level_candidates(bt: np.ndarray) -> list[np.ndarray]:
    mid = (bt[:-1] + bt[1:]) / 2
    return [bt, bt[0::2], bt[1::2], np.sort(np.concatenate([bt, mid]))]


def level_features(notes, bt: np.ndarray, env: np.ndarray, act: np.ndarray) -> np.ndarray:
    on = np.sort(np.array([n.onset_s for n in notes]))
    out = []
    for c in level_candidates(bt):
        if len(c) < 3 or len(on) < 2:
            out.append(np.full(8, np.nan))
            continue
        lg = np.log2(60.0 / np.median(np.diff(c)) / 100.0)
        cnt = np.histogram(on, bins=c)[0]
        j = np.clip(np.searchsorted(on, c), 1, len(on) - 1)
        d = np.minimum(np.abs(on[j] - c), np.abs(on[j - 1] - c))
        fi = np.clip(np.round(c * FPS).astype(int), 0, len(env) - 1)
        mid = np.clip(np.round((c[:-1] + c[1:]) / 2 * FPS).astype(int), 0, len(env) - 1)

        def peak(x, frames):
            frames = np.clip(frames, 0, len(x) - 1)
            return float(np.mean([x[max(0, f - 1):f + 2].max() for f in frames]))

        out.append(np.array([lg, lg * lg, np.log1p(cnt.mean()), np.mean(d < 0.04),
                             np.log((peak(env, fi) + 1e-3) / (peak(env, mid) + 1e-3)),
                             peak(act, fi), peak(act, mid), 1.0]))
    return np.stack(out)


def choose_level(notes, bt: np.ndarray, env: np.ndarray | None = None, act: np.ndarray | None = None) -> np.ndarray:
    """The beats at the metrical level the learned chooser prefers (unchanged without the model).
    `act`: the network's (2, T) activations when already computed."""
    from keyscribe.score import beatnet

    params = beatnet.load_default()
    if (params is None and act is None) or len(bt) < 6:
        return bt
    env = onset_envelope(notes) if env is None else env
    a = beatnet.activations(params, Performance(tuple(notes))) if act is None else act
    f = level_features(notes, bt, env, np.maximum(a[0], a[1]))
    score = ((f - _LEVEL_MU) / _LEVEL_SD) @ _LEVEL_W
    score[~np.isfinite(score)] = -np.inf
    return level_candidates(bt)[int(np.argmax(score))]


# ----------------------------------------------------------------------------------------------- entry
METHODS = ("auto", "rule", "baseline", "model", "notes")


def estimate_metre(perf: Performance, method: str = "auto") -> Metre:
    """Beats, downbeats and metre of `perf`. method: 'auto' (the default) = 'notes' (the note-sequence
    network, `notenet.py`), 'rule' (the rule tracker plus the learned metrical-level chooser), 'baseline'
    (the rule tracker alone) or 'model' (the frame TCN, `beatnet.py`).

    'auto' is the note network: best on the validation pieces (beat F1 0.761 against 0.727 for 'rule'
    and 'model'), and it keeps strictly timed input (quantised MIDI) at its written tempo and metre,
    where the TCN doubles the tempo. Held-out figures: docs/score/README.md."""
    notes = perf.notes
    if method not in METHODS:
        raise ScoreError(f"unknown beat method {method!r}; choose {', '.join(METHODS)}")
    if len(notes) < 4 or notes[-1].onset_s - notes[0].onset_s < 1.0:
        return steady_metre(perf)
    if method == "model":
        from keyscribe.score import beatnet
        model = beatnet.load_default()
        if model is None:
            raise ScoreError("the beat model weights are not available")
    if method in ("auto", "notes"):
        from keyscribe.score import notenet
        sessions = notenet.load_default()
        if sessions is None:
            raise ScoreError("the note beat model weights are not available")
    try:
        if method == "baseline":  # the rule tracker alone, without the learned level chooser
            return estimate_metre_rule(perf, choose=False)
        if method == "model":
            return beatnet.estimate_metre_model(model, perf)
        if method == "rule":
            return estimate_metre_rule(perf)
        return notenet.estimate_metre_notes(sessions[0], perf, downbeat_session=sessions[1])
    except ScoreError:  # no beat found (e.g. a few scattered notes): a steady 120 bpm grid
        return steady_metre(perf)


def steady_metre(perf: Performance, bpm: float = 120.0) -> Metre:
    """4/4 at `bpm` from the first onset: for performances too short to show a beat."""
    start = perf.notes[0].onset_s if perf.notes else 0.0
    end = max(perf.end_s, start + 4 * 60.0 / bpm)
    beats = np.arange(start, end + 1e-9, 60.0 / bpm)
    return Metre(beats, beats[::4], 4, False, bpm, 0)


def estimate_metre_rule(perf: Performance, choose: bool = True) -> Metre:
    """The rule tracker; with `choose`, the metrical level is picked by the learned chooser."""
    notes = perf.notes
    env = onset_envelope(notes)
    per = local_periods(env)
    beats = track_beats(env, per, tightness=1.0)
    beats = _trim_to_notes(beats, notes, float(np.median(per)) / FPS)
    beats = snap_to_onsets(beats, notes)
    act = None
    if choose:
        from keyscribe.score import beatnet
        params = beatnet.load_default()
        if params is not None:
            act = beatnet.activations(params, perf)
            beats = choose_level(notes, beats, env, act)
    feats = beat_features(notes, beats)
    ev = feats @ np.array([0.5, 1.0, 1.0, 0.7])
    if act is not None and len(beats) >= 4:
        # downbeat evidence: geometric mean of the rule features (as a probability) and the network's
        # downbeat activation at the beats (tuned on training performances: downbeat F1 0.432 -> 0.459)
        db = peak_near(act[1], beats)
        p_rule = 1.0 / (1.0 + np.exp(-ev))
        p = np.sqrt(np.clip(p_rule, 1e-4, 1) * np.clip(db, 1e-4, 1))
        return _finish(notes, beats, ev, db_prob=p)
    # a small per-beat preference for 4 beats per bar (tuned on ASAP training performances: time
    # signature 0.425 -> 0.475 there, downbeat F1 unchanged)
    return _finish(notes, beats, ev, db_prob=1.0 / (1.0 + np.exp(-ev)), bar_bias={4: 0.02})
