"""Reading a performance from MIDI for the score engine.

`keyscribe.midi.read_midi` is the project's reader; until it is importable this module falls back to a
small pretty_midi reader with the same meaning (notes as key presses, CC64 pedal intervals).
"""
from __future__ import annotations

from pathlib import Path

from keyscribe.errors import LabelError
from keyscribe.notes import MAX_PITCH, MIN_PITCH, PEDAL_THRESHOLD, Note, PedalInterval, Performance


def load_performance(path: str | Path) -> Performance:
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"no such MIDI file: {path}")
    try:
        from keyscribe.midi import read_midi  # type: ignore[attr-defined]
    except ImportError:
        return _read_midi_fallback(path)
    return read_midi(path)


def _read_midi_fallback(path: Path) -> Performance:
    import pretty_midi

    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # pretty_midi raises many types on bad files
        raise LabelError(f"cannot read MIDI file {path}: {exc}") from exc
    notes: list[Note] = []
    pedals: list[PedalInterval] = []
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            if MIN_PITCH <= n.pitch <= MAX_PITCH and n.end > n.start >= 0:
                notes.append(Note(float(n.start), float(n.end), int(n.pitch), max(1, min(127, int(n.velocity)))))
        down = None
        for cc in sorted((c for c in inst.control_changes if c.number == 64), key=lambda c: c.time):
            if cc.value >= PEDAL_THRESHOLD and down is None:
                down = cc.time
            elif cc.value < PEDAL_THRESHOLD and down is not None:
                if cc.time > down:
                    pedals.append(PedalInterval(float(down), float(cc.time)))
                down = None
        if down is not None and pm.get_end_time() > down:
            pedals.append(PedalInterval(float(down), float(pm.get_end_time())))
    return Performance(tuple(notes), tuple(pedals))
