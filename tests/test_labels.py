import numpy as np

from keyscribe.labels import notes_to_rolls, roll_to_pedals, rolls_to_notes
from keyscribe.notes import Note, PedalInterval


def test_rolls_hand_computed():
    fr = 10.0
    rolls = notes_to_rolls([Note(0.1, 0.4, 60, 80)], [PedalInterval(0.2, 0.5)], 8, fr)
    key = 60 - 21
    assert rolls.onset[:, key].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]
    assert rolls.frame[:, key].tolist() == [0, 1, 1, 1, 0, 0, 0, 0]
    assert rolls.offset[:, key].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    assert rolls.velocity[:, key].tolist() == [0, 80, 80, 80, 0, 0, 0, 0]
    assert rolls.pedal.tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert rolls.frame.sum() == 3  # no other key touched


def test_grid_aligned_notes_round_trip_exactly():
    fr = 31.25
    rng = np.random.default_rng(0)
    notes = []
    for pitch in range(21, 109, 3):
        t = 0
        for _ in range(5):
            t += int(rng.integers(0, 4))
            length = int(rng.integers(1, 6))
            notes.append(Note(t / fr, (t + length) / fr, pitch, int(rng.integers(1, 128))))
            t += length  # back-to-back re-strikes of one key are included (gap 0)
    rolls = notes_to_rolls(notes, [], 400, fr)
    back = rolls_to_notes(rolls.onset, rolls.frame, rolls.velocity, fr)
    assert sorted(back, key=lambda n: (n.pitch, n.onset_s)) == sorted(notes, key=lambda n: (n.pitch, n.onset_s))


def test_restruck_key_splits_notes():
    fr = 10.0
    rolls = notes_to_rolls([Note(0.0, 0.3, 60), Note(0.3, 0.6, 60)], [], 10, fr)
    assert rolls.offset[:, 39].tolist() == [0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
    assert len(rolls_to_notes(rolls.onset, rolls.frame, None, fr)) == 2


def test_pedal_roll_round_trip():
    pedals = roll_to_pedals(np.array([0, 1, 1, 0, 1]), 10.0)
    assert [(p.onset_s, p.offset_s) for p in pedals] == [(0.1, 0.3), (0.4, 0.5)]
