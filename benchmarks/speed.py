"""End-to-end speed and memory of `keyscribe transcribe`, against Basic Pitch on the same files.

    .venv/bin/python benchmarks/speed.py                      # 1, 10 and 60 minutes, with Basic Pitch
    .venv/bin/python benchmarks/speed.py --sizes 1 --no-basic-pitch
    .venv/bin/python benchmarks/speed.py --random-model       # timing only, before a model is shipped
    .venv/bin/python benchmarks/speed.py --context-sweep      # stitching error by window context

What is measured: one fresh process per file and tool, from start to the MIDI file written (so Python
start-up, imports and model loading count), wall-clock time and the process's peak resident memory
(getrusage of the child, ru_maxrss). Speed is x real time = audio seconds / wall seconds. The slope of a
least-squares line through (audio minutes, seconds) says how time grows with length.

Inputs are made from the MAPS ENSTDkAm recordings in ../shared/data (looped and joined to 1, 10 and 60
minutes, resampled to 44.1 kHz stereo 16-bit FLAC like a CD rip) into benchmarks/out/ (git-ignored).
Basic Pitch 0.4.0 runs with its ONNX backend (no TensorFlow) from its own venv, benchmarks/envs/basic-pitch,
which this script creates and fills (pip install --no-deps basic-pitch==0.4.0, then what its ONNX
inference path imports). Results: benchmarks/results/speed-<date>.json, with the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
RESULTS = ROOT / "benchmarks" / "results"
BP_ENV = ROOT / "benchmarks" / "envs" / "basic-pitch"
MAPS = ROOT.parent / "shared" / "data" / "maps" / "ENSTDkAm"
RATE = 44100
BASIC_PITCH = "basic-pitch==0.4.0"
# What basic_pitch.inference and note_creation import on the ONNX path (checked in 0.4.0's source):
# onnxruntime, numpy, librosa, pretty_midi, mir_eval, resampy (<0.4.3 as it pins), scipy; scikit-learn
# and typing-extensions are in its requirements. TensorFlow, tflite and coremltools are left out.
BP_DEPS = ["onnxruntime", "numpy", "librosa", "pretty_midi", "mir_eval", "resampy<0.4.3", "scipy", "scikit-learn",
           "typing-extensions"]
BP_RUNNER = """
import logging, sys
logging.disable(logging.WARNING)  # basic_pitch warns about each backend it does not find
from basic_pitch import ICASSP_2022_MODEL_PATH
from basic_pitch.inference import predict
assert ICASSP_2022_MODEL_PATH.suffix == ".onnx", ICASSP_2022_MODEL_PATH
_, midi, notes = predict(sys.argv[1], ICASSP_2022_MODEL_PATH)
midi.write(sys.argv[2])
print(len(notes))
"""


# ------------------------------------------------------------------------------------------- inputs


def make_input(minutes: int) -> Path:
    """benchmarks/out/piano-<minutes>min.flac: MAPS recordings looped to length, 44.1 kHz stereo."""
    import soundfile as sf
    import soxr

    path = OUT / f"piano-{minutes}min.flac"
    if path.is_file() and abs(sf.info(path).duration - 60 * minutes) < 0.01:
        return path
    sources = sorted(MAPS.glob("*.flac"))
    if not sources:
        sys.exit(f"no MAPS recordings in {MAPS}: ../shared must sit beside the checkout")
    OUT.mkdir(parents=True, exist_ok=True)
    need = 60 * minutes * RATE
    tmp = path.with_suffix(".tmp.flac")
    with sf.SoundFile(tmp, "w", RATE, 2, "PCM_16") as out:
        written = 0
        while written < need:
            for source in sources:
                audio, rate = sf.read(source, dtype="float32")
                audio = audio.mean(axis=1) if audio.ndim == 2 else audio
                audio = soxr.resample(audio, rate, RATE)[: need - written]
                out.write(np.stack([audio, audio], axis=1))
                written += len(audio)
                if written >= need:
                    break
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------- runs


# A small Python process runs each command and reports its peak RSS: a child forked straight from this
# script would start with this script's own (larger) resident set and ru_maxrss would report that.
_WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "code = subprocess.call(sys.argv[1:]); t = time.perf_counter() - t; "
            "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "sys.stderr.write(f'\\n@@measure {t} {u.ru_maxrss} {u.ru_utime + u.ru_stime}\\n'); sys.exit(code)")


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run `cmd` in a fresh process: wall seconds, peak RSS (MB) of that process, CPU seconds, exit code."""
    proc = subprocess.run([sys.executable, "-S", "-c", _WRAPPER, *cmd], capture_output=True, env=env)
    stderr = proc.stderr.decode(errors="replace")
    stderr, _, tail = stderr.rpartition("\n@@measure ")
    wall, max_rss_kb, cpu = (float(x) for x in tail.split())
    return {"seconds": round(wall, 3), "peak_rss_mb": round(max_rss_kb / 1024, 1), "cpu_seconds": round(cpu, 3),
            "exit_code": proc.returncode, "stdout": proc.stdout.decode(errors="replace")[-2000:],
            "stderr": stderr[-2000:]}


def run_keyscribe(audio: Path, model: str | None, threads_env: dict) -> dict:
    out_dir = OUT / "keyscribe"
    cmd = [sys.executable, "-m", "keyscribe.cli", "transcribe", str(audio), "-o", str(out_dir), "--formats", "midi",
           "--force", "--quiet", "--device", "cpu"]
    if model:
        cmd += ["--model", model]
    result = measure(cmd, threads_env)
    midi = out_dir / f"{audio.stem}.mid"
    result["notes"] = _count_notes(midi) if result["exit_code"] == 0 else None
    return result


def run_basic_pitch(audio: Path, threads_env: dict) -> dict:
    out_dir = OUT / "basic-pitch"
    out_dir.mkdir(parents=True, exist_ok=True)
    midi = out_dir / f"{audio.stem}.mid"
    midi.unlink(missing_ok=True)
    result = measure([str(BP_ENV / "bin" / "python"), "-c", BP_RUNNER, str(audio), str(midi)], threads_env)
    result["notes"] = _count_notes(midi) if result["exit_code"] == 0 and midi.is_file() else None
    return result


def _count_notes(midi: Path) -> int | None:
    import mido

    try:
        return sum(1 for track in mido.MidiFile(midi).tracks for m in track if m.type == "note_on" and m.velocity > 0)
    except (OSError, ValueError, EOFError):
        return None


def ensure_basic_pitch() -> str:
    """Create benchmarks/envs/basic-pitch with Basic Pitch's ONNX path; returns its version string."""
    python = BP_ENV / "bin" / "python"
    if not python.exists():
        BP_ENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([_base_python(), "-m", "venv", str(BP_ENV)], check=True)
    check = subprocess.run([str(python), "-c", "import basic_pitch.inference, onnxruntime, librosa"],
                           capture_output=True)
    if check.returncode != 0:
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + ["--no-deps", BASIC_PITCH], check=True)
        subprocess.run(pip + BP_DEPS, check=True)
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                              "print(m.version('basic-pitch'), m.version('onnxruntime'), m.version('librosa'))"],
                             capture_output=True, text=True, check=True).stdout.split()
    return f"basic-pitch {version[0]} (onnxruntime {version[1]}, librosa {version[2]})"


def _base_python() -> str:
    """A Python to make the venv with (this venv's base interpreter, same version)."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(base) if base.exists() else "python3"


# ------------------------------------------------------------------------------------------- report


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    mem_gb = None
    try:
        kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        mem_gb = round(kb / 1024 ** 2, 1)
    except (OSError, StopIteration):
        pass
    import onnxruntime

    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "memory_gb": mem_gb, "os": platform.platform(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "gpu": "none used (--device cpu)", "commit": _git("rev-parse", "--short", "HEAD"),
            "nice": os.nice(0)}


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def fit_line(minutes: list[float], seconds: list[float]) -> dict | None:
    """Least squares seconds = slope * minutes + intercept, with R^2."""
    if len(minutes) < 2:
        return None
    x, y = np.array(minutes, float), np.array(seconds, float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    r2 = 1 - float(residual @ residual) / max(float(((y - y.mean()) ** 2).sum()), 1e-12)
    return {"seconds_per_audio_minute": round(float(slope), 3), "intercept_seconds": round(float(intercept), 2),
            "r2": round(r2, 5)}


def table(rows: list[dict]) -> str:
    head = f"{'input':>7}  {'tool':<12} {'wall s':>8} {'x real time':>12} {'peak RSS MB':>12} {'notes':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['minutes']:>5} m  {r['tool']:<12} {r['seconds']:>8.2f} {r['x_real_time']:>12.1f} "
                     f"{r['peak_rss_mb']:>12.0f} {r['notes'] if r['notes'] is not None else '-':>7}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- context sweep


def context_sweep(model: str | None, seconds: int = 180) -> dict:
    """Stitched against whole-recording output, per window and context, on `seconds` of MAPS: the largest
    and the 99.9th-percentile probability difference, and how many decoded notes differ."""
    from keyscribe import inference as inf
    from keyscribe.audio import load_audio
    from keyscribe.decode import decode_notes

    runtime = inf.load_model(model, device="cpu")
    audio = load_audio(MAPS / "MAPS_MUS-chpn_op66_ENSTDkAm.flac")[: seconds * 16000]
    whole = inf.probabilities_whole(runtime, audio)
    rate, decode = runtime.features.frame_rate, runtime.decode_config

    def notes(p: dict) -> set:
        return {(round(n.onset_s * rate), n.pitch, round(n.offset_s * rate))
                for n in decode_notes(p["onset"], p["frame"], p["velocity"], rate, decode)}

    reference = notes(whole)
    rows = {}
    for window_s in (20.0, 30.0, 60.0):
        for context_s in (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0):
            if window_s - 2 * context_s < 4:
                continue
            config = inf.WindowConfig(window_s=window_s, context_s=context_s)
            started = time.perf_counter()
            got = inf.probabilities_windowed(runtime, audio, config)
            elapsed = time.perf_counter() - started
            diffs = np.concatenate([np.abs(got[k] - whole[k]).ravel() for k in inf.PROBABILITIES])
            changed = len(notes(got) ^ reference)
            rows[f"{window_s:g}s/{context_s:g}s"] = {
                "max_abs_diff": float(diffs.max()), "p999_abs_diff": float(np.quantile(diffs, 0.999)),
                "notes_changed": changed, "seconds": round(elapsed, 3)}
            print(f"window {window_s:>4g} s, context {context_s:>3g} s: max |diff| {diffs.max():.1e}, "
                  f"99.9% {np.quantile(diffs, 0.999):.1e}, notes changed {changed}/{len(reference)}, {elapsed:.2f} s")
    return {"model": runtime.model_id, "audio": f"MAPS_MUS-chpn_op66_ENSTDkAm, first {seconds} s",
            "notes_whole": len(reference), "results": rows}


# ------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,60", help="input lengths in minutes (default 1,10,60)")
    parser.add_argument("--model", help="keyscribe model file (default: the shipped model)")
    parser.add_argument("--random-model", action="store_true",
                        help="time a randomly initialised full-size model (exported to benchmarks/out/); "
                             "the speed is the same as a trained one's, the notes are not")
    parser.add_argument("--no-basic-pitch", action="store_true", help="skip Basic Pitch")
    parser.add_argument("--context-sweep", action="store_true", help="measure stitching error by window context")
    parser.add_argument("--threads", type=int, default=0, help="limit every tool to this many threads (0: no limit)")
    parser.add_argument("--tag", help="add this to the result file's name: speed-<date>-<tag>.json")
    args = parser.parse_args()

    model = args.model
    if args.random_model:
        model = str(_random_model())
    from keyscribe.inference import _model_path, read_info

    model_file = _model_path(model)
    model_note = f"{read_info(model_file).model_id} ({model_file.relative_to(ROOT) if model_file.is_relative_to(ROOT) else model_file})"
    if args.random_model:
        model_note += ", randomly initialised: for timing only (it hears more notes than a trained model)"
    if args.context_sweep:
        result = context_sweep(model)
        _write({"kind": "context-sweep", **result}, f"context-{result['model']}")
        return 0

    env = dict(os.environ)
    if args.threads:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[name] = str(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    bp_version = None if args.no_basic_pitch else ensure_basic_pitch()
    load_before = os.getloadavg()
    rows = []
    for minutes in sizes:
        audio = make_input(minutes)
        tools = [("keyscribe", lambda a=audio: run_keyscribe(a, model, env))]
        if bp_version:
            tools.append(("basic-pitch", lambda a=audio: run_basic_pitch(a, env)))
        for tool, run in tools:
            print(f"{minutes} min, {tool} ...", file=sys.stderr, flush=True)
            result = run()
            if result["exit_code"] != 0:
                print(f"{tool} failed on {audio.name}: {result['stderr'].strip().splitlines()[-1:]}", file=sys.stderr)
            rows.append({"minutes": minutes, "tool": tool, "audio_seconds": 60 * minutes,
                         "x_real_time": round(60 * minutes / result["seconds"], 2),
                         **{k: v for k, v in result.items() if k not in ("stdout",)},
                         "load_average_1min_after": round(os.getloadavg()[0], 2)})
            if result["exit_code"] == 0:
                rows[-1]["stderr"] = ""
    load_after = os.getloadavg()
    summary: dict = {}
    for tool in ("keyscribe", "basic-pitch"):
        ok = [r for r in rows if r["tool"] == tool and r["exit_code"] == 0]
        if ok:
            summary[tool] = {"time_vs_length": fit_line([r["minutes"] for r in ok], [r["seconds"] for r in ok]),
                             "max_peak_rss_mb": max(r["peak_rss_mb"] for r in ok)}
    ratios = {}
    for minutes in sizes:
        pair = {r["tool"]: r for r in rows if r["minutes"] == minutes and r["exit_code"] == 0}
        if len(pair) == 2:
            ratios[f"{minutes}min"] = round(pair["basic-pitch"]["seconds"] / pair["keyscribe"]["seconds"], 2)
    summary["basic_pitch_seconds_over_keyscribe_seconds"] = ratios
    report = {"kind": "speed", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in load_after],
              "keyscribe_model": model_note, "basic_pitch": bp_version,
              "input": "MAPS ENSTDkAm piano recordings looped, 44.1 kHz stereo 16-bit FLAC",
              "measure": "fresh process per run, start to MIDI written; wall time; peak RSS = ru_maxrss of the process",
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "rows": rows, "summary": summary}
    path = _write(report, f"speed-{args.tag}" if args.tag else "speed")
    print(table(rows))
    for tool, s in summary.items():
        if tool in ("keyscribe", "basic-pitch") and s["time_vs_length"]:
            line = s["time_vs_length"]
            print(f"{tool}: {line['seconds_per_audio_minute']:.2f} s per audio minute + {line['intercept_seconds']:.2f} s "
                  f"(R^2 {line['r2']}), peak RSS up to {s['max_peak_rss_mb']:.0f} MB")
    if ratios:
        print("Basic Pitch time / keyscribe time: " + ", ".join(f"{k} {v}x" for k, v in ratios.items()))
    print(f"load average before {report['load_average_before']}, after {report['load_average_after']} "
          f"on {report['machine']['logical_cpus']} CPUs")
    print(f"written {path.relative_to(ROOT)}")
    return 0


def _random_model() -> Path:
    """A randomly initialised full-size Transcriber, exported once to benchmarks/out/random-model/."""
    path = OUT / "random-model" / "keyscribe-random.onnx"
    if not path.is_file():
        import torch

        from keyscribe.inference import export_onnx
        from keyscribe.model import ModelConfig, Transcriber

        torch.manual_seed(0)
        cooccurrence = np.random.default_rng(0).random((88, 88)).astype(np.float32)
        export_onnx(Transcriber(ModelConfig(), cooccurrence), path, model_id="random-init-crgcn")
    return path


def _write(report: dict, kind: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    date = time.strftime("%Y-%m-%d")
    name = f"speed-{date}-{kind[6:]}.json" if kind.startswith("speed-") else f"{kind}-{date}.json"
    path = RESULTS / name
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
