"""Reading a performance from MIDI for the score engine (through `keyscribe.midi.read_midi`)."""
from __future__ import annotations

from pathlib import Path

from keyscribe.midi import read_midi
from keyscribe.notes import Performance


def load_performance(path: str | Path) -> Performance:
    """Notes as key presses and sustain-pedal intervals of a MIDI file."""
    return read_midi(path)
