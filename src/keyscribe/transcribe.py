"""`keyscribe.transcribe`: a piano recording (a file or an array) to notes, sustain pedal and exports.

    import keyscribe
    t = keyscribe.transcribe("prelude.mp3")          # the shipped model, onnxruntime on the CPU
    print(t.note_list())                              # At 0.52 s: C4 E4 G4 ...
    t.to_midi("prelude.mid"); t.to_csv("prelude.csv"); t.to_json("prelude.json")
    t.plot_pianoroll("prelude.png")

Every file is written atomically: to a temporary file in the same folder, renamed into place only when
complete, so an error or Ctrl-C never leaves a half-written output. `write_outputs` writes several
formats for the CLI, the score formats (musicxml, svg, pdf) through `keyscribe.score`.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from keyscribe import __version__
from keyscribe.atomic import write_atomic
from keyscribe.errors import AudioError, KeyscribeError
from keyscribe.inference import (INPUT_LOUDNESS_DBFS, Model, WindowConfig, array_chunks, load_model,
                                 transcribe_chunks)
from keyscribe.notes import Note, PedalInterval, Performance, pitch_name

# The level pass (decoding only) takes about a tenth of a file's transcription time: 0.33-0.45 s of
# 3.5-3.9 s for a 306-s recording with the shipped model on 2 cores.
LEVEL_PASS_SHARE = 0.1
CHORD_WINDOW_S = 0.05  # onsets closer than this to a group's first onset are listed as one chord
FORMATS = ("midi", "csv", "json", "txt", "png", "musicxml", "pdf", "svg")
SCORE_FORMATS = ("musicxml", "pdf", "svg")
EXTENSIONS = {"midi": ".mid", "csv": ".csv", "json": ".json", "txt": ".txt", "png": ".png",
              "musicxml": ".musicxml", "pdf": ".pdf", "svg": ".svg"}


@dataclass(frozen=True)
class Transcription:
    """What `transcribe` found: notes (key presses, sorted by onset then pitch), sustain-pedal intervals,
    the recording's duration in seconds and the id of the model that found them."""

    notes: tuple[Note, ...]
    pedals: tuple[PedalInterval, ...]
    duration_s: float
    model_id: str
    source: str | None = None

    @property
    def performance(self) -> Performance:
        return Performance(self.notes, self.pedals)

    def note_list(self, chord_window_s: float = CHORD_WINDOW_S) -> str:
        """One line per chord or single onset, e.g. 'At 5.60 s: C4 E4 G4' (pitches low to high)."""
        lines = []
        for onset, group in _chords(self.notes, chord_window_s):
            lines.append(f"At {onset:.2f} s: " + " ".join(pitch_name(n.pitch) for n in group))
        return "\n".join(lines)

    def to_midi(self, path: str | os.PathLike) -> Path:
        """A one-track piano MIDI file with velocities and the sustain pedal (CC64)."""
        from keyscribe.midi import write_midi

        return write_atomic(path, lambda tmp: write_midi(self.performance, tmp))

    def to_csv(self, path: str | os.PathLike) -> Path:
        """One row per note: onset_s, offset_s, pitch (MIDI), name, velocity."""
        rows = ["onset_s,offset_s,pitch,name,velocity"]
        rows += [f"{n.onset_s:.4f},{n.offset_s:.4f},{n.pitch},{pitch_name(n.pitch)},{n.velocity}" for n in self.notes]
        return _write_text_atomic(path, "\n".join(rows) + "\n")

    def to_json(self, path: str | os.PathLike) -> Path:
        """Notes, pedal intervals and where they came from, as JSON."""
        return _write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    def to_txt(self, path: str | os.PathLike) -> Path:
        """The note list (`note_list`) as a text file."""
        return _write_text_atomic(path, self.note_list() + "\n")

    def to_dict(self) -> dict:
        return {"source": self.source, "duration_s": round(self.duration_s, 4), "model_id": self.model_id,
                "keyscribe_version": __version__,
                "notes": [{"onset_s": round(n.onset_s, 4), "offset_s": round(n.offset_s, 4), "pitch": n.pitch,
                           "name": pitch_name(n.pitch), "velocity": n.velocity} for n in self.notes],
                "pedals": [{"onset_s": round(p.onset_s, 4), "offset_s": round(p.offset_s, 4)} for p in self.pedals]}

    def plot_pianoroll(self, path: str | os.PathLike, *, title: str | None = None) -> Path:
        """A piano-roll PNG: notes as bars (darker = louder) over time, the sustain pedal shaded below."""
        return write_atomic(path, lambda tmp: _plot_pianoroll(self, tmp, title))

    def __repr__(self) -> str:
        return (f"Transcription({len(self.notes)} notes, {len(self.pedals)} pedal intervals, "
                f"{self.duration_s:.2f} s, model {self.model_id!r})")


def transcribe(path_or_array, *, model: str | os.PathLike | Model | None = None, device: str = "auto",
               sample_rate: int = 16000, window: WindowConfig | None = None,
               loudness_dbfs: float | None = INPUT_LOUDNESS_DBFS,
               progress: Callable[[float, float], None] | None = None) -> Transcription:
    """Transcribe a recording: a file path (any format FFmpeg reads, video included) or a float array of
    mono samples at `sample_rate` Hz (a 2-D array is averaged over its channel axis).

    `model`: None for the shipped model, a model file (`.onnx`, or a training checkpoint `.pt`), or a
    model from `inference.load_model` (load once, reuse for many recordings). `device`: "auto" (CUDA
    when there is a GPU, else the CPU), "cpu" or "cuda". `progress(done_s, total_s)` is called as the
    recording is processed (in seconds of audio, the total from the file's header, so only when it has
    one; done_s / total_s is the share of the work done).
    `loudness_dbfs`: the active loudness the recording is brought to first (None: as recorded); a file
    is decoded twice for it, once to measure its level (the first LEVEL_PASS_SHARE of the progress).
    Raises `AudioError` for a bad recording, `ModelError` for a missing or bad model, each with a one-line
    message. Memory does not grow with the recording's length beyond the notes found.
    """
    runtime = load_model(model, device=device)
    window = window or WindowConfig()
    rate = runtime.features.sample_rate
    if isinstance(path_or_array, (str, os.PathLike)):
        from keyscribe.audio import active_power_of_chunks, gain_to, iter_audio_chunks

        source = os.fspath(path_or_array)
        def decode():
            return iter_audio_chunks(path_or_array, sample_rate=rate, chunk_s=window.chunk_s)

        total_s = _header_duration(Path(path_or_array)) if progress else None
        gain, level_share = 1.0, 0.0
        if loudness_dbfs is not None:
            level_share = LEVEL_PASS_SHARE
            level_chunks = _reporting(decode(), rate, _scaled(progress, total_s, 0.0, level_share))
            gain = gain_to(active_power_of_chunks(level_chunks, rate), loudness_dbfs)
        chunks = (c * np.float32(gain) for c in decode())
    else:
        source = None
        samples = _as_mono(path_or_array, sample_rate, rate)
        if loudness_dbfs is not None:
            from keyscribe.audio import loudness_gain

            samples = samples * np.float32(loudness_gain(samples, rate, loudness_dbfs))
        chunks = array_chunks(samples, rate, window.chunk_s)
        total_s, level_share = len(samples) / rate, 0.0
    step = _scaled(progress, total_s, level_share, 1.0 - level_share)
    result = transcribe_chunks(runtime, chunks, window, progress=step)
    return Transcription(tuple(result.notes), tuple(result.pedals), result.n_samples / rate, runtime.model_id, source)


def _scaled(progress: Callable[[float, float], None] | None, total_s: float | None, start: float,
            share: float) -> Callable[[float], None] | None:
    """A callback of seconds done in one pass that reports `progress(done, total_s)`, the pass covering
    `share` of the whole from `start` (both fractions); None when there is nothing to report to."""
    if progress is None or not total_s:
        return None

    def step(done_s: float) -> None:
        progress(total_s * (start + share * min(done_s / total_s, 1.0)), total_s)
    return step


def _reporting(chunks, rate: int, step: Callable[[float], None] | None):
    """`chunks`, calling `step(seconds read so far)` after each one."""
    done = 0
    for chunk in chunks:
        yield chunk
        done += len(chunk)
        if step is not None:
            step(done / rate)


def _as_mono(audio, sample_rate: int, target_rate: int) -> np.ndarray:
    try:
        samples = np.asarray(audio, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise AudioError(f"audio must be a path or an array of samples, got {type(audio).__name__} ({exc})") from None
    if samples.ndim == 2:
        channel_axis = 0 if samples.shape[0] < samples.shape[1] else 1
        samples = samples.mean(axis=channel_axis)
    if samples.ndim != 1:
        raise AudioError(f"audio array must be 1-D (mono) or 2-D (channels), got shape {samples.shape}")
    if samples.size == 0:
        raise AudioError("the audio array is empty")
    if not np.isfinite(samples).all():
        raise AudioError("the audio array holds NaN or infinite samples")
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise AudioError(f"sample rate must be a positive whole number of Hz, got {sample_rate!r}")
    if sample_rate != target_rate:
        import soxr

        samples = soxr.resample(samples, sample_rate, target_rate, quality="VHQ").astype(np.float32)
    return samples


def _chords(notes: Sequence[Note], window_s: float) -> list[tuple[float, list[Note]]]:
    groups: list[tuple[float, list[Note]]] = []
    for note in sorted(notes, key=lambda n: (n.onset_s, n.pitch)):
        if groups and note.onset_s - groups[-1][0] < window_s:
            groups[-1][1].append(note)
        else:
            groups.append((note.onset_s, [note]))
    return [(onset, sorted(group, key=lambda n: n.pitch)) for onset, group in groups]


# --------------------------------------------------------------------------------------------------
# Atomic writing


def _write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def output_paths(out_dir: str | os.PathLike, stem: str, formats: Sequence[str]) -> list[Path]:
    """The files `write_outputs` writes for `formats` (the first page for multi-page score formats)."""
    return [Path(out_dir) / f"{stem}{EXTENSIONS[f]}" for f in formats]


def parse_formats(text: str | Sequence[str]) -> list[str]:
    """'midi,csv' -> ['midi', 'csv'], checked against FORMATS ('mid' is accepted for 'midi', 'all' for
    every format)."""
    names = text.split(",") if isinstance(text, str) else list(text)
    if [n.strip().lower() for n in names] == ["all"]:
        return list(FORMATS)
    formats: list[str] = []
    for name in (n.strip().lower() for n in names):
        name = {"mid": "midi", "xml": "musicxml"}.get(name, name)
        if not name:
            continue
        if name not in FORMATS:
            raise KeyscribeError(f"unknown output format {name!r}; choose from {','.join(FORMATS)}")
        if name not in formats:
            formats.append(name)
    if not formats:
        raise KeyscribeError(f"no output format given; choose from {','.join(FORMATS)}")
    return formats


def write_outputs(t: Transcription, out_dir: str | os.PathLike, stem: str, formats: Sequence[str], *,
                  force: bool = False, title: str | None = None, staging_prefix: str = ".keyscribe-") -> list[Path]:
    """Write `t` as OUT_DIR/<stem>.<ext> for each format. Every file is first written to a temporary name
    and all are renamed into place only once all of them are complete, so a failure in any format
    leaves no output of this recording behind. Without `force`, an existing output is an error."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not force:
        existing = [p for p in output_paths(out, stem, formats) if p.exists()]
        if existing:
            raise KeyscribeError(f"{existing[0]} already exists (use --force to overwrite)")
    staged: list[tuple[Path, Path]] = []  # (temporary, final)
    staging = Path(tempfile.mkdtemp(prefix=f"{staging_prefix}{stem}.", suffix=".tmp", dir=out))
    try:
        writers = {"midi": t.to_midi, "csv": t.to_csv, "json": t.to_json, "txt": t.to_txt,
                   "png": lambda p: t.plot_pianoroll(p, title=title or stem)}
        for fmt in formats:
            if fmt in writers:
                final = out / f"{stem}{EXTENSIONS[fmt]}"
                writers[fmt](staging / final.name)
                staged.append((staging / final.name, final))
        score_formats = [f for f in formats if f in SCORE_FORMATS]
        if score_formats:
            staged += _stage_score(t, staging, out, stem, score_formats, title or stem.replace("_", " "))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [final for _, final in staged]


def _stage_score(t: Transcription, staging: Path, out: Path, stem: str, formats: list[str], title: str
                 ) -> list[tuple[Path, Path]]:
    from keyscribe.score import performance_to_score, write_score

    score = performance_to_score(t.performance, title=title)
    written = write_score(score, staging, stem, formats=formats)
    return [(p, out / p.name) for paths in written.values() for p in paths]


# --------------------------------------------------------------------------------------------------
# Piano roll


def _plot_pianoroll(t: Transcription, path: Path, title: str | None) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    duration = max(t.duration_s, t.performance.end_s, 1.0)
    width = float(np.clip(duration / 5.0, 8.0, 60.0))  # inches; ~5 s per inch, capped for long recordings
    fig = Figure(figsize=(width, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.06, 0.12, 0.92, 0.78))
    pitches = [n.pitch for n in t.notes] or [60]
    low, high = max(21, min(pitches) - 3), min(108, max(pitches) + 3)
    pedal_height = max(1.5, (high - low) * 0.06)
    if t.notes:
        boxes = [[(n.onset_s, n.pitch - 0.4), (n.offset_s, n.pitch - 0.4), (n.offset_s, n.pitch + 0.4),
                  (n.onset_s, n.pitch + 0.4)] for n in t.notes]
        shade = np.array([0.25 + 0.75 * n.velocity / 127 for n in t.notes])
        colours = np.stack([0.1 * shade, 0.3 * shade, 0.9 * shade, np.ones_like(shade)], axis=1)
        ax.add_collection(PolyCollection(boxes, facecolors=colours, edgecolors="none"))
    for p in t.pedals:
        ax.axvspan(p.onset_s, p.offset_s, ymin=0, ymax=pedal_height / (high - low + pedal_height + 1),
                   color="orange", alpha=0.5, linewidth=0)
    ax.set_xlim(0, duration)
    ax.set_ylim(low - pedal_height - 1, high + 1)
    c_keys = [p for p in range(low, high + 1) if p % 12 == 0]
    ax.set_yticks(c_keys, [pitch_name(p) for p in c_keys])
    ax.set_xlabel("time (s)")
    ax.grid(axis="y", color="0.85", linewidth=0.5)
    ax.set_title(f"{title or 'transcription'}: {len(t.notes)} notes, pedal shaded orange", fontsize=10)
    fig.savefig(path, format="png")


# `import keyscribe.transcribe` makes this module the package's `transcribe` attribute, so calling the
# module must behave as calling the function: `keyscribe.transcribe(path)` works either way.
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> Transcription:
        return transcribe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__wrapped__ = transcribe  # inspect.signature(keyscribe.transcribe) shows the function's


# --------------------------------------------------------------------------------------------------
# Many files (the CLI)

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".aif",
                            ".aiff", ".mka", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
STAGING_PREFIX = ".keyscribe-"


@dataclass
class BatchResult:
    written: list[tuple[Path, list[Path]]]  # (input, outputs) per transcribed file
    failed: list[tuple[Path, str]]  # (input, one-line reason)


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to transcribe: each input file as given, each folder's audio and video files (by suffix,
    sorted, not recursive). Returns (files, [(folder, reason)] for folders with nothing to transcribe)."""
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                problems.append((path, f"{path}: no audio or video files in this folder"))
            files += found
        else:
            files.append(path)
    return files, problems


def transcribe_files(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                     formats: Sequence[str] = ("midi",), model: str | os.PathLike | None = None,
                     device: str = "auto", workers: int = 1, force: bool = False, progress: bool = True,
                     report: Callable[[str], None] | None = None) -> BatchResult:
    """Transcribe files and folders into OUT_DIR/<stem>.<ext>, one progress bar for all. A file that fails
    is reported through `report` (one line) and skipped. `workers` > 1 runs files in that many
    processes. Raises only for problems with all files (a bad format name, a missing model)."""
    from tqdm import tqdm

    from keyscribe.inference import read_info, resolve_device, _model_path

    formats = parse_formats(formats)
    if workers < 1:
        raise KeyscribeError(f"--workers must be at least 1, got {workers}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise KeyscribeError(f"{out}: exists and is not a folder")
    files, problems = collect_inputs(inputs)
    if not files and not problems:
        raise KeyscribeError("no input files given")
    resolve_device(device)  # an unknown device, or cuda on a machine without one, fails here
    if not isinstance(model, Model):  # a missing or broken model fails here once, not once per file
        model_path = _model_path(model)
        if model_path.suffix == ".onnx":
            read_info(model_path)
    report = report or (lambda line: print(line, file=sys.stderr))
    result = BatchResult([], [])
    for path, reason in problems:
        result.failed.append((path, reason))
    jobs: list[Path] = []
    stems: dict[str, Path] = {}
    for path in files:
        if path.stem in stems:
            result.failed.append((path, f"{path}: would write the same {out / path.stem}.* as {stems[path.stem]}; "
                                        "rename one or transcribe them into different folders"))
        else:
            stems[path.stem] = path
            jobs.append(path)
    for _, reason in result.failed:
        report(f"keyscribe: error: {reason}")
    if not jobs:
        return result
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyscribeError(f"{out}: cannot create the output folder ({exc.strerror or exc})") from None
    run_id = f"{STAGING_PREFIX}{os.getpid()}-"
    bar = tqdm(total=len(jobs), unit="file", desc="transcribing", disable=not progress, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n:.1f}/{total} files [{elapsed}<{remaining}] {postfix}")

    def done(path: Path, ok: bool, payload) -> None:
        if ok:
            result.written.append((path, payload))
        else:
            result.failed.append((path, payload))
            with tqdm.external_write_mode(file=sys.stderr):
                report(f"keyscribe: error: {payload}")

    previous_handler = _watch_ctrl_c()
    try:
        if workers == 1 or len(jobs) == 1:
            runtime = model if isinstance(model, Model) else load_model(model, device=device)
            for i, path in enumerate(jobs):
                bar.set_postfix_str(path.name[-40:], refresh=False)

                def step(done_s: float, total_s: float, i=i) -> None:
                    bar.n = i + done_s / total_s
                    bar.refresh()

                ok, payload = _one_file(path, out, formats, force, runtime, run_id, step)
                bar.n = i + 1
                bar.refresh()
                done(path, ok, payload)
        else:
            _run_pool(jobs, out, formats, force, model, device, workers, run_id, bar, done)
    finally:
        bar.close()
        for leftover in out.glob(f"{run_id}*"):  # staging of files cut short by Ctrl-C in a worker
            shutil.rmtree(leftover, ignore_errors=True)
        if previous_handler is not None:
            import signal

            signal.signal(signal.SIGINT, previous_handler)
    return result


_CTRL_C = {"pressed": False}


def _watch_ctrl_c():
    """Note Ctrl-C (then raise KeyboardInterrupt as Python does), so that an interrupt which a library
    turns into another exception (an import cut short becomes ImportError) still stops the batch.
    Returns the previous handler, or None when it cannot be set (not the main thread, SIGINT ignored)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        return None

    def handler(signum, frame):
        _CTRL_C["pressed"] = True
        raise KeyboardInterrupt

    _CTRL_C["pressed"] = False
    signal.signal(signal.SIGINT, handler)
    return previous


def _header_duration(path: Path) -> float | None:
    from keyscribe.audio import audio_duration_s

    try:
        return audio_duration_s(path)
    except KeyscribeError:
        return None


def _one_file(path: Path, out: Path, formats: Sequence[str], force: bool, runtime: Model, run_id: str,
              step: Callable[[float, float], None] | None = None) -> tuple[bool, object]:
    """(True, written paths) or (False, one-line reason). Never raises but for KeyboardInterrupt."""
    try:
        if not force:
            existing = [p for p in output_paths(out, path.stem, formats) if p.exists()]
            if existing:
                raise KeyscribeError(f"{existing[0]} already exists (use --force to overwrite)")
        t = transcribe(path, model=runtime, progress=step)
        return True, write_outputs(t, out, path.stem, formats, force=force, staging_prefix=run_id)
    except KeyscribeError as exc:
        if _CTRL_C["pressed"]:
            raise KeyboardInterrupt from exc
        message = " ".join(str(exc).split())
        return False, message if path.name in message or str(out) in message else f"{path}: {message}"
    except Exception as exc:  # a bug or a library's surprise: skip this file, say what happened
        if _CTRL_C["pressed"]:
            raise KeyboardInterrupt from exc
        return False, f"{path}: unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:200]} (please report)"


_WORKER: dict = {}


def _worker_init(model, device: str, threads: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    try:
        _WORKER["model"] = load_model(model, device=device, threads=threads)
    except Exception as exc:  # reported per file; raising here would break the whole pool
        _WORKER["error"] = " ".join(str(exc).split())


def _worker_run(args) -> tuple[Path, bool, object]:
    path, out, formats, force, run_id = args
    if "model" not in _WORKER:
        return path, False, f"{path}: the worker could not load the model ({_WORKER.get('error')})"
    ok, payload = _one_file(path, out, formats, force, _WORKER["model"], run_id)
    return path, ok, payload


def _run_pool(jobs, out, formats, force, model, device, workers, run_id, bar, done) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    if isinstance(model, Model):
        model = model.path
    model_arg = None if model is None else os.fspath(model)
    executor = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(model_arg, device, threads))
    try:
        futures = {executor.submit(_worker_run, (path, out, list(formats), force, run_id)): path for path in jobs}
        for future in as_completed(futures):
            path = futures[future]
            try:
                _, ok, payload = future.result()
            except BrokenProcessPool:
                ok, payload = False, f"{path}: the worker process died (out of memory?)"
            bar.update(1)
            done(path, ok, payload)
    except BaseException:  # Ctrl-C: stop the workers now; outputs only ever appear whole, by rename
        for process in list(getattr(executor, "_processes", {}).values()):
            process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()


# --------------------------------------------------------------------------------------------------
# The demo

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
DEMO_FORMATS = ("midi", "csv", "json", "txt", "png", "musicxml", "pdf", "svg")


def run_demo(out_dir: str | os.PathLike = "demo-output", *, model=None, device: str = "auto",
             example: str | os.PathLike | None = None, reference: str | os.PathLike | None = None) -> int:
    """`keyscribe demo`: transcribe the bundled example into OUT_DIR (replacing what an earlier demo wrote),
    print its note list and its scores against the example's MIDI. Returns the exit status."""
    import time

    example = Path(example) if example else EXAMPLES_DIR / "example.ogg"
    reference = Path(reference) if reference else example.with_suffix(".mid")
    if not example.is_file():
        raise KeyscribeError(f"the bundled example {example.name} is missing from {example.parent}; reinstall keyscribe")
    started = time.perf_counter()
    t = transcribe(example, model=model, device=device)
    seconds = time.perf_counter() - started
    formats = list(DEMO_FORMATS)
    try:
        written = write_outputs(t, out_dir, example.stem, formats, force=True)
    except KeyscribeError as exc:  # sheet music can fail on odd input; the rest is still worth showing
        formats = [f for f in formats if f not in SCORE_FORMATS]
        written = write_outputs(t, out_dir, example.stem, formats, force=True)
        print(f"(no sheet music: {exc})")
    print(t.note_list() or "(no notes were heard)")
    print()
    print(f"{example.name}: {len(t.notes)} notes, {len(t.pedals)} pedal intervals in {t.duration_s:.1f} s of audio, "
          f"transcribed in {seconds:.2f} s ({t.duration_s / max(seconds, 1e-9):.0f}x real time) by {t.model_id}")
    if reference.is_file():
        from keyscribe.evaluate import evaluate_performance
        from keyscribe.midi import read_midi

        scores = evaluate_performance(read_midi(reference), t.performance)
        names = {"note/f1": "notes (onset within 50 ms)", "note_offset/f1": "notes with offsets",
                 "note_offset_velocity/f1": "notes with offsets and velocity", "frame/f1": "frames",
                 "pedal/f1": "sustain pedal"}
        print(f"scores against {reference.name} (F1):")
        for key, label in names.items():
            if key in scores:
                print(f"  {label:<34} {scores[key]:.3f}")
    print(f"outputs in {Path(out_dir)}/: " + ", ".join(p.name for p in written))
    return 0
