"""Train the note-sequence beat/downbeat network (`notenet.py`) on the ASAP training split.

    python -m keyscribe.score.train_notenet --steps 9000               # -> notenet-beats.onnx (beats)
    python -m keyscribe.score.train_notenet --steps 9000 --no-augment  # -> notenet.onnx (downbeats)

CPU, one thread. Held-out pieces (`asap.split_of(...) == 'test'`) are never read; the validation pieces
(`asap.is_validation`) are kept out of training and choose the saved weights: every `--validate-every`
steps the whole tracker runs on one performance of each, and the weights with the best mean of beat and
downbeat F1 are exported to `--out` (ONNX). Needs torch and onnx (the `train` extra).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from keyscribe.score import notenet
from keyscribe.score.train_beats import late_decay_rate, training_data, validation_score

LABEL_TOLERANCE_S = 0.05  # a note is "on the beat" when its onset is this close to an annotated beat


@dataclass(frozen=True)
class Augment:
    """Training-time changes that make ASAP's clean Disklavier MIDI look like transcribed audio, whose
    notes the tracker reads at run time (the shipped transcriber's note F1 on real recordings is ~0.7)."""

    max_drop: float = 0.15  # each crop drops a random fraction of notes up to this
    max_add: float = 0.10  # and adds up to this fraction of spurious notes
    added_intervals: tuple = (-12, 12, 12, -1, 1, 7, -5)  # relative to a played note; octaves most often
    max_jitter_s: float = 0.02  # onset noise, standard deviation up to this
    max_drift: float = 0.15  # slow tempo swing, relative


AUG = Augment()


def note_labels(onsets: np.ndarray, times: np.ndarray) -> np.ndarray:
    """1.0 for each onset within LABEL_TOLERANCE_S of one of `times` (s), else 0.0."""
    if len(times) == 0:
        return np.zeros(len(onsets), np.float32)
    j = np.clip(np.searchsorted(times, onsets), 1, max(len(times) - 1, 1))
    gap = np.minimum(np.abs(times[j] - onsets), np.abs(times[j - 1] - onsets))
    return (gap <= LABEL_TOLERANCE_S).astype(np.float32)


def _sorted(d: dict) -> dict:
    order = np.lexsort((d["pitch"], d["on"]))
    return {**{k: d[k][order] for k in ("on", "off", "pitch", "vel")}, "beats": d["beats"], "downbeats": d["downbeats"]}


def _transcription_errors(on, off, pitch, vel, rng: np.random.Generator):
    """The notes with the errors of an audio transcriber: some dropped, some added (mostly octaves and
    neighbours of played notes), onsets jittered. Returns the new arrays and each note's source time
    (its unjittered onset), by which it is labelled."""
    keep = rng.random(len(on)) >= rng.uniform(0.0, AUG.max_drop)
    on, off, pitch, vel = on[keep], off[keep], pitch[keep], vel[keep]
    n_add = int(rng.binomial(len(on), rng.uniform(0.0, AUG.max_add))) if len(on) else 0
    src = rng.integers(0, max(len(on), 1), n_add)
    shift = rng.choice(AUG.added_intervals, n_add)
    on = np.concatenate([on, on[src]])
    off = np.concatenate([off, off[src]])
    pitch = np.concatenate([pitch, np.clip(pitch[src] + shift, 21, 108)])
    vel = np.concatenate([vel, vel[src] * rng.uniform(0.4, 0.9, n_add)])
    label_time = on.copy()
    jitter = rng.normal(0.0, rng.uniform(0.0, AUG.max_jitter_s), len(on))
    return on + jitter, off + jitter, pitch, vel, label_time


def _tempo_drift(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Times through a smooth tempo curve: the rate swings by up to `AUG.max_drift` over 5-20 s periods."""
    depth, period, phase = rng.uniform(0, AUG.max_drift), rng.uniform(5.0, 20.0), rng.uniform(0, 2 * np.pi)
    w = 2 * np.pi / period
    # the integral of the rate 1 + depth * sin(w t + phase), monotone while depth < 1
    return t - depth / w * (np.cos(w * t + phase) - np.cos(phase))


def _crop(d: dict, rng: np.random.Generator, length: int, augment: bool = True):
    """Features, labels and mask of `length` consecutive notes, with tempo, pitch and loudness changed
    and (when `augment`) transcription errors and tempo drift added."""
    start = int(rng.integers(0, max(len(d["on"]) - length, 0) + 1))
    sl = slice(start, start + length)
    on, off, pitch, vel = d["on"][sl], d["off"][sl], d["pitch"][sl], d["vel"][sl]
    label_time = on
    if augment:
        on, off, pitch, vel, label_time = _transcription_errors(on, off, pitch, vel, rng)
        on, off = _tempo_drift(on, rng), _tempo_drift(off, rng)
        order = np.lexsort((pitch, on))[:length]
        on, off, pitch, vel, label_time = on[order], off[order], pitch[order], vel[order], label_time[order]
    stretch = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    x = notenet.note_features(on * stretch, np.maximum(off, on + 0.01) * stretch,
                              np.clip(pitch + int(rng.integers(-4, 5)), 21, 108),
                              np.clip(vel * rng.uniform(0.75, 1.25), 1, 127))
    y = np.stack([note_labels(label_time, d["beats"]), note_labels(label_time, d["downbeats"])], axis=1)
    # notes before the first or after the last annotated beat are not labelled
    mask = ((label_time >= d["beats"][0] - 0.1) & (label_time <= d["beats"][-1] + 0.1)).astype(np.float32)
    pad = length - len(on)
    if pad:
        x, y, mask = np.pad(x, ((0, pad), (0, 0))), np.pad(y, ((0, pad), (0, 0))), np.pad(mask, (0, pad))
    return x, y, mask


def build_torch_model(hidden: int = 64):
    import torch
    from torch import nn

    class NoteNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(notenet.N_FEATURES, hidden)
            self.conv = nn.Sequential(nn.Conv1d(hidden, hidden, 5, padding=2), nn.ELU(),
                                      nn.Conv1d(hidden, hidden, 5, padding=2), nn.ELU())
            self.gru = nn.GRU(hidden, hidden, num_layers=2, batch_first=True, bidirectional=True, dropout=0.1)
            self.out = nn.Linear(2 * hidden, 2)

        def forward(self, x):  # (B, N, F) -> (B, N, 2) logits
            h = nn.functional.elu(self.inp(x))
            h = h + self.conv(h.transpose(1, 2)).transpose(1, 2)
            return self.out(self.gru(h)[0])

    torch.manual_seed(0)
    return NoteNet()


class TorchSession:
    """The onnxruntime session's `run` interface over the torch network, for validation while training."""

    def __init__(self, net):
        self.net = net

    def run(self, _outputs, feeds):
        import torch

        with torch.inference_mode():
            return [self.net(torch.from_numpy(feeds["notes"])).numpy()]


def export(net, path: str | Path) -> None:
    """ONNX with dynamic batch and note axes, written beside and renamed."""
    import torch

    net.eval()
    tmp = Path(path).with_suffix(".tmp.onnx")
    torch.onnx.export(net, (torch.zeros(1, 16, notenet.N_FEATURES),), str(tmp), input_names=["notes"],
                      output_names=["logits"], dynamic_axes={"notes": {0: "batch", 1: "notes"},
                                                             "logits": {0: "batch", 1: "notes"}},
                      opset_version=17, do_constant_folding=True, dynamo=False)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--asap", default=None)
    ap.add_argument("--steps", type=int, default=9000)
    ap.add_argument("--validate-every", type=int, default=1000)
    ap.add_argument("--out", help="ONNX file (default: the shipped beat weights, or with --no-augment the "
                                   "downbeat weights, in the package)")
    ap.add_argument("--cache", default="/tmp/keyscribe_beat_cache")
    ap.add_argument("--notes", type=int, default=400, help="notes per training sequence")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=64, help="width of the convolutions and of each GRU direction")
    ap.add_argument("--no-augment", action="store_true", help="train on the clean MIDI (no transcription errors)")
    args = ap.parse_args(argv)
    args.out = args.out or str(notenet.WEIGHTS if args.no_augment else notenet.BEAT_WEIGHTS)
    torch.set_num_threads(1)
    data, val = training_data(args.asap, Path(args.cache))
    data = [_sorted(d) for d in data]
    net = build_torch_model(args.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    rng = np.random.default_rng(0)
    pos_w = torch.tensor([1.0, 2.0])
    t0, losses, best = time.time(), [], -1.0
    bar = tqdm(total=args.steps, desc="train notenet", unit="step")
    for step in range(1, args.steps + 1):
        for g in opt.param_groups:
            g["lr"] = late_decay_rate(args.lr, step, args.steps)
        batch = [_crop(data[int(rng.integers(len(data)))], rng, args.notes, not args.no_augment) for _ in range(args.batch)]
        x, y, m = (torch.from_numpy(np.stack([b[i] for b in batch])) for i in range(3))
        net.train()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y, pos_weight=pos_w, reduction="none")
        loss = (loss * m[..., None]).sum() / (m.sum() * 2 + 1e-6)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step % args.validate_every == 0 or step == args.steps:
            net.eval()
            beat, downbeat = validation_score(val, lambda perf: notenet.estimate_metre_notes(TorchSession(net), perf))
            line = (f"step {step} loss {np.mean(losses[-args.validate_every:]):.4f} {time.time() - t0:.0f}s "
                    f"validation beat F1 {beat:.3f} downbeat F1 {downbeat:.3f}")
            if (beat + downbeat) / 2 > best:
                best = (beat + downbeat) / 2
                export(net, args.out)
                line += " (saved)"
            bar.write(line)
    bar.close()
    print(f"done: {args.steps} steps in {time.time() - t0:.0f} s, best weights in {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
