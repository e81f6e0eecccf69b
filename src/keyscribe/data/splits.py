"""Which performances train, validate and test: split by piece, never by performance.

A piece is ASAP's (composer, title). Pieces that MAPS ENSTDkAm (the real-piano test set) also plays go
to `test` and are never trained or validated on; of the rest, a stable hash of the piece name sends
about `VALIDATION_PERCENT` percent to `validation`.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

VALIDATION_PERCENT = 6

# ASAP pieces that ENSTDkAm also contains (pathetique_2/3, chpn_op25_e4, schub_d760_3, scn16_4).
ASAP_PIECES_IN_MAPS_TEST = {
    ("Beethoven", "Piano_Sonatas_8-2"), ("Beethoven", "Piano_Sonatas_8-3"),
    ("Chopin", "Etudes_op_25_4"), ("Schubert", "Wanderer_fantasie"), ("Schumann", "Kreisleriana_4"),
}
# MAPS piece ids of the ENSTDkAm recordings; the synthetic MAPS pianos play some of them too.
MAPS_TEST_PIECES = {
    "chpn-p14", "chpn-p15", "chpn-p4", "chpn_op25_e3", "chpn_op25_e4", "chpn_op33_2", "chpn_op66", "chpn_op7_1",
    "grieg_butterfly", "grieg_kobold", "mendel_op62_5", "muss_1", "pathetique_2", "pathetique_3", "schub_d760_3",
    "schumm-1", "scn15_11", "scn15_6", "scn15_9", "scn16_4", "ty_maerz", "ty_mai", "ty_november",
}


@dataclass(frozen=True)
class SourcePerformance:
    """One performance MIDI file and the piece it plays."""

    midi_path: Path
    composer: str
    title: str

    @property
    def piece(self) -> str:
        return f"{self.composer}/{self.title}"


def piece_split(composer: str, title: str) -> str:
    """'train', 'validation' or 'test' for an ASAP piece; stable across runs and machines."""
    if (composer, title) in ASAP_PIECES_IN_MAPS_TEST:
        return "test"
    digest = int(hashlib.sha1(f"{composer}/{title}".encode()).hexdigest(), 16)
    return "validation" if digest % 100 < VALIDATION_PERCENT else "train"


def asap_performances(asap_dir: str | os.PathLike) -> dict[str, list[SourcePerformance]]:
    """ASAP's performances grouped by split, read from its `metadata.csv`."""
    root = Path(asap_dir)
    splits: dict[str, list[SourcePerformance]] = {"train": [], "validation": [], "test": []}
    with open(root / "metadata.csv", newline="") as f:
        for row in csv.DictReader(f):
            path = root / row["midi_performance"]
            if path.is_file():
                perf = SourcePerformance(path, row["composer"], row["title"])
                splits[piece_split(perf.composer, perf.title)].append(perf)
    return splits


def maps_piece_id(path: str | os.PathLike) -> str:
    """'MAPS_MUS-chpn-p14_ENSTDkAm.flac' -> 'chpn-p14'."""
    stem = Path(path).stem
    return stem.removeprefix("MAPS_MUS-").rsplit("_", 1)[0]
