"""Reading a rendered dataset: memory-mapped excerpts and random training crops (numpy only)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyscribe.data.build import LABEL_LAYOUT, shard_paths
from keyscribe.errors import KeyscribeError
from keyscribe.notes import N_KEYS


@dataclass(frozen=True)
class Excerpt:
    """One rendered excerpt. Its arrays are memory-mapped when read, not when listed: an open map holds a
    file descriptor, and a dataset of tens of thousands of shards would exceed the process's limit."""

    id: str
    mel_path: Path
    label_path: Path
    has_pedal: bool

    @property
    def mel(self) -> np.ndarray:
        """(frames, n_mels) float16, memory-mapped."""
        return np.load(self.mel_path, mmap_mode="r")

    @property
    def labels(self) -> np.ndarray:
        """(frames, LABEL_COLUMNS) uint8, memory-mapped."""
        return np.load(self.label_path, mmap_mode="r")

    def roll(self, name: str) -> np.ndarray:
        """One (frames, 88) label roll by name, or the (frames,) pedal roll."""
        labels = self.labels
        if name == "pedal":
            return labels[:, -1]
        i = LABEL_LAYOUT.index(name)
        return labels[:, i * N_KEYS:(i + 1) * N_KEYS]


def load_split(dataset_dir: str | os.PathLike, split: str) -> list[Excerpt]:
    """Every finished excerpt of `split` in the dataset's manifest, memory-mapped."""
    root = Path(dataset_dir)
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise KeyscribeError(f"{root}: no manifest.jsonl; build the dataset with `keyscribe render-dataset`")
    excerpts = []
    for line in manifest.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("split") != split or "error" in record:
            continue
        mel_path, label_path = shard_paths(root, record["id"])
        excerpts.append(Excerpt(record["id"], mel_path, label_path, bool(record.get("has_pedal", True))))
    return excerpts


def random_batch(excerpts: list[Excerpt], batch_size: int, frames: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mel (B, frames, n_mels) float32, labels (B, frames, columns) uint8, has_pedal (B,) bool):
    random crops of random excerpts; shorter excerpts are zero-padded (silence labels)."""
    picks = rng.integers(len(excerpts), size=batch_size)
    n_mels, columns = excerpts[0].mel.shape[1], excerpts[0].labels.shape[1]
    mel = np.full((batch_size, frames, n_mels), np.log(1e-5), np.float32)
    labels = np.zeros((batch_size, frames, columns), np.uint8)
    for b, i in enumerate(picks):
        ex_mel, ex_labels = excerpts[i].mel, excerpts[i].labels  # each read maps the file once
        start = int(rng.integers(max(ex_mel.shape[0] - frames, 0) + 1))
        crop = slice(start, start + frames)
        n = ex_mel[crop].shape[0]
        mel[b, :n] = ex_mel[crop]
        labels[b, :n] = ex_labels[crop]
    return mel, labels, np.array([excerpts[i].has_pedal for i in picks])


def cooccurrence_from_excerpts(excerpts: list[Excerpt]) -> np.ndarray:
    """P(key j sounds | key i sounds) over every frame of the excerpts' frame rolls (the GCN adjacency)."""
    from keyscribe.stats import conditional_probabilities, cooccurrence_counts
    counts = np.zeros((N_KEYS, N_KEYS))
    for ex in excerpts:
        counts += cooccurrence_counts(ex.roll("frame"))
    return conditional_probabilities(counts)


def label_rates(excerpts: list[Excerpt], max_excerpts: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """What the outputs should start at: ((len(LABEL_LAYOUT), 88), (3,)) rates in 0..1 over a random
    sample of the excerpts. Onset/offset/frame: share of frames on, per key; velocity: mean velocity / 127
    at onsets, per key (the overall mean for keys never struck); pedal onset/offset/frame: share of frames
    over the sources that have a pedal track."""
    rng = np.random.default_rng(seed)
    sample = [excerpts[i] for i in rng.permutation(len(excerpts))[:max_excerpts]]
    on = np.zeros((3, N_KEYS))
    velocity_sum, struck, frames = np.zeros(N_KEYS), np.zeros(N_KEYS), 0
    pedal_on, pedal_frames = np.zeros(3), 0
    for ex in sample:
        onset = np.asarray(ex.roll("onset")) > 0
        on += [onset.sum(0), (np.asarray(ex.roll("offset")) > 0).sum(0), (np.asarray(ex.roll("frame")) > 0).sum(0)]
        velocity_sum += np.where(onset, np.asarray(ex.roll("velocity")), 0).sum(0) / 127
        struck += onset.sum(0)
        frames += onset.shape[0]
        if ex.has_pedal:
            pedal = (np.asarray(ex.roll("pedal")) > 0).astype(int)
            change = np.diff(pedal, prepend=0)
            pedal_on += [(change == 1).sum(), (change == -1).sum(), pedal.sum()]
            pedal_frames += pedal.size
    overall_velocity = velocity_sum.sum() / max(struck.sum(), 1)
    velocity = np.where(struck > 0, velocity_sum / np.maximum(struck, 1), overall_velocity)
    return np.vstack([on / max(frames, 1), velocity]), pedal_on / max(pedal_frames, 1)
