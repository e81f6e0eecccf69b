"""`keyscribe transcribe`, `keyscribe demo` and `keyscribe export-model` on good and bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from keyscribe import cli
from keyscribe import transcribe as tr

from test_inference import model_dir  # noqa: F401  (session fixture: a tiny exported model)

SR = 16000


def tone_wav(path: Path, seconds: float = 3.0, freq: float = 440.0) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return path


def video_without_audio(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 20, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture()
def model(model_dir) -> str:  # noqa: F811
    return str(model_dir / "tiny.onnx")


def run(argv, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("keyscribe: error:")]


def test_files_and_a_folder_transcribe_to_outdir_stem_ext(tmp_path, model, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    tone_wav(folder / "a.wav")
    tone_wav(folder / "b.wav", freq=262.0)
    (folder / "notes.txt").write_text("not audio, and not picked from a folder")
    single = tone_wav(tmp_path / "c.wav")
    code, out, err = run(["transcribe", folder, single, "-o", tmp_path / "out", "--model", model,
                          "--formats", "midi,json,txt"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [f"{s}.{e}" for s in "abc" for e in ("json", "mid", "txt")]
    assert json.loads((tmp_path / "out" / "a.json").read_text())["model_id"] == "tiny-test"
    assert "3 file(s) transcribed" in err and not error_lines(err)


def test_one_file_prints_what_it_wrote(tmp_path, model, capsys):
    code, out, err = run(["transcribe", tone_wav(tmp_path / "x.wav"), "-o", tmp_path / "o", "--model", model], capsys)
    assert code == 0
    assert out.split() == [str(tmp_path / "o" / f"x.{e}") for e in ("mid", "csv", "json", "txt", "png")]


def _missing(d: Path) -> Path:
    return d / "missing.wav"


def _empty(d: Path) -> Path:
    (d / "empty.mp3").write_bytes(b"")
    return d / "empty.mp3"


def _text(d: Path) -> Path:
    (d / "letter.mp3").write_text("Dear Sir, this is not a recording.\n" * 20)
    return d / "letter.mp3"


def _video(d: Path) -> Path:
    return video_without_audio(d / "film.mp4")


def _folder_without_audio(d: Path) -> Path:
    (d / "docs").mkdir()
    (d / "docs" / "readme.txt").write_text("x")
    return d / "docs"


@pytest.mark.parametrize("make, says", [(_missing, "no such file"), (_empty, "empty"),
                                        (_text, "not a readable audio"), (_video, "video with no audio"),
                                        (_folder_without_audio, "no audio or video files")])
def test_a_bad_input_is_one_line_and_the_others_still_transcribe(tmp_path, model, capsys, make, says):
    bad = make(tmp_path)
    good = tone_wav(tmp_path / "good.wav")
    code, out, err = run(["transcribe", bad, good, "-o", tmp_path / "out", "--model", model, "--formats", "midi"],
                         capsys)
    assert code == 1
    lines = error_lines(err)
    assert len(lines) == 1 and says in lines[0] and bad.name in lines[0], err
    assert "Traceback" not in err
    assert "1 file(s) transcribed" in err and "1 failed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.mid"]


@pytest.mark.parametrize("args, says", [
    (["--formats", "midi,wav"], "unknown output format 'wav'"),
    (["--model", "nowhere/model.onnx"], "no such model file"),
    (["--workers", "0"], "--workers must be at least 1"),
])
def test_a_bad_option_is_one_line_and_exit_2(tmp_path, model, capsys, args, says):
    argv = ["transcribe", tone_wav(tmp_path / "x.wav"), "-o", tmp_path / "out"]
    if "--model" not in args:
        argv += ["--model", model]
    code, out, err = run(argv + args, capsys)
    assert code == 2
    assert err.strip().splitlines() == [f"keyscribe: error: {err.split('error: ', 1)[1].strip()}"]
    assert says in err
    assert not (tmp_path / "out").exists()


def test_no_shipped_model_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from keyscribe import inference

    monkeypatch.setattr(inference, "MODEL_DIR", tmp_path / "models")
    code, out, err = run(["transcribe", tone_wav(tmp_path / "x.wav"), "-o", tmp_path / "out"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "shipped model keyscribe-piano.onnx is missing" in err


def test_existing_outputs_are_kept_without_force_and_replaced_with_it(tmp_path, model, capsys):
    wav = tone_wav(tmp_path / "x.wav")
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").write_text("precious")
    code, _, err = run(["transcribe", wav, "-o", out, "--model", model, "--formats", "midi,txt"], capsys)
    assert code == 1
    assert error_lines(err) == [f"keyscribe: error: {out / 'x.txt'} already exists (use --force to overwrite)"]
    assert sorted(p.name for p in out.iterdir()) == ["x.txt"] and (out / "x.txt").read_text() == "precious"
    code, _, err = run(["transcribe", wav, "-o", out, "--model", model, "--formats", "midi,txt", "--force"], capsys)
    assert code == 0
    assert (out / "x.txt").read_text().startswith("At ") and (out / "x.mid").is_file()


def test_two_inputs_with_the_same_stem_do_not_overwrite_each_other(tmp_path, model, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tone_wav(tmp_path / "a" / "x.wav"), tone_wav(tmp_path / "b" / "x.wav")
    code, _, err = run(["transcribe", first, second, "-o", tmp_path / "out", "--model", model, "--formats", "midi"],
                       capsys)
    assert code == 1
    assert len(error_lines(err)) == 1 and "would write the same" in err


def test_a_failure_mid_write_leaves_no_output_behind(tmp_path, model, capsys, monkeypatch):
    import keyscribe.midi

    def half_then_fail(perf, path):
        Path(path).write_bytes(b"MThd\x00\x00\x00")
        raise OSError("No space left on device")

    monkeypatch.setattr(keyscribe.midi, "write_midi", half_then_fail)
    code, _, err = run(["transcribe", tone_wav(tmp_path / "x.wav"), "-o", tmp_path / "out", "--model", model,
                        "--formats", "txt,midi,json"], capsys)
    assert code == 1 and "No space left on device" in err and "Traceback" not in err
    assert list((tmp_path / "out").iterdir()) == []


def test_ctrl_c_mid_write_leaves_no_output_behind(tmp_path, model, capsys, monkeypatch):
    import keyscribe.midi

    def interrupted(perf, path):
        Path(path).write_bytes(b"MThd")
        raise KeyboardInterrupt

    monkeypatch.setattr(keyscribe.midi, "write_midi", interrupted)
    code, _, err = run(["transcribe", tone_wav(tmp_path / "x.wav"), "-o", tmp_path / "out", "--model", model,
                        "--formats", "txt,midi"], capsys)
    assert code == 130 and "interrupted" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_workers_run_files_in_processes(tmp_path, model, capsys):
    inputs = [tone_wav(tmp_path / f"{i}.wav", seconds=2.0, freq=200.0 + 50 * i) for i in range(3)]
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    code, _, err = run(["transcribe", *inputs, tmp_path / "broken.wav", "-o", tmp_path / "out", "--model", model,
                        "--formats", "midi", "--workers", "2"], capsys)
    assert code == 1
    assert len(error_lines(err)) == 1 and "broken.wav" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.mid", "1.mid", "2.mid"]


def test_the_command_line_shows_no_traceback_for_bad_input(tmp_path, model):
    out = subprocess.run([sys.executable, "-m", "keyscribe.cli", "transcribe", str(tmp_path / "nothing.wav"),
                          "-o", str(tmp_path / "out"), "--model", model], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert error_lines(out.stderr) == [f"keyscribe: error: {tmp_path / 'nothing.wav'}: no such file"]


def test_export_model_writes_the_onnx_and_sidecar_a_transcription_can_use(model_dir, tmp_path, capsys):  # noqa: F811
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"mean": {"note/f1": 0.91234567, "frame/f1": None}, "files": {}}))
    code, out, err = run(["export-model", model_dir / "best.pt", "-o", tmp_path / "models", "--metrics", metrics],
                         capsys)
    assert code == 0, err
    info = json.loads((tmp_path / "models" / "keyscribe-piano.json").read_text())
    assert info["decode"]["onset_threshold"] == 0.45 and info["metrics"]["note/f1"] == 0.9123
    assert info["model_id"].startswith("keyscribe-piano-")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["keyscribe-piano.json", "keyscribe-piano.onnx"]
    code, _, err = run(["transcribe", tone_wav(tmp_path / "x.wav"), "-o", tmp_path / "out",
                        "--model", tmp_path / "models", "--formats", "json"], capsys)
    assert code == 0 and json.loads((tmp_path / "out" / "x.json").read_text())["model_id"] == info["model_id"]
    code, _, err = run(["export-model", tmp_path / "nope.pt", "-o", tmp_path / "models"], capsys)
    assert code == 2 and "no such checkpoint" in err


def test_demo_transcribes_the_example_and_scores_it(tmp_path, model, capsys, monkeypatch):
    from keyscribe.midi import write_midi
    from keyscribe.notes import Note, Performance

    examples = tmp_path / "examples"
    examples.mkdir()
    tone_wav(examples / "example.wav", seconds=4.0)
    write_midi(Performance((Note(0.0, 4.0, 69, 80),)), examples / "example.mid")
    monkeypatch.setattr(tr, "EXAMPLES_DIR", examples)
    monkeypatch.setattr(tr, "DEMO_FORMATS", ("midi", "txt", "png"))  # the score formats are tested elsewhere
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["demo", "--model", model], capsys)
    assert code == 2 and err.strip() == f"keyscribe: error: the bundled example example.ogg is missing from {examples}; reinstall keyscribe"
    (examples / "example.wav").rename(examples / "example.ogg")  # FFmpeg goes by content, not by name
    code, out, err = run(["demo", "--model", model], capsys)
    assert code == 0, err
    assert "scores against example.mid" in out and "notes (onset within 50 ms)" in out
    assert sorted(p.name for p in (tmp_path / "demo-output").iterdir()) == ["example.mid", "example.png", "example.txt"]
    code, out, err = run(["demo", "--model", model], capsys)  # a second demo replaces the first's outputs
    assert code == 0


def test_ctrl_c_in_a_real_process_leaves_only_whole_files(tmp_path, model):
    """SIGINT to the process group mid-run (as Ctrl-C sends it): exit 130 and nothing half-written, or, if
    the machine was quick, exit 0 with everything complete. Either way no temporary file remains."""
    import os
    import signal
    import time

    noise = np.random.default_rng(0).normal(0, 0.2, 600 * SR).astype(np.float32)
    inputs = []
    for i in range(2):
        sf.write(tmp_path / f"long{i}.wav", noise, SR)
        inputs.append(str(tmp_path / f"long{i}.wav"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "keyscribe.cli", "transcribe", *inputs, "-o", str(out),
                             "--model", model, "--formats", "midi,json,png"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the output folder appears once the model is loaded and the work starts
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    print(proc.returncode, err)
    assert "Traceback" not in err
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not [n for n in names if n.startswith(".")], names
    if proc.returncode == 130:
        assert "keyscribe: interrupted" in err
        assert len(names) in (0, 3), names  # the first file's outputs appear together or not at all
    else:  # the run finished first; SIGINT may still land during interpreter shutdown (-SIGINT)
        assert proc.returncode in (0, -signal.SIGINT) and "2 file(s) transcribed" in err and len(names) == 6


def test_ctrl_c_turned_into_another_error_by_a_library_still_stops_the_batch(tmp_path, model, capsys, monkeypatch):
    import signal

    calls = []

    def interrupted_import(self, path, **kwargs):
        calls.append(path)
        try:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while matplotlib's C extension initialises...
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from None  # ...comes out as an ImportError

    monkeypatch.setattr(tr.Transcription, "plot_pianoroll", interrupted_import)
    inputs = [tone_wav(tmp_path / f"{i}.wav") for i in range(2)]
    # Python's own Ctrl-C handler, as in a terminal (a shell starts background jobs with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, _, err = run(["transcribe", *inputs, "-o", tmp_path / "out", "--model", model, "--formats",
                            "midi,png"], capsys)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130 and "interrupted" in err
    assert len(calls) == 1 and list((tmp_path / "out").iterdir()) == []
