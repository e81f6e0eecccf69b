import numpy as np
import pytest

from keyscribe.errors import LabelError
from keyscribe.midi import read_labels, read_midi, read_tsv, write_midi, write_tsv
from keyscribe.notes import Note, PedalInterval, Performance, extend_by_pedal, pitch_name


@pytest.mark.parametrize("args", [(0.5, 0.5, 60, 64), (-0.1, 1.0, 60, 64), (0.0, 1.0, 20, 64),
                                  (0.0, 1.0, 109, 64), (0.0, 1.0, 60, 0), (0.0, float("nan"), 60, 64)])
def test_invalid_notes_are_refused(args):
    with pytest.raises(LabelError):
        Note(*args)


def test_pedal_extends_released_notes_until_lift_or_restrike():
    pedals = [PedalInterval(0.5, 2.0)]
    notes = [Note(0.0, 1.0, 60, 70),    # released under the pedal: sounds until 2.0
             Note(0.0, 0.3, 64, 70),    # released before the pedal: unchanged
             Note(0.1, 1.2, 67, 70),    # released under the pedal, but re-struck at 1.5
             Note(1.5, 1.6, 67, 80),    # the re-strike, released under the pedal: until 2.0
             Note(2.5, 3.0, 72, 70)]    # after the pedal: unchanged
    got = {(n.pitch, n.onset_s): n.offset_s for n in extend_by_pedal(notes, pedals)}
    assert got == {(60, 0.0): 2.0, (64, 0.0): 0.3, (67, 0.1): 1.5, (67, 1.5): 2.0, (72, 2.5): 3.0}


def test_pedal_never_shortens_a_note():
    notes = [Note(0.0, 1.0, 60), Note(0.5, 1.5, 60)]  # overlapping same-key notes in a MIDI file
    assert [n.offset_s for n in extend_by_pedal(notes, [])] == [1.0, 1.5]


def test_midi_round_trip_keeps_notes_velocities_and_pedal(tmp_path):
    perf = Performance((Note(0.0, 0.5, 60, 100), Note(0.25, 1.0, 64, 30), Note(1.0, 2.0, 21, 1)),
                       (PedalInterval(0.1, 0.9), PedalInterval(1.5, 2.5)))
    path = tmp_path / "a.mid"
    write_midi(perf, path)
    back = read_midi(path)
    assert [(n.pitch, n.velocity) for n in back.notes] == [(60, 100), (64, 30), (21, 1)]
    np.testing.assert_allclose([(n.onset_s, n.offset_s) for n in back.notes],
                               [(n.onset_s, n.offset_s) for n in perf.notes], atol=2e-3)
    np.testing.assert_allclose([(p.onset_s, p.offset_s) for p in back.pedals], [(0.1, 0.9), (1.5, 2.5)], atol=2e-3)


def test_tsv_round_trip(tmp_path):
    perf = Performance((Note(0.519987, 0.648988, 51, 50), Note(0.519987, 0.649994, 39, 42)))
    write_tsv(perf, tmp_path / "x.tsv")
    assert read_labels(tmp_path / "x.tsv") == perf


def test_shared_maps_labels_read(maps_dir):
    perf = read_tsv(next(maps_dir.glob("*.tsv")))
    assert len(perf.notes) > 100 and not perf.pedals


@pytest.mark.parametrize("content,suffix", [(b"hello", ".mid"), (b"1\t2\n", ".tsv"), (b"", ".mid"), (b"x", ".txt")])
def test_bad_label_files_give_one_line_errors(tmp_path, content, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(LabelError) as err:
        read_labels(path)
    assert "\n" not in str(err.value) and "bad" in str(err.value)


def test_missing_label_file(tmp_path):
    with pytest.raises(LabelError, match="no such"):
        read_labels(tmp_path / "none.mid")


def test_pitch_names():
    assert [pitch_name(p) for p in (21, 60, 61, 108)] == ["A0", "C4", "C#4", "C8"]
