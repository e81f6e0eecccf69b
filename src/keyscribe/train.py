"""`keyscribe train --config FILE`: train a transcription model on a rendered dataset.

Adam with step decay (then optionally a cosine anneal), BCE or focal loss on onset/offset/frame,
velocity regression on onset frames, sustain-pedal BCE where the source has a pedal track, L2 weight
decay, gradient accumulation and clipping (after accumulation, before the step), optional CPU bf16
autocast. Checkpoints `latest.pt` every `checkpoint_every` steps and `best.pt` on the best validation
note F1; a run resumes from its `latest.pt`. With `torchrun --nproc-per-node N`, trains with
DistributedDataParallel (gloo on CPU, nccl on CUDA); rank 0 logs, validates and checkpoints.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from keyscribe.config import from_table
from keyscribe.data.shards import Excerpt, cooccurrence_from_excerpts, label_rates, load_split, random_batch
from keyscribe.decode import DecodeConfig, decode_notes, decode_pedals
from keyscribe.errors import KeyscribeError
from keyscribe.evaluate import error_types, evaluate_performance, mean_scores, recall_by_velocity, summarise_errors
from keyscribe.features import FeatureConfig
from keyscribe.labels import roll_to_pedals, rolls_to_notes
from keyscribe.model import HEADS, ModelConfig, Transcriber, count_parameters, init_biases_at_priors
from keyscribe.notes import N_KEYS, Performance
from keyscribe.warm_start import freeze_batch_norm, warm_start


@dataclass(frozen=True)
class TrainConfig:
    datasets: tuple[str, ...] = ("work/dataset",)  # rendered dataset folders, mixed excerpt by excerpt
    run_dir: str = "runs/crgcn"
    batch_size: int = 8
    sequence_frames: int = 320
    learning_rate: float = 6e-4
    lr_step: int = 5000  # step decay: the rate is multiplied by lr_gamma every lr_step steps ...
    lr_gamma: float = 0.9
    anneal_from: int = 0  # ... until this step (0: never), then a cosine to lr_final over anneal_steps
    anneal_steps: int = 10_000
    lr_final: float = 3e-5
    weight_decay: float = 1e-6
    loss: str = "bce"  # or "focal"
    focal_gamma: float = 2.0
    onset_pos_weight: float = 1.0  # class weighting of the rare positive onset/offset frames
    grad_accumulation: int = 1
    clip_grad_norm: float = 3.0
    ema_decay: float = 0.0  # weights' exponential moving average, validated and saved as the model (0: off)
    bf16: bool = False
    max_steps: int = 100_000
    max_hours: float = 0.0  # stop after this much wall time (0: no limit); the run resumes later
    checkpoint_every: int = 200
    validate_every: int = 1000
    validation_excerpts: int = 120
    patience: int = 10  # validations without a better note F1 before early stopping
    reload_every: int = 500  # steps between re-reading the manifests, to pick up excerpts a running build adds
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # An exported model (.onnx) whose weights start a new run (`warm_start`); its batch norms, folded into
    # the convolutions on export, then stay frozen for the whole run.
    init_from: str = ""


def load_configs(path: str | os.PathLike) -> tuple[ModelConfig, TrainConfig, DecodeConfig]:
    """[model], [train] and [decode] tables of a TOML file; unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise KeyscribeError(f"{path}: no such config file")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    return tuple(from_table(cls, raw.get(table, {}), path, table)  # type: ignore[return-value]
                 for table, cls in (("model", ModelConfig), ("train", TrainConfig), ("decode", DecodeConfig)))


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """The learning rate for optimiser step `step` (0-based): a pure function of the step, so a resumed
    run follows the config it is resumed with."""
    if not config.anneal_from or step <= config.anneal_from:
        return config.learning_rate * config.lr_gamma ** (step // config.lr_step)
    start = learning_rate_at(config.anneal_from, config)
    done = min(1.0, (step - config.anneal_from) / max(config.anneal_steps, 1))
    return config.lr_final + (start - config.lr_final) * 0.5 * (1 + math.cos(math.pi * done))


def split_targets(labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """(B, T, columns) uint8 labels -> float targets per head; velocity scaled to 0..1."""
    targets = {name: labels[..., i * N_KEYS:(i + 1) * N_KEYS].float() for i, name in enumerate(HEADS)}
    targets["velocity"] = targets["velocity"] / 127.0
    targets["pedal"] = labels[..., -1].float()
    return targets


def _binary_loss(logits: torch.Tensor, target: torch.Tensor, config: TrainConfig, pos_weight: float) -> torch.Tensor:
    weight = torch.tensor(pos_weight, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
    if config.loss == "focal":
        p = torch.sigmoid(logits)
        p_t = p * target + (1 - p) * (1 - target)
        bce = bce * (1 - p_t) ** config.focal_gamma
    return bce.mean()


def losses(out: dict[str, torch.Tensor], labels: torch.Tensor, has_pedal: torch.Tensor,
           config: TrainConfig) -> dict[str, torch.Tensor]:
    """Each head's loss; velocity counts only where an onset is, pedal only for sources with pedal."""
    t = split_targets(labels)
    result = {name: _binary_loss(out[name].float(), t[name], config, config.onset_pos_weight if name != "frame" else 1.0)
              for name in ("onset", "offset", "frame")}
    onset_mask = t["onset"]
    velocity_error = (torch.sigmoid(out["velocity"].float()) - t["velocity"]) ** 2 * onset_mask
    result["velocity"] = velocity_error.sum() / onset_mask.sum().clamp(min=1)
    pedal_target = torch.stack([_pedal_edges(t["pedal"], 1), _pedal_edges(t["pedal"], -1), t["pedal"]], dim=-1)
    pedal_loss = F.binary_cross_entropy_with_logits(out["pedal"].float(), pedal_target, reduction="none")
    mask = has_pedal.float()[:, None, None]
    result["pedal"] = (pedal_loss * mask).sum() / (mask.sum() * pedal_loss.shape[1] * 3).clamp(min=1)
    return result


def _pedal_edges(pedal: torch.Tensor, direction: int) -> torch.Tensor:
    """Frames where the pedal goes down (direction 1) or up (-1): targets of the pedal onset/offset outputs."""
    previous = F.pad(pedal, (1, 0))[:, :-1]
    return ((pedal - previous) == direction).float()


def probabilities(model: Transcriber, mel: np.ndarray) -> dict[str, np.ndarray]:
    """Run the model on one (T, n_mels) excerpt; sigmoid outputs as numpy, pedal split into 3 outputs."""
    model.eval()
    with torch.inference_mode():
        out = model(torch.from_numpy(np.asarray(mel, dtype=np.float32))[None])
    probs = {k: torch.sigmoid(v[0].float()).numpy() for k, v in out.items()}
    pedal = probs.pop("pedal")
    probs.update(pedal_onset=pedal[:, 0], pedal_offset=pedal[:, 1], pedal_frame=pedal[:, 2])
    return probs


def excerpt_reference(ex: Excerpt, frame_rate: float) -> Performance:
    """The excerpt's label rolls as notes (onsets in the excerpt only) and pedal intervals."""
    notes = rolls_to_notes(np.asarray(ex.roll("onset")), np.asarray(ex.roll("frame")), np.asarray(ex.roll("velocity")), frame_rate)
    pedals = roll_to_pedals(np.asarray(ex.roll("pedal")), frame_rate) if ex.has_pedal else []
    return Performance(tuple(notes), tuple(pedals))


def model_transcriber(model: Transcriber, decode: DecodeConfig, features: FeatureConfig = FeatureConfig()) -> Callable:
    """A function log-mel (T, n_mels) -> Performance: the model's probabilities, decoded."""
    return decoding_transcriber(lambda mel: probabilities(model, mel), decode, features)


def decoding_transcriber(probabilities_of: Callable[[np.ndarray], dict], decode: DecodeConfig,
                         features: FeatureConfig = FeatureConfig()) -> Callable:
    """A function log-mel (T, n_mels) -> Performance: `probabilities_of(mel)` (as `probabilities` names
    them), decoded with `decode`."""
    def transcribe(mel: np.ndarray) -> Performance:
        probs = probabilities_of(mel)
        notes = decode_notes(probs["onset"], probs["frame"], probs["velocity"], features.frame_rate, decode)
        return Performance(tuple(notes), tuple(decode_pedals(probs["pedal_frame"], features.frame_rate, decode)))

    return transcribe


def evaluate_on_excerpts(transcribe: Callable, excerpts: list[Excerpt], features: FeatureConfig = FeatureConfig(),
                         progress: bool = True, error_kinds: bool = False) -> dict:
    """`{"mean", "files"}` over rendered excerpts: references from their label rolls (already sustained),
    estimates as `transcribe` decodes them with their own pedal applied (as `report.evaluate_on_recordings`
    scores ENSTDkAm, so what is tuned here is scored the same way there); with `error_kinds` also
    `"error_types"`, `"onset_timing"` and `"recall_by_velocity"` (left out of validation during training,
    which never reads them)."""
    files, errors, by_velocity = {}, [], []
    for ex in tqdm(excerpts, desc="validation", unit="excerpt", disable=not progress):
        estimate = transcribe(np.asarray(ex.mel, np.float32))
        reference = excerpt_reference(ex, features.frame_rate)
        files[ex.id] = evaluate_performance(reference, estimate)
        if error_kinds:
            errors.append(error_types(reference, estimate))
            by_velocity.append(recall_by_velocity(reference, estimate))
    return {"mean": mean_scores(files), "files": files, **(summarise_errors(errors, by_velocity) if error_kinds else {})}


def validate(model: Transcriber, excerpts: list[Excerpt], decode: DecodeConfig,
             features: FeatureConfig = FeatureConfig()) -> dict[str, float | None]:
    """Mean metrics over validation excerpts."""
    return evaluate_on_excerpts(model_transcriber(model, decode, features), excerpts, features, progress=False)["mean"]


def save_checkpoint(path: Path, model: Transcriber, optimizer, state: dict, ema=None) -> None:
    """Atomic: written beside, then renamed, so an interrupted save never leaves a broken file.

    With an EMA, "model" holds the averaged weights (what evaluation and export use) and "raw_model" the
    optimised ones that training resumes from."""
    raw = model.module if hasattr(model, "module") else model
    payload = {"model_config": raw.config.to_dict(), "model": raw.state_dict(), "optimizer": optimizer.state_dict(),
               "state": state, "torch_rng": torch.get_rng_state()}
    if ema is not None:
        payload |= {"model": ema.module.state_dict(), "raw_model": raw.state_dict(), "ema_updates": int(ema.n_averaged)}
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_model(path: str | os.PathLike) -> Transcriber:
    """Rebuild a model from a checkpoint (strict: every weight and buffer must match)."""
    return model_from_payload(torch.load(path, map_location="cpu", weights_only=False))


def model_from_payload(payload: dict) -> Transcriber:
    """Rebuild a model from a loaded checkpoint payload (strict, as `load_model`)."""
    model = Transcriber(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["model"], strict=True)
    return model.eval()


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def train(model_config: ModelConfig, config: TrainConfig, decode: DecodeConfig, *, progress: bool = True) -> dict:
    """Train until `max_steps`, `max_hours` or early stopping; returns the final state."""
    rank, world = _distributed()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed + rank)
    run = Path(config.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    train_set = _training_excerpts(config)
    if not train_set:
        raise KeyscribeError(f"{', '.join(config.datasets)}: no training excerpts")
    val_set = _validation_excerpts(config)
    latest = run / "latest.pt"
    if latest.exists():
        payload = torch.load(latest, map_location="cpu", weights_only=False)
        model = Transcriber(ModelConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload.get("raw_model", payload["model"]), strict=True)
    else:
        payload = None
        model = Transcriber(model_config, cooccurrence_from_excerpts(train_set))
        init_biases_at_priors(model, *label_rates(train_set))
        if config.init_from:
            warm_start(model, config.init_from)
    ema = _moving_average(model, config.ema_decay, payload)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    state = {"step": 0, "best_note_f1": -1.0, "stale": 0, "train_seconds": 0.0}
    if payload:
        optimizer.load_state_dict(payload["optimizer"])
        state.update(payload["state"])
        torch.set_rng_state(payload["torch_rng"])
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    rng = np.random.default_rng([config.seed, rank, state["step"]])
    if rank == 0:
        (run / "config.json").write_text(json.dumps({"model": model.config.to_dict(), "train": asdict(config),
                                                     "decode": asdict(decode), "parameters": count_parameters(model)}, indent=2))
    logger = _Logger(run) if rank == 0 else None
    start = time.time()
    bar = tqdm(total=config.max_steps, initial=state["step"], desc="train", unit="step", disable=not progress or rank != 0)
    while state["step"] < config.max_steps:
        if state["step"] % config.reload_every == 0 and state["step"]:
            train_set = _training_excerpts(config)
            if len(val_set) < config.validation_excerpts:
                val_set = _validation_excerpts(config)
        net.train()
        if config.init_from:
            freeze_batch_norm(model)
        optimizer.zero_grad(set_to_none=True)
        step_losses: dict[str, float] = {}
        for _ in range(config.grad_accumulation):
            mel, labels, has_pedal = random_batch(train_set, config.batch_size, config.sequence_frames, rng)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                out = net(torch.from_numpy(mel))
            parts = losses(out, torch.from_numpy(labels), torch.from_numpy(has_pedal), config)
            (sum(parts.values()) / config.grad_accumulation).backward()
            for k, v in parts.items():
                step_losses[k] = step_losses.get(k, 0.0) + v.item() / config.grad_accumulation
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.clip_grad_norm)
        bar.set_postfix(loss=f"{sum(step_losses.values()):.3f}", refresh=False)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(state["step"], config)
        optimizer.step()
        if ema is not None:
            ema.update_parameters(model)
        state["step"] += 1
        bar.update(1)
        if rank == 0:
            stop = _after_step(model, optimizer, state, step_losses, config, decode, val_set, logger,
                               state["train_seconds"] + time.time() - start, ema)
        else:
            stop = False
        if _any_rank(stop, world):
            break
    bar.close()
    if rank == 0:
        state["train_seconds"] += time.time() - start
        save_checkpoint(latest, model, optimizer, state, ema)
    return state


def _moving_average(model: Transcriber, decay: float, payload: dict | None):
    """An EMA copy of `model` (None when `decay` is 0), restored from a checkpoint that has one."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if payload and "raw_model" in payload:
        ema.module.load_state_dict(payload["model"], strict=True)
        ema.n_averaged.fill_(payload["ema_updates"])
    return ema


def _training_excerpts(config: TrainConfig) -> list[Excerpt]:
    return [ex for folder in config.datasets for ex in load_split(folder, "train")]


def _validation_excerpts(config: TrainConfig) -> list[Excerpt]:
    return [ex for folder in config.datasets for ex in load_split(folder, "validation")][: config.validation_excerpts]


def _any_rank(flag: bool, world: int) -> bool:
    """Rank 0 decides when to stop; every rank must leave the loop at the same step."""
    if world == 1:
        return flag
    tensor = torch.tensor([int(flag)])
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def _after_step(model, optimizer, state: dict, step_losses: dict, config: TrainConfig,
                decode: DecodeConfig, val_set: list[Excerpt], logger: "_Logger", elapsed: float, ema=None) -> bool:
    """Log, validate (the EMA weights when there are any), checkpoint; True when training should stop."""
    run = Path(config.run_dir)
    logger.log(state["step"], {f"loss/{k}": v for k, v in step_losses.items()}
               | {"lr": optimizer.param_groups[0]["lr"], "hours": elapsed / 3600})
    out_of_time = bool(config.max_hours) and elapsed >= config.max_hours * 3600
    if state["step"] % config.validate_every == 0 and val_set:
        scores = validate(ema.module if ema is not None else model, val_set, decode)
        logger.log(state["step"], {f"validation/{k}": v for k, v in scores.items() if v is not None})
        if ema is not None:  # the raw weights' score too, so the EMA's gain is measured, not assumed
            logger.log(state["step"], {"validation_raw/note/f1": validate(model, val_set, decode)["note/f1"]})
        if scores["note/f1"] > state["best_note_f1"]:
            state.update(best_note_f1=scores["note/f1"], stale=0)
            save_checkpoint(run / "best.pt", model, optimizer, state | {"train_seconds": elapsed}, ema)
        else:
            state["stale"] += 1
    stop = out_of_time or state["stale"] >= config.patience
    if state["step"] % config.checkpoint_every == 0 or stop:
        save_checkpoint(run / "latest.pt", model, optimizer, state | {"train_seconds": elapsed}, ema)
    return stop


class _Logger:
    """Appends scalars to `log.csv` (long format: step, name, value) and to TensorBoard when installed."""

    def __init__(self, run: Path):
        self.path = run / "log.csv"
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="")
        self.csv = csv.writer(self.file)
        if new:
            self.csv.writerow(["step", "name", "value"])
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run / "tensorboard"))
        except ImportError:
            self.tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            if value is None or not math.isfinite(value):
                continue
            self.csv.writerow([step, name, f"{value:.6g}"])
            if self.tb:
                self.tb.add_scalar(name, value, step)
        self.file.flush()
