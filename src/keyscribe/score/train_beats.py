"""Train the note-sequence beat/downbeat network (`beatnet.py`) on the ASAP training split.

    python -m keyscribe.score.train_beats --steps 15000 --out src/keyscribe/score/beatnet.npz

CPU, one thread. Held-out pieces (`asap.split_of(...) == 'test'`) are never read. The validation pieces
(`asap.is_validation`) are kept out of training and choose the saved weights: every `--validate-every`
steps the network tracks one performance of each, and the weights with the best mean of beat and
downbeat F1 are written to `--out`. Needs torch (the `train` extra); inference in `beatnet.py` is numpy.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from keyscribe.score import asap, beatnet
from keyscribe.score.io import load_performance


def cached_notes(entries, cache_dir: Path) -> list[dict]:
    """Notes (onset, offset, pitch, velocity, pedal) and annotated beats of each entry, cached as npz."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for e in entries:
        f = cache_dir / (e.name.replace("/", "__") + ".npz")
        if not f.is_file():
            perf = load_performance(e.performance)
            ann = asap.read_annotations(e.annotations)
            np.savez(f, on=[n.onset_s for n in perf.notes], off=[n.offset_s for n in perf.notes],
                     pitch=[n.pitch for n in perf.notes], vel=[n.velocity for n in perf.notes],
                     ped=np.array([[p.onset_s, p.offset_s] for p in perf.pedals]).reshape(-1, 2),
                     beats=ann.beats, downbeats=ann.downbeats)
        with np.load(f) as z:
            out.append({k: z[k] for k in z.files})
    return out


def _crop(d: dict, rng: np.random.Generator, seconds: float):
    stretch = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    on, off, ped = d["on"] * stretch, d["off"] * stretch, d["ped"] * stretch
    bt, db = d["beats"] * stretch, d["downbeats"] * stretch
    end = max(float(on.max()) if len(on) else 0.0, 1.0)
    t0 = float(rng.uniform(-2.0, max(end - seconds * 0.5, 0.0)))
    sel = (on >= t0) & (on < t0 + seconds)
    pitch = np.clip(d["pitch"][sel] + int(rng.integers(-4, 5)), 21, 108)
    vel = np.clip(d["vel"][sel] * rng.uniform(0.75, 1.25), 1, 127)
    n = int(seconds * beatnet.FPS)
    ped_c = np.clip(ped - t0, 0, seconds)
    ped_c = ped_c[ped_c[:, 1] > ped_c[:, 0]] if len(ped_c) else ped_c
    x = beatnet.features(on[sel] - t0, np.minimum(off[sel] - t0, seconds), pitch, vel, ped_c, n_frames=n)
    y = np.zeros((2, n), np.float32)
    for row, times in ((0, bt), (1, db)):
        fi = np.round((times - t0) * beatnet.FPS).astype(int)
        for k, w in ((-1, 0.5), (1, 0.5), (0, 1.0)):
            g = fi + k
            g = g[(g >= 0) & (g < n)]
            y[row, g] = np.maximum(y[row, g], w)
    # frames before the first / after the last annotated beat are not labelled: mask them
    mask = np.zeros(n, np.float32)
    lo = int(max(0, (bt[0] - t0) * beatnet.FPS - 5)) if len(bt) else n
    hi = int(min(n, (bt[-1] - t0) * beatnet.FPS + 5)) if len(bt) else 0
    mask[lo:hi] = 1.0
    return x, y, mask


def training_data(asap_dir, cache_dir: Path, with_validation: bool = False) -> tuple[list[dict], list[tuple]]:
    """Cached notes of the ASAP training performances (validation pieces left out unless
    `with_validation`; held-out pieces never read) and the validation set (empty with them in)."""
    t_start = time.time()
    train = [e for e in asap.entries(asap_dir, split="train")
             if with_validation or not asap.is_validation(e.composer, e.title)]
    assert all(e.split == "train" for e in train)
    data = [d for d in cached_notes(train, cache_dir) if len(d["beats"]) > 4 and len(d["on"]) > 10]
    val = [] if with_validation else validation_set(asap_dir)
    print(f"{len(data)} training performances, {len(val)} validation pieces, read in {time.time() - t_start:.0f} s",
          flush=True)
    return data, val


def late_decay_rate(base: float, step: int, steps: int) -> float:
    """`base`, then a tenth of it for the last fifth of the steps."""
    return base * (0.1 if step > 0.8 * steps else 1.0)


def validation_entries(asap_dir, every_performance: bool = False) -> list:
    """The ASAP entries of one performance per validation piece, or of all of them."""
    seen, out = set(), []
    for e in asap.entries(asap_dir, split="train"):
        if asap.is_validation(e.composer, e.title) and (every_performance or (e.composer, e.title) not in seen):
            seen.add((e.composer, e.title))
            out.append(e)
    return out


def validation_set(asap_dir, every_performance: bool = False) -> list[tuple]:
    """(performance, annotations) of `validation_entries`."""
    return [(load_performance(e.performance), asap.read_annotations(e.annotations))
            for e in validation_entries(asap_dir, every_performance)]


def validation_score(val: list[tuple], track) -> tuple[float, float]:
    """Mean beat F1 and downbeat F1 (mir_eval, 70 ms) of `track` (a performance -> Metre function)."""
    import mir_eval

    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for perf, ann in val:
            metre = track(perf)
            scores.append((mir_eval.beat.f_measure(ann.beats, metre.beats, 0.07),
                           mir_eval.beat.f_measure(ann.downbeats, metre.downbeats, 0.07)))
    beat, downbeat = np.mean(scores, axis=0)
    return float(beat), float(downbeat)


def build_torch_model():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d: int):
            super().__init__()
            self.conv = nn.Conv1d(beatnet.CHANNELS, beatnet.CHANNELS, beatnet.KERNEL, dilation=d,
                                  padding=d * (beatnet.KERNEL - 1) // 2)
            self.mix = nn.Conv1d(beatnet.CHANNELS, beatnet.CHANNELS, 1)
            self.drop = nn.Dropout(0.1)

        def forward(self, h):
            return h + self.mix(self.drop(nn.functional.elu(self.conv(h))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Conv1d(beatnet.N_IN, beatnet.CHANNELS, 1)
            self.blocks = nn.ModuleList([Block(d) for d in beatnet.DILATIONS])
            self.out = nn.Conv1d(beatnet.CHANNELS, 2, 1)

        def forward(self, x):
            h = nn.functional.elu(self.inp(x))
            for b in self.blocks:
                h = b(h)
            return self.out(h)

    torch.manual_seed(0)
    return Net()


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--asap", default=None)
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--validate-every", type=int, default=1000)
    ap.add_argument("--out", default=str(beatnet.WEIGHTS))
    ap.add_argument("--cache", default="/tmp/keyscribe_beat_cache")
    ap.add_argument("--crop", type=float, default=30.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--with-validation", action="store_true",
                    help="also train on the validation pieces (then the last weights are saved)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data, val = training_data(args.asap, Path(args.cache), args.with_validation)
    net = build_torch_model()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    pos_w = torch.tensor([4.0, 12.0]).view(1, 2, 1)
    t0 = time.time()
    losses, best = [], -1.0
    for step in range(1, args.steps + 1):
        for g in opt.param_groups:
            g["lr"] = late_decay_rate(2e-3, step, args.steps)
        batch = [_crop(data[int(rng.integers(len(data)))], rng, args.crop) for _ in range(args.batch)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1] for b in batch]))
        m = torch.from_numpy(np.stack([b[2] for b in batch]))[:, None, :]
        net.train()
        logits = net(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_w, reduction="none")
        loss = (loss * m).sum() / (m.sum() * 2 + 1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % args.validate_every == 0 or step == args.steps:
            line = f"step {step} loss {np.mean(losses[-args.validate_every:]):.4f} {time.time() - t0:.0f}s"
            if val:
                net.eval()
                params = _numpy_params(net)
                beat, downbeat = validation_score(val, lambda perf: beatnet.estimate_metre_model(params, perf))
                line += f" validation beat F1 {beat:.3f} downbeat F1 {downbeat:.3f}"
                if (beat + downbeat) / 2 > best:
                    best = (beat + downbeat) / 2
                    _save(net, args.out)
                    line += " (saved)"
            print(line, flush=True)
    if not val:
        _save(net, args.out)
    print(f"done: {args.steps} steps in {time.time() - t0:.0f} s, weights in {args.out}", flush=True)
    return 0


def _numpy_params(net) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}


def _save(net, path: str) -> None:
    state = {k: v.astype(np.float16) for k, v in _numpy_params(net).items()}
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **state)
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
