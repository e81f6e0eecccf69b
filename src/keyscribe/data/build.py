"""`keyscribe render-dataset`: performances rendered through random pianos and rooms into shards.

Every excerpt is one job: a performance (ASAP MIDI through a renderer, or a MAPS synthetic recording),
a start time, a piano and a seed. Its log-mel features (float16) and label rolls (uint8) are written
as two .npy files that training memory-maps; `manifest.jsonl` records each job's source, piano,
augmentation parameters and seed. Jobs whose files exist are skipped, so an interrupted build resumes.
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from keyscribe.config import from_table
from keyscribe.data.maps import maps_training_recordings
from keyscribe.data.splits import asap_performances
from keyscribe.features import FeatureConfig, log_mel
from keyscribe.labels import notes_to_rolls
from keyscribe.midi import read_labels
from keyscribe.notes import N_KEYS, Note, PedalInterval, Performance

LABEL_LAYOUT = ("onset", "offset", "frame", "velocity")  # each N_KEYS columns, then one pedal column
LABEL_COLUMNS = len(LABEL_LAYOUT) * N_KEYS + 1


@dataclass(frozen=True)
class DatasetConfig:
    """How much to render and from what. Times in seconds."""

    asap_dir: str = "../shared/data/asap"
    maps_synth_dir: str = "../shared/data/maps/synth"
    train_hours: float = 20.0
    validation_hours: float = 1.0
    excerpt_s: float = 20.0
    maps_share: float = 0.1  # fraction of training excerpts cut from MAPS synthetic recordings
    pianos: tuple[str, ...] = ()  # empty: every installed piano
    augment: bool = True
    # Dynamics of rendered excerpts (MIDI sources only): velocities v become
    # scale * (median + spread * (v - median)), with scale log-uniform and spread uniform in these ranges
    # per excerpt; (1, 1) leaves them as played. ASAP's competition performances are loud (median
    # velocity 67), so soft playing is rare in them, and it is where the models miss most notes.
    velocity_scale: tuple[float, float] = (1.0, 1.0)
    velocity_spread: tuple[float, float] = (1.0, 1.0)
    seed: int = 0
    workers: int = 2

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "DatasetConfig":
        with open(path, "rb") as f:
            raw = tomllib.load(f).get("dataset", {})
        return from_table(cls, raw, path, "dataset")


@dataclass(frozen=True)
class Job:
    """One excerpt to make: `source` is a MIDI path (rendered through `piano`) or a MAPS audio path."""

    id: str
    split: str
    source: str
    labels: str
    start_fraction: float  # where in [0, duration - excerpt] the excerpt starts, 0..1
    piano: str
    seed: int
    kind: str  # "midi" or "audio"


def pre_roll_s(features: FeatureConfig) -> float:
    """Context rendered before an excerpt so that notes struck earlier ring into it; a whole number of
    hops long, so the excerpt's frames line up with the window's."""
    return 64 * features.hop_length / features.sample_rate


def excerpt_window(perf: Performance, start_s: float, length_s: float, pre_s: float) -> Performance:
    """The notes and pedal of `perf` that sound in [start - pre, start + length), moved so that the
    window starts at 0. A note struck before the window and still sounding is re-struck at 0: its
    attack lands in the pre-roll, which is cut off, so the excerpt hears it ringing without an onset."""
    t0, t1 = start_s - pre_s, start_s + length_s
    sounding = perf.with_sustain().notes
    notes = []
    for pressed, heard in zip(perf.notes, sounding):
        if heard.offset_s <= t0 or pressed.onset_s >= t1:
            continue
        onset = max(pressed.onset_s, t0)
        offset = max(pressed.offset_s, onset + 0.05)
        notes.append(Note(onset - t0, min(offset, t1 + 5.0) - t0, pressed.pitch, pressed.velocity))
    pedals = [PedalInterval(max(p.onset_s, t0) - t0, min(p.offset_s, t1 + 5.0) - t0)
              for p in perf.pedals if p.offset_s > t0 and p.onset_s < t1]
    return Performance(tuple(notes), tuple(pedals))


def remap_velocities(perf: Performance, scale: float, spread: float) -> Performance:
    """`perf` played with other dynamics: each velocity v becomes scale * (m + spread * (v - m)), m the
    median velocity, rounded and kept in 1..127. Timing, pitches and pedal are unchanged."""
    if not perf.notes:
        return perf
    m = float(np.median([n.velocity for n in perf.notes]))
    notes = tuple(replace(n, velocity=int(np.clip(round(scale * (m + spread * (n.velocity - m))), 1, 127)))
                  for n in perf.notes)
    return Performance(notes, perf.pedals)


def draw_dynamics(config: DatasetConfig, rng: np.random.Generator) -> tuple[float, float]:
    """(scale, spread) for one excerpt, as `DatasetConfig.velocity_scale` / `velocity_spread` describe."""
    lo, hi = config.velocity_scale
    scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return scale, float(rng.uniform(*config.velocity_spread))


def excerpt_labels(window: Performance, pre_s: float, n_frames: int, features: FeatureConfig,
                   sustained: bool = False) -> np.ndarray:
    """(n_frames, LABEL_COLUMNS) uint8 rolls of the excerpt after the pre-roll."""
    perf = window if sustained else window.with_sustain()
    pre_frames = int(round(pre_s * features.frame_rate))
    rolls = notes_to_rolls(perf.notes, perf.pedals, pre_frames + n_frames, features.frame_rate)
    columns = [getattr(rolls, name)[pre_frames:] for name in LABEL_LAYOUT] + [rolls.pedal[pre_frames:, None]]
    return np.concatenate(columns, axis=1)


def make_jobs(config: DatasetConfig, pianos: list[str]) -> list[Job]:
    """Every excerpt of the dataset, drawn reproducibly from `config.seed`."""
    rng = np.random.default_rng(config.seed)
    splits = asap_performances(config.asap_dir)
    jobs: list[Job] = []
    for split, hours in (("train", config.train_hours), ("validation", config.validation_hours)):
        n_total = int(round(hours * 3600 / config.excerpt_s))
        n_maps = int(round(n_total * config.maps_share)) if split == "train" else 0
        sources = [(str(p.midi_path), str(p.midi_path), "midi") for p in splits[split]]
        order = rng.permutation(len(sources))
        for i in range(n_total - n_maps):
            src, labels, kind = sources[order[i % len(sources)]]
            jobs.append(Job(f"{split}-{len(jobs):06d}", split, src, labels, float(rng.random()),
                            pianos[int(rng.integers(len(pianos)))], int(rng.integers(2**31)), kind))
        maps = maps_training_recordings(config.maps_synth_dir) if n_maps else []
        for i in range(n_maps if maps else 0):
            rec = maps[int(rng.integers(len(maps)))]
            jobs.append(Job(f"{split}-{len(jobs):06d}", split, str(rec.audio_path), str(rec.label_path),
                            float(rng.random()), f"maps-{rec.piano}", int(rng.integers(2**31)), "audio"))
    return jobs


def shard_paths(out_dir: Path, job_id: str) -> tuple[Path, Path]:
    return out_dir / "shards" / f"{job_id}.mel.npy", out_dir / "shards" / f"{job_id}.labels.npy"


def _excerpt_audio(job: Job, config: DatasetConfig, features: FeatureConfig
                   ) -> tuple[np.ndarray, Performance, float, bool, dict]:
    """(audio of window, window labels, pre-roll s, labels already sustained, dynamics drawn) for one job."""
    sr = features.sample_rate
    perf = read_labels(job.labels)
    pre = pre_roll_s(features)
    if job.kind == "midi":
        from keyscribe.data.render import render
        start = pre + job.start_fraction * max(perf.end_s - config.excerpt_s - pre, 0.0)
        window = excerpt_window(perf, start, config.excerpt_s, pre)
        dynamics = {}
        if (config.velocity_scale, config.velocity_spread) != ((1.0, 1.0), (1.0, 1.0)):
            # a stream of its own, so excerpts without it keep the renders and augmentations they had
            scale, spread = draw_dynamics(config, np.random.default_rng([job.seed, 1]))
            window = remap_velocities(window, scale, spread)
            dynamics = {"velocity_scale": scale, "velocity_spread": spread}
        audio = render(window, job.piano, sample_rate=sr, seed=job.seed)
        sustained = False
    else:
        from keyscribe.audio import load_audio
        full = load_audio(job.source, sample_rate=sr)
        start = pre + job.start_fraction * max(full.size / sr - config.excerpt_s - pre, 0.0)
        start = round(start * features.frame_rate) / features.frame_rate  # keep labels on the frame grid
        first = int(round((start - pre) * sr))
        audio = full[first: first + int(round((pre + config.excerpt_s) * sr))]
        window = excerpt_window(perf, start, config.excerpt_s, pre)
        sustained, dynamics = True, {}
    n_window = int(round((pre + config.excerpt_s) * sr))
    audio = np.pad(audio[:n_window], (0, max(0, n_window - audio.size)))
    return audio.astype(np.float32), window, pre, sustained, dynamics


def run_job(job: Job, config: DatasetConfig, out_dir: Path, features: FeatureConfig = FeatureConfig()) -> dict:
    """Render, augment, featurise and label one excerpt; write its shard files atomically."""
    mel_path, label_path = shard_paths(out_dir, job.id)
    audio, window, pre, sustained, dynamics = _excerpt_audio(job, config, features)
    augment_params: dict = {}
    if config.augment:
        from keyscribe.data.augment import augment
        audio, augment_params = augment(audio, features.sample_rate, np.random.default_rng(job.seed))
    excerpt = audio[int(round(pre * features.sample_rate)):]
    mel = log_mel(excerpt, features).astype(np.float16)
    labels = excerpt_labels(window, pre, mel.shape[0], features, sustained)
    for path, array in ((mel_path, mel), (label_path, labels)):
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, array)
        os.replace(tmp, path)
    return {**asdict(job), "frames": int(mel.shape[0]), "has_pedal": not sustained, "augment": augment_params,
            **({"dynamics": dynamics} if dynamics else {})}


def _run_job_safely(args: tuple[Job, DatasetConfig, Path]) -> dict:
    job, config, out_dir = args
    try:
        return run_job(job, config, out_dir)
    except Exception as exc:  # one broken source must not stop a long build; it is recorded instead
        return {**asdict(job), "error": f"{type(exc).__name__}: {exc}"}


def build_dataset(config: DatasetConfig, out_dir: str | os.PathLike) -> dict:
    """Make every job not yet on disk; append to `manifest.jsonl`; return counts per split."""
    out = Path(out_dir)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    if config.pianos:
        pianos = list(config.pianos)
    else:
        from keyscribe.data.render import available_pianos
        pianos = available_pianos()
    jobs = make_jobs(config, pianos)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    done = {json.loads(line)["id"] for line in _read_lines(out / "manifest.jsonl")}
    # Validation first: a training run started while the build goes on can already validate.
    todo = sorted((j for j in jobs if j.id not in done), key=lambda j: j.split != "validation")
    with open(out / "manifest.jsonl", "a") as manifest, get_context("spawn").Pool(config.workers) as pool:
        results = pool.imap_unordered(_run_job_safely, [(j, config, out) for j in todo], chunksize=4)
        for record in tqdm(results, total=len(todo), desc="render-dataset", unit="excerpt"):
            manifest.write(json.dumps(record) + "\n")
            manifest.flush()
    return summarise_manifest(out)


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def summarise_manifest(out_dir: str | os.PathLike, features: FeatureConfig = FeatureConfig()) -> dict:
    """Excerpts, hours and failures per split and per piano, and the size on disk."""
    out = Path(out_dir)
    summary: dict = {}
    for line in _read_lines(out / "manifest.jsonl"):
        record = json.loads(line)
        split = summary.setdefault(record["split"], {"excerpts": 0, "hours": 0.0, "failed": 0, "pianos": {}})
        if "error" in record:
            split["failed"] += 1
            continue
        split["excerpts"] += 1
        split["hours"] += record["frames"] / features.frame_rate / 3600
        split["pianos"][record["piano"]] = split["pianos"].get(record["piano"], 0) + 1
    summary["bytes"] = sum(p.stat().st_size for p in (out / "shards").glob("*.npy"))
    return summary
