"""The ASAP data set (../shared/data/asap): annotations, metadata and the piece-level split."""
from __future__ import annotations

import csv
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keyscribe.errors import LabelError

# Pieces always held out (the docs examples are rendered from these, so they must never be trained on).
FORCED_TEST = {
    ("Mozart", "Piano_Sonatas_12-1"),
    ("Bach", "Prelude_bwv_846"),
    ("Chopin", "Etudes_op_10_3"),
}


def default_asap_dir() -> Path:
    env = os.environ.get("KEYSCRIBE_ASAP")
    if env:
        return Path(env)
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        cand = base.parent / "shared" / "data" / "asap"
        if (cand / "metadata.csv").is_file():
            return cand
    return Path.cwd().parent / "shared" / "data" / "asap"


def split_of(composer: str, title: str) -> str:
    """'test' for held-out pieces (about one in five, by a hash of composer|title), else 'train'."""
    if (composer, title) in FORCED_TEST:
        return "test"
    h = int(hashlib.sha1(f"{composer}|{title}".encode()).hexdigest(), 16)
    return "test" if h % 5 == 0 else "train"


def is_validation(composer: str, title: str) -> bool:
    """A tenth of the training pieces, kept out of model training to tune decoders on."""
    if split_of(composer, title) != "train":
        return False
    h = int(hashlib.sha1(f"val|{composer}|{title}".encode()).hexdigest(), 16)
    return h % 10 == 0


@dataclass
class Annotations:
    beats: np.ndarray
    downbeats: np.ndarray
    time_signatures: list[tuple[float, str]] = field(default_factory=list)
    key_signatures: list[tuple[float, int]] = field(default_factory=list)  # sharps (>0) / flats (<0)

    @property
    def beats_per_bar(self) -> int:
        """The most common number of beats between consecutive downbeats."""
        idx = np.searchsorted(self.beats, self.downbeats)
        gaps = [int(g) for g in np.diff(idx) if g > 0]
        return Counter(gaps).most_common(1)[0][0] if gaps else 4


def read_annotations(path: str | Path) -> Annotations:
    beats, downbeats, ts, ks = [], [], [], []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise LabelError(f"cannot read annotations {path}: {exc}") from exc
    for line in lines:
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        t = float(parts[0])
        labels = parts[2].split(",")
        kind = labels[0]
        if kind in ("b", "db", "bR"):
            beats.append(t)
            if kind == "db":
                downbeats.append(t)
            rest = labels[1:]
        else:
            rest = labels
        for lab in rest:
            if "/" in lab:
                ts.append((t, lab))
            elif lab.strip().lstrip("-").isdigit():
                ks.append((t, int(lab)))
    return Annotations(np.array(beats), np.array(downbeats), ts, ks)


@dataclass
class Entry:
    composer: str
    title: str
    folder: Path
    performance: Path
    annotations: Path
    score_midi: Path
    score_annotations: Path

    @property
    def split(self) -> str:
        return split_of(self.composer, self.title)

    @property
    def name(self) -> str:
        return f"{self.composer}/{self.title}/{self.performance.stem}"


def entries(asap_dir: str | Path | None = None, split: str | None = None) -> list[Entry]:
    base = Path(asap_dir) if asap_dir else default_asap_dir()
    meta = base / "metadata.csv"
    if not meta.is_file():
        raise LabelError(f"no ASAP metadata.csv in {base}")
    out = []
    with open(meta, newline="") as fh:
        for row in csv.DictReader(fh):
            e = Entry(row["composer"], row["title"], base / row["folder"], base / row["midi_performance"],
                      base / row["performance_annotations"], base / row["midi_score"],
                      base / row["midi_score_annotations"])
            if (split is None or e.split == split) and e.performance.is_file() and e.annotations.is_file():
                out.append(e)
    return out
