"""Loaders for the MAPS recordings in ../shared: real ENSTDkAm (test) and two synthetic pianos (train)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from keyscribe.data.splits import MAPS_TEST_PIECES, maps_piece_id

AUDIO_SUFFIXES = (".flac", ".opus", ".wav", ".ogg")


@dataclass(frozen=True)
class MapsRecording:
    """An audio file and its tsv labels (notes already sustained by the pedal; no pedal track)."""

    audio_path: Path
    label_path: Path
    piano: str

    @property
    def piece(self) -> str:
        return maps_piece_id(self.audio_path)


def maps_recordings(folder: str | os.PathLike) -> list[MapsRecording]:
    """Every audio file below `folder` that has a tsv beside it, sorted by path."""
    root = Path(folder)
    found = []
    for audio in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        tsv = audio.with_suffix(".tsv")
        if tsv.is_file():
            found.append(MapsRecording(audio, tsv, audio.stem.rsplit("_", 1)[-1]))
    return found


def maps_training_recordings(synth_dir: str | os.PathLike) -> list[MapsRecording]:
    """The synthetic MAPS recordings whose piece is not in the ENSTDkAm test set."""
    return [r for r in maps_recordings(synth_dir) if r.piece not in MAPS_TEST_PIECES]
