import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mir_eval
import numpy as np
import pytest

from keyscribe.evaluate import error_types, evaluate_folders, evaluate_performance, per_key_counts, recall_by_velocity
from keyscribe.midi import read_midi, read_tsv, write_midi, write_tsv
from keyscribe.notes import Note, PedalInterval, Performance


def _hz(p):
    return 440.0 * 2 ** ((np.asarray(p) - 69) / 12)


def test_hand_made_case_has_known_f1():
    ref = Performance((Note(1.0, 2.0, 60, 80), Note(3.0, 4.0, 62, 80), Note(5.0, 6.0, 64, 80), Note(7.0, 8.0, 65, 80)))
    est = Performance((Note(1.03, 2.0, 60, 80),   # onset and offset match
                       Note(3.0, 3.2, 62, 80),    # onset matches, offset far off
                       Note(5.2, 6.0, 64, 80)))   # onset 200 ms late: no match
    scores = evaluate_performance(ref, est, pedal_extend=False)
    assert scores["note/precision"] == pytest.approx(2 / 3)
    assert scores["note/recall"] == pytest.approx(2 / 4)
    assert scores["note/f1"] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert scores["note_offset/f1"] == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    # frames at 100 fps: ref sounds 400 frames; est 97 + 20 + 80 = 197, of which 97 + 20 + 80 overlap ref
    assert scores["frame/precision"] == pytest.approx(1.0, abs=0.01)
    assert scores["frame/recall"] == pytest.approx(197 / 400, abs=0.01)
    assert "pedal/f1" not in scores  # no pedal on either side


def test_agrees_with_mir_eval_called_directly(maps_dir):
    ref = read_tsv(next(maps_dir.glob("*.tsv")))
    rng = np.random.default_rng(1)
    est = Performance(tuple(Note(n.onset_s + rng.normal(0, 0.03), n.offset_s + abs(rng.normal(0, 0.1)) + 0.05, n.pitch,
                                 int(np.clip(n.velocity + rng.normal(0, 15), 1, 127)))
                            for n in ref.notes if rng.random() < 0.9 and n.onset_s > 0.2))
    ours = evaluate_performance(ref, est, pedal_extend=False)
    ri = np.array([[n.onset_s, n.offset_s] for n in ref.notes]); rp = _hz([n.pitch for n in ref.notes])
    ei = np.array([[n.onset_s, n.offset_s] for n in est.notes]); ep = _hz([n.pitch for n in est.notes])
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(ri, rp, ei, ep, offset_ratio=None)
    assert (ours["note/precision"], ours["note/recall"], ours["note/f1"]) == pytest.approx((p, r, f))
    p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(ri, rp, ei, ep)
    assert ours["note_offset/f1"] == pytest.approx(f)
    p, r, f, _ = mir_eval.transcription_velocity.precision_recall_f1_overlap(
        ri, rp, np.array([n.velocity for n in ref.notes]), ei, ep, np.array([n.velocity for n in est.notes]))
    assert ours["note_offset_velocity/f1"] == pytest.approx(f)
    assert 0.3 < ours["note/f1"] < 0.99 and ours["note_offset/f1"] < ours["note/f1"]


def test_pedal_metric_and_reference_extension():
    ref = Performance((Note(0.0, 0.5, 60),), (PedalInterval(0.2, 2.0),))
    est_sounding = Performance((Note(0.0, 2.0, 60),), (PedalInterval(0.2, 1.1),))
    scores = evaluate_performance(ref, est_sounding)
    assert scores["note_offset/f1"] == 1.0  # the reference note sounds until the pedal lifts at 2.0
    assert scores["pedal/precision"] == pytest.approx(1.0)
    assert scores["pedal/recall"] == pytest.approx(0.5, abs=0.01)
    assert evaluate_performance(ref, est_sounding, pedal_extend=False)["note_offset/f1"] == 0.0


def _has_fast_restrike(perf, within_s):
    last = {}
    for n in perf.notes:
        if n.pitch in last and n.onset_s - last[n.pitch] < within_s:
            return True
        last[n.pitch] = n.onset_s
    return False


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "keyscribe.cli", *args], capture_output=True, text=True)


def test_cli_identical_folders_score_one(tmp_path, maps_dir):
    for tsv in sorted(maps_dir.glob("*.tsv"))[:3]:
        shutil.copy(tsv, tmp_path)
    write_midi(Performance((Note(0.0, 0.5, 60, 90),), (PedalInterval(0.1, 1.0),)), tmp_path / "with_pedal.mid")
    out = tmp_path / "m.json"
    proc = _cli("evaluate", "--ref", str(tmp_path), "--est", str(tmp_path), "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert len(result["files"]) == 4
    assert all(v == 1.0 for v in result["mean"].values())
    assert "mean" in proc.stdout


def test_cli_maps_shifted_60ms_gives_zero_onset_f1(tmp_path, maps_dir):
    ref_dir, est_dir = tmp_path / "ref", tmp_path / "est"
    ref_dir.mkdir(); est_dir.mkdir()
    for tsv in sorted(maps_dir.glob("*.tsv")):
        shutil.copy(tsv, ref_dir)
        write_tsv(read_tsv(tsv).shifted(0.060), est_dir / tsv.name)
    proc = _cli("evaluate", "--ref", str(ref_dir), "--est", str(est_dir), "--json", str(tmp_path / "m.json"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "m.json").read_text())
    assert len(result["files"]) == 23
    # A shifted note can still match an earlier re-strike of its own key (trills, repeated notes less
    # than 110 ms apart); files without such re-strikes score exactly 0, and the mean stays near it.
    for tsv in sorted(ref_dir.glob("*.tsv")):
        if not _has_fast_restrike(read_tsv(tsv), 0.110):
            assert result["files"][tsv.stem]["note/f1"] == 0.0, tsv.stem
    assert result["mean"]["note/f1"] < 0.01
    assert result["mean"]["frame/f1"] > 0.5  # frames still mostly overlap


def test_cli_bad_folder_is_one_line_error(tmp_path):
    proc = _cli("evaluate", "--ref", str(tmp_path / "nope"), "--est", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_error_types_sort_each_wrong_note_into_its_kind():
    ref = Performance((Note(1.0, 2.0, 60, 80), Note(1.0, 1.5, 64, 80), Note(3.0, 4.0, 67, 80),
                       Note(5.0, 6.0, 50, 80)))
    est = Performance((Note(1.02, 2.0, 60, 80),  # matched, 20 ms late
                       Note(1.0, 1.5, 72, 80),  # an octave above the reference C4: harmonic heard as a note
                       Note(1.6, 2.0, 60, 80),  # C4 struck again while the reference C4 is held
                       Note(3.1, 4.0, 67, 80),  # G4 100 ms late: missed at 50 ms, mistimed
                       Note(8.0, 8.5, 90, 80)))  # nothing near
    counts, deviations = error_types(ref, est)
    assert counts == {"matched": 1, "missed": 3, "mistimed": 1, "extra_octave": 1, "extra_repeat": 1,
                      "extra_other": 1}
    # the late G4 is counted once, as mistimed, not also as a repeated G4
    assert sorted(np.round(deviations, 3)) == [0.02, 0.1]


def test_error_types_and_per_key_counts_agree_and_handle_empty_sides():
    ref = Performance(tuple(Note(0.5 * i, 0.5 * i + 0.4, 40 + i, 70) for i in range(10)))
    est = Performance(tuple(Note(0.5 * i + 0.01, 0.5 * i + 0.4, 40 + i + (i % 3 == 0), 70) for i in range(10)))
    counts, _ = error_types(ref, est)
    keys = per_key_counts(ref, est)
    assert counts["matched"] == keys[0].sum() == 6
    assert counts["missed"] == keys[2].sum() == 4
    assert sum(counts[k] for k in ("extra_octave", "extra_repeat", "extra_other")) == keys[1].sum() == 4
    empty, dev = error_types(ref, Performance(()))
    assert empty["missed"] == 10 and dev.size == 0
    assert error_types(Performance(()), est)[0]["extra_other"] == 10


def test_recall_by_velocity_counts_found_and_all_reference_notes_per_band():
    # bands 0-29, 30-44, 45-59, 60-74, 75-89, 90-127
    velocities = (10, 29, 30, 50, 59, 60, 100, 127)
    ref = Performance(tuple(Note(0.5 * i, 0.5 * i + 0.4, 60 + i, v) for i, v in enumerate(velocities)))
    found = {0, 2, 3, 6}  # and one estimate 80 ms late: not found
    est = Performance(tuple(Note(0.5 * i + (0.01 if i in found else 0.08), 0.5 * i + 0.4, 60 + i, 64)
                            for i in range(len(velocities))))
    counts = recall_by_velocity(ref, est)
    assert counts.tolist() == [[1, 1, 1, 0, 0, 1], [2, 1, 2, 1, 0, 2]]
    assert recall_by_velocity(ref, Performance(())).tolist() == [[0] * 6, [2, 1, 2, 1, 0, 2]]


def test_cli_evaluate_model_scores_the_shipped_model_on_a_labelled_recording(tmp_path):
    examples = Path(__file__).resolve().parents[1] / "src" / "keyscribe" / "examples"
    shutil.copy(examples / "example.ogg", tmp_path)
    reference = read_midi(examples / "example.mid")
    write_tsv(reference, tmp_path / "example.tsv")
    result = _cli("evaluate-model", "--data", str(tmp_path), "--json", str(tmp_path / "scores.json"))
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["mean"]["note/f1"] > 0.9  # the shipped model on its own demo recording
    made_by = scores["provenance"]  # which code and options made these figures
    assert made_by["options"]["data"] == str(tmp_path) and made_by["options"]["checkpoint"] is None
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", made_by["commit"])  # the tests run from a git checkout
    found, total = scores["recall_by_velocity"]
    assert sum(total) == len(reference.notes) and "note-onset recall by reference velocity" in result.stdout
