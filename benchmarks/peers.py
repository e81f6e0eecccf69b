#!/usr/bin/env python
"""Peer benchmark: keyscribe, transkun 2.0.1 and Basic Pitch 0.4.0 on the same recordings, in one run.

    .venv/bin/python benchmarks/peers.py                     # all tools, all 23 ENSTDkAm + 10 synthetic
    .venv/bin/python benchmarks/peers.py --subset 1 --tools transkun,basic-pitch

Every tool is a command-line program run once per input file in a subprocess pinned with `taskset` to
the same cores; wall time is measured from the process start to its exit (audio file in, MIDI written,
model load included), peak RSS from the child's rusage (`os.wait4`). Model load is also measured on its
own: a process that imports the tool and loads its model the way its command does, then exits. Every
MIDI is scored by `keyscribe.evaluate.evaluate_performance` against the same pedal-extended references.
The peers live in their own virtual environments under benchmarks/envs/ (git-ignored), installed from
PyPI on the first run and reused after; nothing is downloaded at run time. See benchmarks/README.md
for the install fixes and the latest table.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "benchmarks" / "envs"
OUT = ROOT / "benchmarks" / "out" / "peers"
RESULTS = ROOT / "benchmarks" / "results"
MAPS_DIR = ROOT.parent / "shared" / "data" / "maps" / "ENSTDkAm"
DATASET_CONFIG = ROOT / "src" / "keyscribe" / "configs" / "dataset.toml"
DATASET_DIR = ROOT / "work" / "dataset"

TOOLS = ("keyscribe", "transkun", "basic-pitch")
SETS = ("maps", "synth")
TABLE_METRICS = ("frame", "note", "note_offset", "note_offset_velocity")

TORCH_PIN = "torch==2.13.0+cpu"  # only the local CPU wheel matches: never the multi-GB CUDA build
TRANSKUN_PIN = "transkun==2.0.1"
SETUPTOOLS_PIN = "setuptools<81"  # transkun.transcribe imports pkg_resources, gone from setuptools 81
BASIC_PITCH_PIN = "basic-pitch==0.4.0"
# Basic Pitch 0.4.0's requirements on Linux / Python 3.11 without TensorFlow, plus its ONNX runtime.
BASIC_PITCH_DEPS = ("onnxruntime", "librosa>=0.8.0", "mir-eval>=0.6", "numpy>=1.18", "pretty-midi>=0.2.9",
                    "resampy>=0.2.2,<0.4.3", "scikit-learn", "scipy>=1.4.1", "typing-extensions")
SHIM_VERSION = "0+keyscribe.melscale"
MEASURE_VERSION = 2  # part of the --resume key: measurements made another way are not reused

# The torchaudio stand-in installed into transkun's environment. transkun 2.0.1 uses exactly one
# torchaudio function (transkun/Util.py: MelSpectrum calls torchaudio.functional.melscale_fbanks); the
# torchaudio wheel on PyPI is a CUDA build whose compiled extension cannot load against the CPU torch, and
# importing torchaudio loads that extension. This re-implements the function (same formula as
# torchaudio's: HTK or Slaney mel scale, triangular filters, optional Slaney area normalisation).
SHIM_INIT = '''"""Not torchaudio: keyscribe's peer-benchmark stand-in providing only
torchaudio.functional.melscale_fbanks (pure torch), for transkun on a CPU-only torch."""
from . import functional

__version__ = "%s"
''' % SHIM_VERSION
SHIM_FUNCTIONAL = '''import math
import warnings
from typing import Optional

import torch


def _hz_to_mel(freq: float, mel_scale: str = "htk") -> float:
    if mel_scale not in ("slaney", "htk"):
        raise ValueError('mel_scale should be one of "htk" or "slaney".')
    if mel_scale == "htk":
        return 2595.0 * math.log10(1.0 + freq / 700.0)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return min_log_mel + math.log(freq / min_log_hz) / logstep if freq >= min_log_hz else freq / f_sp


def _mel_to_hz(mels: torch.Tensor, mel_scale: str = "htk") -> torch.Tensor:
    if mel_scale not in ("slaney", "htk"):
        raise ValueError('mel_scale should be one of "htk" or "slaney".')
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, math.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    freqs = f_sp * mels
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * torch.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int,
                    norm: Optional[str] = None, mel_scale: str = "htk") -> torch.Tensor:
    """(n_freqs, n_mels) triangular mel filter bank, as torchaudio.functional.melscale_fbanks."""
    if norm is not None and norm != "slaney":
        raise ValueError('norm must be one of None or "slaney"')
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel(f_min, mel_scale), _hz_to_mel(f_max, mel_scale), n_mels + 2)
    f_pts = _mel_to_hz(m_pts, mel_scale)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.max(torch.zeros(1), torch.min(down, up))
    if norm == "slaney":
        fb *= (2.0 / (f_pts[2:n_mels + 2] - f_pts[:n_mels])).unsqueeze(0)
    if (fb.max(dim=0).values == 0.0).any():
        warnings.warn(f"At least one mel filterbank has all zero values (n_mels={n_mels}, n_freqs={n_freqs}).")
    return fb
'''


class PeerError(Exception):
    """A failure reported as one line (setup or run), never as a traceback."""


def one_line(text: str, limit: int = 240) -> str:
    """The last informative line of a tool's or pip's output, shortened to `limit` characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    noise = ("WARNING: Location", "[notice]", "warnings.warn(", "Traceback (most recent call last)")
    lines = [ln for ln in lines if not ln.startswith(noise)]
    errors = [ln for ln in lines if ln.startswith("ERROR") or "Error" in ln.split(":")[0]]
    line = (errors or lines or ["(no output)"])[-1]
    return line if len(line) <= limit else line[:limit - 3] + "..."


# --------------------------------------------------------------------------------------------- setup

def build_shim_wheel(folder: Path) -> Path:
    """A py3-none-any wheel of the torchaudio stand-in (written directly, no build backend needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"torchaudio-{SHIM_VERSION}.dist-info"
    files = {
        "torchaudio/__init__.py": SHIM_INIT,
        "torchaudio/functional.py": SHIM_FUNCTIONAL,
        f"{dist}/METADATA": ("Metadata-Version: 2.1\nName: torchaudio\nVersion: " + SHIM_VERSION + "\n"
                             "Summary: keyscribe peer-benchmark stand-in: only torchaudio.functional.melscale_fbanks\n"
                             "Requires-Dist: torch\n"),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: keyscribe-peers\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/top_level.txt": "torchaudio\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    path = folder / f"torchaudio-{SHIM_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, text)
    return path


@dataclass(frozen=True)
class PeerEnv:
    """How one peer's virtual environment is made: pip steps in order, then an import check."""

    name: str
    steps: tuple[tuple[str, ...], ...]
    check: str  # Python run in the environment; must exit 0
    packages: tuple[str, ...]  # distributions whose versions the results record

    @property
    def path(self) -> Path:
        return ENVS / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def script(self, name: str) -> Path:
        return self.path / "bin" / name


def peer_envs() -> dict[str, PeerEnv]:
    constraints = ENVS / "transkun-constraints.txt"
    shim = ENVS / "wheels" / f"torchaudio-{SHIM_VERSION}-py3-none-any.whl"
    return {
        "transkun": PeerEnv(
            "transkun",
            steps=((TORCH_PIN,), (SETUPTOOLS_PIN,), ("--force-reinstall", "--no-deps", str(shim)),
                   (TRANSKUN_PIN, "-c", str(constraints))),
            check=("import pkg_resources, torch, torchaudio.functional as F, transkun.transcribe, pydub, soxr, "
                   "moduleconf; assert torch.__version__.endswith('+cpu'); "
                   "assert tuple(F.melscale_fbanks(2049, 30, 8000, 229, 44100).shape) == (2049, 229)"),
            packages=("transkun", "torch", "torchaudio", "setuptools", "numpy", "soxr", "pydub")),
        "basic-pitch": PeerEnv(
            "basic-pitch",
            steps=(("--no-deps", BASIC_PITCH_PIN), BASIC_PITCH_DEPS),
            check=("import logging; logging.disable(logging.WARNING); import basic_pitch, basic_pitch.inference; "
                   "assert basic_pitch.ONNX_PRESENT and not basic_pitch.TF_PRESENT"),
            packages=("basic-pitch", "onnxruntime", "librosa", "numpy", "scipy", "resampy", "pretty-midi")),
    }


def _pip(env: PeerEnv, args: tuple[str, ...], log: Path) -> None:
    cmd = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *args]
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = one_line(log.read_text()[-20000:])
        raise PeerError(f"{env.name}: `pip install {' '.join(args)}` failed: {tail} (full log: {_rel(log)})")


def _check(env: PeerEnv) -> str | None:
    """None if the environment imports what the tool needs, else the error line."""
    if not env.python.exists():
        return "no environment"
    proc = subprocess.run([str(env.python), "-c", env.check], capture_output=True, text=True)
    return None if proc.returncode == 0 else one_line(proc.stderr + proc.stdout)


def ensure_env(env: PeerEnv, *, quiet: bool = False) -> None:
    """Create or reuse `env` (idempotent: a stamp records the steps it was made with). Raises PeerError."""
    stamp = env.path / ".keyscribe-peer.json"
    spec = {"steps": [list(s) for s in env.steps], "check": env.check,
            "shim": hashlib.sha256((SHIM_INIT + SHIM_FUNCTIONAL).encode()).hexdigest()[:16]}
    if stamp.is_file() and json.loads(stamp.read_text()) == spec and _check(env) is None:
        if not quiet:
            print(f"{env.name}: reusing {_rel(env.path)}", file=sys.stderr)
        return
    ENVS.mkdir(parents=True, exist_ok=True)
    log = ENVS / f"{env.name}.log"
    log.write_text(f"# {env.name} environment, {dt.datetime.now().isoformat(timespec='seconds')}\n")
    print(f"{env.name}: installing into {_rel(env.path)} (log: {_rel(log)}) ...", file=sys.stderr)
    if not env.python.exists():
        proc = subprocess.run([sys.executable, "-m", "venv", "--clear", str(env.path)], capture_output=True, text=True)
        if proc.returncode != 0 and not env.python.exists():
            # sys.executable may be a venv's python; fall back to the system interpreter
            proc = subprocess.run(["python3", "-m", "venv", str(env.path)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise PeerError(f"{env.name}: cannot create a virtual environment: {one_line(proc.stderr)}")
    if env.name == "transkun":
        build_shim_wheel(ENVS / "wheels")
        (ENVS / "transkun-constraints.txt").write_text(f"{TORCH_PIN}\n{SETUPTOOLS_PIN}\n")
    for step in env.steps:
        _pip(env, step, log)
    problem = _check(env)
    if problem is not None:
        raise PeerError(f"{env.name}: installed but does not import: {problem} (log: {_rel(log)})")
    stamp.write_text(json.dumps(spec, indent=1) + "\n")
    print(f"{env.name}: ready", file=sys.stderr)


def env_versions(env: PeerEnv) -> dict[str, str | None]:
    code = ("import json, importlib.metadata as m, sys\nout = {}\nfor p in sys.argv[1:]:\n"
            "    try: out[p] = m.version(p)\n    except m.PackageNotFoundError: out[p] = None\nprint(json.dumps(out))")
    proc = subprocess.run([str(env.python), "-c", code, *env.packages], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# -------------------------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Item:
    """One input: a 16-bit PCM WAV every tool reads, and its sustained reference labels (.tsv)."""

    set: str
    stem: str
    audio: Path
    ref: Path
    duration_s: float


def _wav_duration(path: Path) -> float:
    import soundfile as sf
    info = sf.info(str(path))
    return info.frames / info.samplerate


def prepare_maps(maps_dir: Path, out: Path, subset: int | None) -> list[Item]:
    """ENSTDkAm recordings decoded once to WAV (lossless: the FLACs are 16-bit), references = their tsv.
    With `subset`, the N shortest recordings."""
    import soundfile as sf
    from keyscribe.data.maps import maps_recordings
    recordings = maps_recordings(maps_dir)
    if not recordings:
        raise PeerError(f"no recordings with tsv labels in {maps_dir}")
    folder = out / "inputs" / "maps"
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for rec in recordings:
        wav = folder / f"{rec.audio_path.stem}.wav"
        if not wav.is_file() or wav.stat().st_mtime < rec.audio_path.stat().st_mtime:
            data, sr = sf.read(str(rec.audio_path), dtype="int16", always_2d=True)
            tmp = wav.with_suffix(".tmp.wav")
            sf.write(str(tmp), data, sr, subtype="PCM_16")
            os.replace(tmp, wav)
        items.append(Item("maps", rec.audio_path.stem, wav, rec.label_path, _wav_duration(wav)))
    if subset:
        items = sorted(items, key=lambda it: (it.duration_s, it.stem))[:subset]
    return items


def validation_jobs(n: int, dataset_dir: Path, config_path: Path) -> tuple[list, object, str]:
    """The first `n` validation jobs (by id) of the dataset's manifest, or, when no built dataset is at
    hand, of the same jobs drawn again from its config (they are reproducible from the seed)."""
    from keyscribe.data.build import DatasetConfig, Job, make_jobs
    config = DatasetConfig.from_toml(config_path)
    manifest = dataset_dir / "manifest.jsonl"
    names = {f.name for f in fields(Job)}
    if manifest.is_file():
        records = [json.loads(ln) for ln in manifest.read_text().splitlines() if ln.strip()]
        jobs = sorted((Job(**{k: r[k] for k in names}) for r in records
                       if r.get("split") == "validation" and "error" not in r and r.get("kind") == "midi"),
                      key=lambda j: j.id)
        if jobs:
            cfg_file = dataset_dir / "config.json"
            if cfg_file.is_file():
                raw = json.loads(cfg_file.read_text())
                raw["pianos"] = tuple(raw.get("pianos", ()))
                config = DatasetConfig(**{k: v for k, v in raw.items() if k in {f.name for f in fields(DatasetConfig)}})
            return jobs[:n], config, f"{_rel(manifest)} (first {n} validation excerpts by id)"
    from keyscribe.data.render import available_pianos
    pianos = list(config.pianos) or available_pianos()
    if not pianos:
        raise PeerError("no piano renderer is installed (run scripts/setup-system.sh)")
    jobs = [j for j in make_jobs(config, pianos) if j.split == "validation"]
    return jobs[:n], config, f"{_rel(config_path)} jobs (first {n} validation excerpts; no built dataset at {_rel(dataset_dir)})"


def clip_reference(window, end_s: float):
    """The window's notes as they sound (pedal applied), cut at `end_s`; no pedal track (as MAPS tsv)."""
    from keyscribe.notes import Note, Performance
    notes = [Note(n.onset_s, min(n.offset_s, end_s), n.pitch, n.velocity)
             for n in window.with_sustain().notes if n.onset_s < end_s - 0.01]
    return Performance(tuple(notes))


def prepare_synth(out: Path, n: int, dataset_dir: Path, config_path: Path) -> tuple[list[Item], str]:
    """A fixed slice of keyscribe's synthetic validation excerpts rendered again to audio (the dataset
    keeps features only), exactly as `keyscribe.data.build.run_job` makes them: the excerpt's window
    (pre-roll included) through its job's piano and seed, then the augmentation chain with the job's seed
    when the dataset is augmented. The whole window is kept (the notes struck before it are struck again
    at its start, audibly); references are the window's notes sustained by its pedal."""
    import numpy as np
    import soundfile as sf
    from keyscribe.data.build import excerpt_window, pre_roll_s
    from keyscribe.data.render import render
    from keyscribe.features import FeatureConfig
    from keyscribe.midi import read_labels, write_tsv
    features = FeatureConfig()
    sr = features.sample_rate
    jobs, config, source = validation_jobs(n, dataset_dir, config_path)
    if not jobs:
        raise PeerError(f"no validation excerpts in {source}")
    folder = out / "inputs" / "synth"
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for job in jobs:
        wav, tsv = folder / f"{job.id}.wav", folder / f"{job.id}.tsv"
        meta = folder / f"{job.id}.json"
        spec = {**asdict(job), "excerpt_s": config.excerpt_s, "sample_rate": sr, "augment": bool(config.augment)}
        if not (wav.is_file() and tsv.is_file() and meta.is_file()
                and json.loads(meta.read_text()).get("spec") == spec):
            perf = read_labels(job.labels)
            pre = pre_roll_s(features)
            start = pre + job.start_fraction * max(perf.end_s - config.excerpt_s - pre, 0.0)
            window = excerpt_window(perf, start, config.excerpt_s, pre)
            audio = render(window, job.piano, sample_rate=sr, seed=job.seed)
            n_window = int(round((pre + config.excerpt_s) * sr))
            audio = np.pad(audio[:n_window], (0, max(0, n_window - audio.size))).astype(np.float32)
            params: dict = {}
            if config.augment:
                from keyscribe.data.augment import augment
                audio, params = augment(audio, sr, np.random.default_rng(job.seed))
            sf.write(str(wav), np.clip(audio, -1.0, 1.0), sr, subtype="PCM_16")
            write_tsv(clip_reference(window, n_window / sr), tsv)
            meta.write_text(json.dumps({"spec": spec, "augment": params}, indent=1) + "\n")
        items.append(Item("synth", job.id, wav, tsv, _wav_duration(wav)))
    return items, source


def silence_wav(out: Path, seconds: float = 1.0, sr: int = 16000) -> Path:
    import numpy as np
    import soundfile as sf
    path = out / "inputs" / "silence-1s.wav"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.zeros(int(seconds * sr), np.int16), sr, subtype="PCM_16")
    return path


# ----------------------------------------------------------------------------------------------- runs

@dataclass
class Measured:
    returncode: int
    wall_s: float
    peak_rss_mb: float | None
    cpu_s: float = 0.0  # user + system CPU time of the process and its waited-for children
    timed_out: bool = False


GNU_TIME = Path("/usr/bin/time")


def run_measured(argv: list[str], *, cores: list[int], env: dict, log: Path, timeout_s: float) -> Measured:
    """Run `argv` pinned to `cores`: wall time from spawn to exit, CPU time (rusage of the process tree)
    and peak RSS of the tool as GNU time reports it (`%M`, the largest process's maximum resident set).

    Peak RSS is not taken from this process's own `os.wait4`: a child spawned from a large Python process
    inherits the parent's high-water mark at exec, so a small tool would report this script's RSS. GNU
    time is a small process between the two."""
    if not GNU_TIME.exists():
        raise PeerError(f"peak RSS needs GNU time at {GNU_TIME} (Debian: apt-get install time)")
    rss_file = log.with_suffix(".rss")
    cmd = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file), "taskset", "-c", ",".join(map(str, cores)), *argv]
    rss_file.unlink(missing_ok=True)
    with open(log, "w") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=str(ROOT), start_new_session=True)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    # time writes "Command exited with non-zero status N" before the value when the tool fails
    lines = rss_file.read_text().split() if rss_file.is_file() else []
    rss_kb = int(lines[-1]) if lines and lines[-1].isdigit() else None
    return Measured(proc.returncode, wall, rss_kb / 1024.0 if rss_kb is not None else None,
                    usage.ru_utime + usage.ru_stime, timed_out.is_set())


@dataclass
class Tool:
    name: str
    argv: object  # (audio: Path, out_dir: Path) -> list[str]
    load_probe: list[str]  # a process that imports the tool and loads its model, then exits
    versions: dict = field(default_factory=dict)
    model: str = ""


# The model-load probes: each does what the tool's command does before it reads audio.
TRANSKUN_LOAD = """
import moduleconf, pkg_resources, torch
import transkun.transcribe
conf = moduleconf.parseFromFile(pkg_resources.resource_filename("transkun.transcribe", "pretrained/2.0.conf"))
weights = pkg_resources.resource_filename("transkun.transcribe", "pretrained/2.0.pt")
checkpoint = torch.load(weights, map_location="cpu")
model = conf["Model"].module.TransKun(conf=conf["Model"].config).to("cpu")
model.load_state_dict(checkpoint.get("best_state_dict", checkpoint.get("state_dict")), strict=False)
model.eval()
"""
BASIC_PITCH_LOAD = """
import sys
import basic_pitch.predict
from basic_pitch.inference import Model
Model(sys.argv[1])
"""
KEYSCRIBE_LOAD = """
import sys
import keyscribe.cli, keyscribe.transcribe
from keyscribe.inference import load_model
load_model(sys.argv[1] or None, device="cpu")
"""


def keyscribe_model_file(model: Path | None) -> Path:
    from keyscribe.inference import default_model_path
    return Path(model) if model else default_model_path()


def keyscribe_models_present(model: Path | None = None) -> bool:
    try:
        return keyscribe_model_file(model).exists()
    except Exception:
        return False


def make_tool(name: str, *, keyscribe_model: Path | None = None, quiet: bool = False) -> Tool:
    """The tool's command line, its environment set up (peers) or checked (keyscribe). Raises PeerError."""
    if name == "keyscribe":
        exe = Path(sys.executable).parent / "keyscribe"
        if not exe.exists():
            found = shutil.which("keyscribe")
            if not found:
                raise PeerError("keyscribe: no `keyscribe` command (run `make install`)")
            exe = Path(found)
        probe = subprocess.run([str(exe), "transcribe", "--help"], capture_output=True, text=True)
        if probe.returncode != 0:
            raise PeerError("keyscribe: the `keyscribe transcribe` command is not available in this checkout")
        if not keyscribe_models_present(keyscribe_model):
            try:
                where = _rel(keyscribe_model_file(keyscribe_model))
            except Exception:
                where = "src/keyscribe/models/"
            raise PeerError(f"keyscribe model not found ({where})")
        model_file = keyscribe_model_file(keyscribe_model)
        extra = ["--model", str(model_file)] if keyscribe_model else []
        st = model_file.stat()
        try:
            model_id = json.loads(model_file.with_suffix(".json").read_text()).get("model_id")
        except (OSError, ValueError):
            model_id = model_file.stem
        versions = {"keyscribe": _keyscribe_version(), "model_id": model_id, "model_file": _rel(model_file),
                    "model_bytes": st.st_size,
                    "model_mtime": dt.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds")}
        return Tool(name, lambda audio, out: [str(exe), "transcribe", str(audio), "-o", str(out), "--formats", "midi",
                                              "--device", "cpu", "--quiet", *extra],
                    [sys.executable, "-c", KEYSCRIBE_LOAD, str(keyscribe_model or "")], versions, _rel(model_file))
    env = peer_envs()[name]
    ensure_env(env, quiet=quiet)
    versions = env_versions(env)
    if name == "transkun":
        exe = env.script("transkun")
        return Tool(name, lambda audio, out: [str(exe), str(audio), str(out / f"{audio.stem}.mid"), "--device", "cpu"],
                    [str(env.python), "-c", TRANSKUN_LOAD], versions, "transkun/pretrained/2.0.pt (bundled)")
    exe = env.script("basic-pitch")
    onnx = sorted(env.path.glob("lib/python*/site-packages/basic_pitch/saved_models/icassp_2022/nmp.onnx"))
    if not onnx:
        raise PeerError(f"basic-pitch: bundled nmp.onnx not found in {_rel(env.path)}")
    return Tool(name, lambda audio, out: [str(exe), str(out), str(audio), "--model-path", str(onnx[0])],
                [str(env.python), "-c", BASIC_PITCH_LOAD, str(onnx[0])], versions,
                "basic_pitch/saved_models/icassp_2022/nmp.onnx (bundled)")


def _keyscribe_version() -> str:
    import keyscribe
    from keyscribe.provenance import source_commit
    return f"{keyscribe.__version__} ({source_commit() or 'not a git checkout'})"


def child_env(n_threads: int) -> dict:
    """The same environment for every tool: no venv leaking in, the same thread budget."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(n_threads)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def transcribe_one(tool: Tool, audio: Path, dest: Path, *, cores: list[int], env: dict, timeout_s: float,
                   log: Path) -> tuple[Measured, str | None]:
    """Run the tool on one file in a fresh folder; move its single MIDI to `dest`. (measurement, error)"""
    work = OUT / "work" / tool.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    m = run_measured(tool.argv(audio, work), cores=cores, env=env, log=log, timeout_s=timeout_s)
    midis = sorted(p for p in work.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    if m.timed_out:
        return m, f"timed out after {timeout_s:.0f} s"
    if m.returncode != 0:
        return m, f"exit {m.returncode}: {one_line(log.read_text(errors='replace'))}"
    if len(midis) != 1:
        what = "no MIDI written" if not midis else f"{len(midis)} MIDI files written"
        return m, f"{what}: {one_line(log.read_text(errors='replace'))}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(midis[0]), dest)
    return m, None


# ------------------------------------------------------------------------------------------- scoring

def has_velocity(perf) -> bool:
    """Whether a transcription carries velocities: more than one distinct value among its notes."""
    return len({n.velocity for n in perf.notes}) > 1


def score_file(ref_path: Path, est_path: Path) -> tuple[dict, int, bool]:
    """(scores, estimated notes, velocity scored); note-with-velocity is dropped when the estimate has
    no velocities of its own."""
    from keyscribe.evaluate import evaluate_performance
    from keyscribe.midi import read_labels, read_midi
    ref, est = read_labels(ref_path), read_midi(est_path)
    scores = evaluate_performance(ref, est, pedal_extend=True)
    velocity = has_velocity(est)
    if not velocity:
        scores = {k: v for k, v in scores.items() if not k.startswith("note_offset_velocity/")}
    return scores, len(est.notes), velocity


def summarise(rows: list[dict]) -> dict:
    """Means over one tool's rows of one set: metrics over scored files, speed over timed files."""
    from keyscribe.evaluate import mean_scores
    ok = [r for r in rows if r.get("scores") is not None]
    audio = sum(r["duration_s"] for r in ok)
    wall = sum(r["wall_s"] for r in ok)
    cpu = sum(r.get("cpu_s", 0.0) for r in ok)
    return {
        "files": len(rows), "scored": len(ok), "failed": len(rows) - len(ok),
        "scores": mean_scores({r["file"]: r["scores"] for r in ok}) if ok else None,
        "audio_s": audio, "wall_s": wall, "cpu_s": cpu,
        "cpu_per_audio_s": cpu / audio if audio > 0 else None,
        "mean_wall_s": wall / len(ok) if ok else None,
        "xrt": audio / wall if wall > 0 else None,
        "peak_rss_mb": max((r["peak_rss_mb"] for r in ok if r["peak_rss_mb"] is not None), default=None),
    }


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_peer_table(results: dict) -> str:
    """One table: a row per (set, tool) with the mean F1s, model load, wall, x real time, CPU seconds per
    second of audio and peak RSS."""
    head = (f"{'set':<6} {'tool':<12} {'files':>6} {'frame':>6} {'note':>6} {'n+off':>6} {'n+o+vel':>7} "
            f"{'load s':>7} {'wall s':>8} {'x RT':>6} {'CPU/aud':>7} {'RSS MB':>7}")
    lines = [head, "-" * len(head)]
    for set_name, per_tool in results["sets"].items():
        for tool_name, block in per_tool.items():
            tool = results["tools"].get(tool_name, {})
            if tool.get("error"):
                lines.append(f"{set_name:<6} {tool_name:<12} {'-':>6}  not run: {tool['error']}")
                continue
            s = block["summary"]
            scores = s["scores"] or {}
            f1 = [scores.get(f"{m}/f1") for m in TABLE_METRICS]
            files = f"{s['scored']}/{s['files']}"
            lines.append(f"{set_name:<6} {tool_name:<12} {files:>6} {_cell(f1[0], '.3f'):>6} {_cell(f1[1], '.3f'):>6} "
                         f"{_cell(f1[2], '.3f'):>6} {_cell(f1[3], '.3f'):>7} {_cell(tool.get('load_s'), '.1f'):>7} "
                         f"{_cell(s['wall_s'] if s['scored'] else None, '.1f'):>8} {_cell(s['xrt'], '.2f'):>6} "
                         f"{_cell(s.get('cpu_per_audio_s'), '.2f'):>7} {_cell(s['peak_rss_mb'], '.0f'):>7}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main

def machine_info(cores: list[int]) -> dict:
    def first(path: str, key: str) -> str | None:
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return None
    mem_kb = first("/proc/meminfo", "MemTotal")
    return {
        "cpu": first("/proc/cpuinfo", "model name"), "cpu_count": os.cpu_count(), "cores_used": cores,
        "ram_gb": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "os": platform.platform(), "python": platform.python_version(), "nice": os.nice(0),
        "loadavg_start": list(os.getloadavg()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, from {', '.join(TOOLS)}")
    p.add_argument("--sets", default=",".join(SETS),
                   help="maps: the real ENSTDkAm recordings; synth: a slice of keyscribe's synthetic validation set")
    p.add_argument("--subset", type=int, default=None, metavar="N",
                   help="quick run: the N shortest ENSTDkAm recordings and the first N synthetic excerpts")
    p.add_argument("--synth-excerpts", type=int, default=10, help="size of the synthetic slice (default 10)")
    p.add_argument("--maps-dir", type=Path, default=MAPS_DIR)
    p.add_argument("--dataset", type=Path, default=DATASET_DIR,
                   help="built dataset whose manifest lists the validation excerpts (else drawn from --dataset-config)")
    p.add_argument("--dataset-config", type=Path, default=DATASET_CONFIG)
    p.add_argument("--keyscribe-model", type=Path, default=None,
                   help="benchmark this keyscribe model file (.onnx or checkpoint .pt) instead of the shipped one")
    p.add_argument("--cores", default=None, help="CPU ids every tool is pinned to (default: the first two available)")
    p.add_argument("--timeout-factor", type=float, default=30.0,
                   help="a run is stopped after 120 s + this many times the audio's duration")
    p.add_argument("--resume", action="store_true",
                   help="reuse measurements of an earlier (interrupted) run with the same tools, inputs and cores")
    p.add_argument("--out", type=Path, default=None,
                   help="results JSON (default benchmarks/results/peers-DATE.json, -subsetN for quick runs)")
    p.add_argument("--setup-only", action="store_true", help="set up the peers' environments and stop")
    args = p.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for t in args.tools:
        if t not in TOOLS:
            p.error(f"unknown tool {t!r}; choose from {', '.join(TOOLS)}")
    for s in args.sets:
        if s not in SETS:
            p.error(f"unknown set {s!r}; choose from {', '.join(SETS)}")
    if args.subset is not None and args.subset < 1:
        p.error("--subset must be at least 1")
    for name in ("maps_dir", "dataset", "dataset_config", "keyscribe_model", "out"):  # main() changes directory
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    return args


def pick_cores(spec: str | None) -> list[int]:
    available = sorted(os.sched_getaffinity(0))
    if spec:
        cores = [int(c) for c in spec.split(",")]
        missing = set(cores) - set(available)
        if missing:
            raise PeerError(f"cores {sorted(missing)} are not available (available: {available})")
        return cores
    return available[:2]


class Cache:
    """Measurements kept per (tool, input) so that `--resume` can finish an interrupted run; an entry is
    used only when the tool's versions, the input file and the cores are the same."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.folder, self.enabled = folder, enabled

    def _path(self, tool: str, name: str) -> Path:
        return self.folder / tool / f"{name}.json"

    def get(self, tool: str, name: str, key: dict) -> dict | None:
        path = self._path(tool, name)
        if not self.enabled or not path.is_file():
            return None
        entry = json.loads(path.read_text())
        return entry["value"] if entry.get("key") == key else None

    def put(self, tool: str, name: str, key: dict, value: dict) -> None:
        path = self._path(tool, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "value": value}, indent=1) + "\n")


def _file_key(path: Path) -> list:
    st = path.stat()
    return [_rel(path), st.st_size, st.st_mtime_ns]


def prepare_tool(tool: Tool, *, cores: list[int], env: dict, cache: Cache, base_key: dict) -> dict:
    """Warm-up on one second of silence (a check that the tool runs, and warm page/JIT caches), then the
    model-load probe: {"load_s", "load_rss_mb", "silence_s"}. Raises PeerError."""
    cached = cache.get(tool.name, "_load", base_key)
    if cached is not None:
        return {**cached, "cached": True}
    logs = OUT / "logs" / tool.name
    silence = silence_wav(OUT)
    m, err = transcribe_one(tool, silence, OUT / "est" / tool.name / "silence.mid", cores=cores, env=env,
                            timeout_s=900, log=logs / "silence.log")
    if err:
        raise PeerError(f"{tool.name}: cannot transcribe 1 s of silence: {err} (log: {_rel(logs / 'silence.log')})")
    probe = run_measured(tool.load_probe, cores=cores, env=env, log=logs / "load.log", timeout_s=900)
    if probe.returncode != 0 or probe.timed_out:
        raise PeerError(f"{tool.name}: model-load probe failed: {one_line((logs / 'load.log').read_text())}")
    value = {"load_s": probe.wall_s, "load_cpu_s": probe.cpu_s, "load_rss_mb": probe.peak_rss_mb,
             "silence_s": m.wall_s, "silence_cpu_s": m.cpu_s,
             "measured_at": dt.datetime.now().isoformat(timespec="seconds")}
    cache.put(tool.name, "_load", base_key, value)
    return value


def run_item(tool: Tool, item: Item, *, cores: list[int], env: dict, cache: Cache, base_key: dict,
             timeout_factor: float) -> dict:
    """Transcribe one input with one tool (or reuse the cached measurement) and score its MIDI."""
    dest = OUT / "est" / tool.name / item.set / f"{item.stem}.mid"
    key = {**base_key, "input": _file_key(item.audio)}
    cached = cache.get(tool.name, f"{item.set}/{item.stem}", key)
    if cached is not None and (cached["error"] or dest.is_file()):
        row = {**cached, "cached": True}
    else:
        load_before = os.getloadavg()[0]
        m, err = transcribe_one(tool, item.audio, dest, cores=cores, env=env,
                                timeout_s=120 + timeout_factor * item.duration_s,
                                log=OUT / "logs" / tool.name / item.set / f"{item.stem}.log")
        row = {"tool": tool.name, "set": item.set, "file": item.stem, "duration_s": item.duration_s,
               "wall_s": m.wall_s, "xrt": item.duration_s / m.wall_s if m.wall_s > 0 else None,
               "cpu_s": m.cpu_s, "peak_rss_mb": m.peak_rss_mb, "loadavg_1m": load_before, "error": err,
               "measured_at": dt.datetime.now().isoformat(timespec="seconds")}
        cache.put(tool.name, f"{item.set}/{item.stem}", key, row)
    row["scores"] = None
    if row["error"] is None:
        try:
            row["scores"], row["est_notes"], row["velocity_scored"] = score_file(item.ref, dest)
        except Exception as exc:  # an unreadable MIDI is the tool's failure on this file
            row["error"] = f"scoring failed: {type(exc).__name__}: {exc}"
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "src"))
    failures: list[str] = []
    tools: dict[str, Tool] = {}
    tool_info: dict[str, dict] = {}
    for name in args.tools:
        try:
            tools[name] = make_tool(name, keyscribe_model=args.keyscribe_model)
            tool_info[name] = {"versions": tools[name].versions, "model": tools[name].model}
        except Exception as exc:  # PeerError, or anything unforeseen while installing: one line each
            msg = str(exc) if isinstance(exc, PeerError) else f"{name}: setup failed: {type(exc).__name__}: {exc}"
            print(f"peers: {msg}", file=sys.stderr)
            failures.append(msg)
            tool_info[name] = {"error": msg}
    if args.setup_only:
        return 1 if failures else 0

    cores = pick_cores(args.cores)
    env = child_env(len(cores))
    machine = machine_info(cores)
    items: list[Item] = []
    sources: dict[str, str] = {}
    for set_name in args.sets:
        try:
            if set_name == "maps":
                items += prepare_maps(args.maps_dir, OUT, args.subset)
                sources["maps"] = _rel(args.maps_dir)
            else:
                n = min(args.synth_excerpts, args.subset) if args.subset else args.synth_excerpts
                synth, sources["synth"] = prepare_synth(OUT, n, args.dataset, args.dataset_config)
                items += synth
        except PeerError as exc:
            print(f"peers: {set_name} set skipped: {exc}", file=sys.stderr)
            failures.append(f"{set_name}: {exc}")
        except Exception as exc:  # a renderer or data problem: one line, the other set still runs
            msg = f"{set_name} set skipped: {type(exc).__name__}: {exc}"
            print(f"peers: {msg}", file=sys.stderr)
            failures.append(msg)

    cache = Cache(OUT / "cache", args.resume)
    rows: list[dict] = []
    for name, tool in tools.items():
        base_key = {"versions": tool.versions, "cores": cores, "method": MEASURE_VERSION}
        try:
            tool_info[name].update(prepare_tool(tool, cores=cores, env=env, cache=cache, base_key=base_key))
        except PeerError as exc:
            msg = str(exc)
            print(f"peers: {msg}", file=sys.stderr)
            failures.append(msg)
            tool_info[name]["error"] = msg
            continue
        info = tool_info[name]
        print(f"{name}: model load {info['load_s']:.1f} s ({_cell(info['load_rss_mb'], '.0f')} MB); "
              f"1 s of silence end to end {info['silence_s']:.1f} s", file=sys.stderr)
        for item in items:
            row = run_item(tool, item, cores=cores, env=env, cache=cache, base_key=base_key,
                           timeout_factor=args.timeout_factor)
            status = row["error"] or (f"note F1 {row['scores']['note/f1']:.3f}, {row['wall_s']:.1f} s "
                                      f"({row['xrt']:.2f}x RT), {_cell(row['peak_rss_mb'], '.0f')} MB")
            print(f"{name} {item.set}/{item.stem}: {status}{' (cached)' if row.get('cached') else ''}", file=sys.stderr)
            rows.append(row)

    machine["loadavg_end"] = list(os.getloadavg())
    results = {
        "date": dt.date.today().isoformat(),
        "command": " ".join([".venv/bin/python", _rel(Path(__file__))] + (sys.argv[1:] if argv is None else argv)),
        "machine": machine,
        "settings": {
            "cores": cores, "thread_env": len(cores), "pedal_extend": True, "subset": args.subset,
            "resume": args.resume, "sources": sources,
            "inputs": "16-bit PCM WAV at the recordings' own rate (16 kHz); each tool resamples as it does itself",
            "wall": "process start to exit, audio file in -> MIDI written, model load included",
            "load": "a process that imports the tool and loads its model, then exits (same cores)",
            "xrt": "seconds of audio per second of wall time",
            "velocity": "note_offset_velocity only for estimates with more than one distinct velocity",
        },
        "tools": tool_info,
        "sets": {},
        "rows": rows,
        "failures": failures,
    }
    for set_name in args.sets:
        if not any(i.set == set_name for i in items):
            continue
        set_rows = [r for r in rows if r["set"] == set_name]
        results["sets"][set_name] = {name: {"summary": summarise([r for r in set_rows if r["tool"] == name])}
                                     for name in args.tools}
    out = args.out or RESULTS / (f"peers-{results['date']}" + (f"-subset{args.subset}" if args.subset else "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(format_peer_table(results))
    print(f"\nF1 means over files; load = import + model load (own process); wall = sum over files, end to end; "
          f"x RT = audio s / wall s; CPU/aud = CPU s per audio s; RSS = peak over files; "
          f"{len(cores)} cores ({','.join(map(str, cores))}). Results: {_rel(out)}")
    for f in failures:
        print(f"peers: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PeerError as exc:
        print(f"peers: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
