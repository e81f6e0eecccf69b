"""Fit a metrical-level chooser on ASAP training performances.

    python -m keyscribe.score.fit_level --n 200                   # the rule tracker's (beats._LEVEL_*)
    python -m keyscribe.score.fit_level --n 300 --tracker notes   # the note network's (none applied: below)

For each training performance (never a held-out or validation piece), the tracker's beats give four
candidates (x1, every other beat in two phases, x2); each candidate gets `beats.level_features` and its
beat F1 against the annotations. A conditional-logit model is fitted to soft targets (softmax of 10 F1),
and is reported on the validation pieces. It prints the constants to paste into beats.py.

The note network has no chooser: with `--n 300 --tracker notes`, its tracked beats score 0.637 on the 55
validation performances and the best of the four candidates 0.755, but the fitted chooser picks 0.629.
On the pieces it was trained on the network's level is nearly always right (0.721, best 0.732), so the
training performances hold no level errors to learn from.
"""
from __future__ import annotations

import argparse
import random
import warnings

import numpy as np

from tqdm import tqdm

from keyscribe.score import asap, beatnet, notenet
from keyscribe.score import beats as B
from keyscribe.score.io import load_performance


def rule_tracker():
    """perf -> (the rule tracker's beats, the frame network's beat activation)."""
    params = beatnet.load_default()
    if params is None:
        raise SystemExit("beatnet.npz is missing")

    def track(perf):
        a = beatnet.activations(params, perf)
        return B.estimate_metre_rule(perf, choose=False).beats, np.maximum(a[0], a[1])
    return track


def notes_tracker():
    """perf -> (the note network's tracked beats, its beat activation)."""
    sessions = notenet.load_default()
    if sessions is None:
        raise SystemExit("the note network's weights are missing")

    def track(perf):
        beats, act, _ = notenet.tracked_beats(sessions[0], notenet.sorted_notes(perf))
        return beats, act
    return track


def _rows(entries, track, desc: str):
    import mir_eval

    rows = []
    for e in tqdm(entries, desc=desc, unit="performance"):
        perf = load_performance(e.performance)
        ann = asap.read_annotations(e.annotations)
        beats, act = track(perf)
        feats = B.level_features(perf.notes, beats, B.onset_envelope(perf.notes), act)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f1 = np.array([mir_eval.beat.f_measure(ann.beats, c, 0.07) for c in B.level_candidates(beats)])
        if np.all(np.isfinite(feats)):
            rows.append((feats, f1))
    return rows


def fit(rows, iters: int = 3000, lr: float = 0.5, l2: float = 1e-3):
    x = np.stack([r[0] for r in rows])
    f = np.stack([r[1] for r in rows])
    flat = x.reshape(-1, x.shape[-1])
    mu, sd = flat.mean(0), flat.std(0) + 1e-9
    mu[-1], sd[-1] = 0.0, 1.0
    xn = (x - mu) / sd
    target = np.exp(10 * f)
    target /= target.sum(1, keepdims=True)
    w = np.zeros(x.shape[-1])
    for _ in range(iters):
        s = xn @ w
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w += lr * (np.einsum("nc,nck->k", target - p, xn) / len(x) - l2 * w)
    return mu, sd, w


def report(rows, mu, sd, w) -> str:
    x = np.stack([r[0] for r in rows])
    f = np.stack([r[1] for r in rows])
    choice = np.argmax(((x - mu) / sd) @ w, axis=1)
    return (f"beat F1 tracked {f[:, 0].mean():.3f} chosen {f[np.arange(len(f)), choice].mean():.3f} "
            f"best possible {f.max(1).mean():.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--asap", default=None)
    ap.add_argument("--n", type=int, default=200, help="training performances to fit on")
    ap.add_argument("--tracker", choices=("rule", "notes"), default="rule")
    args = ap.parse_args(argv)
    track = rule_tracker() if args.tracker == "rule" else notes_tracker()
    train = [e for e in asap.entries(args.asap, split="train") if not asap.is_validation(e.composer, e.title)]
    random.Random(5).shuffle(train)
    val = [e for e in asap.entries(args.asap, split="train") if asap.is_validation(e.composer, e.title)]
    tr_rows = _rows(train[:args.n], track, "train")
    mu, sd, w = fit(tr_rows)
    print("train:", report(tr_rows, mu, sd, w))
    print("validation:", report(_rows(val, track, "validation"), mu, sd, w))
    print("_LEVEL_MU =", np.round(mu, 4).tolist())
    print("_LEVEL_SD =", np.round(sd, 4).tolist())
    print("_LEVEL_W =", np.round(w, 4).tolist())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
