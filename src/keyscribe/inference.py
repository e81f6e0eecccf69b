"""The transcription engine: a model runtime, long audio streamed in overlapping windows, streaming decoding.

Runtimes (`load_model`):
- onnxruntime (the default on CPU): the shipped `models/keyscribe-piano.onnx`, or any file written by
  `export_onnx`. Needs no torch.
- torch (`device="cuda"`, or a training checkpoint `.pt`): the `Transcriber` on the chosen device.

A recording never sits in memory whole. Audio is decoded chunk by chunk (`audio.iter_audio_chunks`),
log-mel frames are computed as the audio arrives (`StreamingMel`, equal to `features.log_mel` of the
whole recording), the model runs on windows of `WindowConfig.window_s` seconds that overlap by
`context_s` on each side and only each window's centre is kept (the BiLSTM needs context either side),
and the kept probabilities go straight into `StreamingDecoder`, which gives the same notes and pedal
intervals as `decode.decode_notes`/`decode_pedals` on the whole recording. Memory is one window plus the
notes found; time is linear in the length.

Window and context were chosen by measuring stitched against whole-recording probabilities on 3 minutes
of MAPS (`benchmarks/speed.py --context-sweep`, results in benchmarks/results/context-*.json). A freshly
initialised model forgets within 1 s (from 1 s of context on, stitched and whole agree to 1e-7). A
trained one does not: with the early CR-GCN checkpoint (step 400) the onset and frame outputs agree to
5e-4 and 1e-2 already with 3 s of context, but velocity and the sustain pedal (slow, long-range
outputs) still differed by up to 4.6e-2 with 6 s of context, and by 4e-3 (99.9% of values within 4e-4)
with 8 s in 60 s windows. So: 60 s windows keeping their central 44 s; it costs ~30% more time than
30 s windows with 3 s of context, ~50 MB more memory, and runs ~175x real time on 2 busy cores. Rerun
the sweep when the model changes. Rerun for the trained models (2026-11-24, 60 s / 8 s): 99.9% of values
within 1.2e-2 and 29 of 1,876 decoded notes different in some attribute for keyscribe-piano, 1.4e-2 and 36 of
2,018 for the CR-GCN shipped before it; the shipped model's ENSTDkAm scores, streamed end to end and on
whole recordings, agree to 0.001.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import scipy.fft
import scipy.sparse

from keyscribe.config import from_table
from keyscribe.decode import DecodeConfig
from keyscribe.errors import KeyscribeError, ModelError
from keyscribe.features import FeatureConfig, log_mel, mel_filterbank
from keyscribe.notes import MIN_PITCH, N_KEYS, Note, PedalInterval

MODEL_DIR = Path(__file__).resolve().parent / "models"
MODEL_NAME = "keyscribe-piano"
FORMAT_VERSION = 1
OUTPUTS = ("onset", "offset", "frame", "velocity", "pedal")  # the ONNX graph's outputs, all probabilities
PROBABILITIES = ("onset", "offset", "frame", "velocity", "pedal_onset", "pedal_offset", "pedal_frame")
WEIGHTS_LICENCE = "CC BY-NC-SA 4.0 (non-commercial use only)"
DEVICES = ("auto", "cpu", "cuda")
# Recordings are brought to this active loudness (dBFS, `audio.active_power`) before the model: the centre
# of the range the training renders were brought to (`data.augment.AugmentConfig.loudness_dbfs`), since the
# model is not level-invariant (benchmarks/loudness.py: a recording at -40 dBFS loses note F1).
INPUT_LOUDNESS_DBFS = -24.0


@dataclass(frozen=True)
class WindowConfig:
    """How a long recording is cut for the model: windows of `window_s` seconds whose first and last
    `context_s` seconds only give the BiLSTM context (the centre, `window_s - 2 * context_s`, is kept);
    `batch` windows go through the model at once; audio is decoded `chunk_s` seconds at a time."""

    window_s: float = 60.0
    context_s: float = 8.0
    batch: int = 1
    chunk_s: float = 10.0

    def frames(self, frame_rate: float) -> tuple[int, int]:
        """(window, context) in frames."""
        window = max(1, round(self.window_s * frame_rate))
        context = round(self.context_s * frame_rate)
        if window - 2 * context < 1:
            raise KeyscribeError(f"window of {self.window_s} s leaves nothing between contexts of {self.context_s} s")
        return window, context


@dataclass(frozen=True)
class ModelInfo:
    """What the JSON sidecar says about a model."""

    model_id: str
    features: FeatureConfig = FeatureConfig()
    decode: DecodeConfig = DecodeConfig()
    model_config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    licence: str = WEIGHTS_LICENCE
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"format_version": FORMAT_VERSION, "model_id": self.model_id, "features": asdict(self.features),
                "decode": asdict(self.decode), "model_config": self.model_config, "metrics": self.metrics,
                "licence": self.licence, "outputs": list(OUTPUTS), **self.extra}

    @classmethod
    def from_json(cls, raw: dict, where: str) -> "ModelInfo":
        try:
            if int(raw.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
                raise ModelError(f"{where}: made by a newer keyscribe (format {raw['format_version']}); upgrade keyscribe")
            known = {"format_version", "model_id", "features", "decode", "model_config", "metrics", "licence", "outputs"}
            return cls(model_id=str(raw["model_id"]), features=_dataclass_from(FeatureConfig, raw.get("features", {})),
                       decode=_dataclass_from(DecodeConfig, raw.get("decode", {})),
                       model_config=dict(raw.get("model_config", {})), metrics=dict(raw.get("metrics", {})),
                       licence=str(raw.get("licence", WEIGHTS_LICENCE)),
                       extra={k: v for k, v in raw.items() if k not in known})
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where}: not a keyscribe model description ({type(exc).__name__}: {exc})") from None


def _dataclass_from(cls, raw: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in dict(raw).items() if k in names})


# --------------------------------------------------------------------------------------------------
# Runtimes


class Model:
    """A loaded model: `run` maps (B, T, n_mels) log-mel to probabilities (B, T, 88) and (B, T, 3)."""

    runtime = "?"
    device = "cpu"

    def __init__(self, info: ModelInfo, path: Path | None):
        self.info = info
        self.path = path

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def features(self) -> FeatureConfig:
        return self.info.features

    @property
    def decode_config(self) -> DecodeConfig:
        return self.info.decode

    def run(self, mel: np.ndarray) -> dict[str, np.ndarray]:
        """Probabilities for a batch of log-mel windows: dict of OUTPUTS, each (B, T, 88) or pedal (B, T, 3)."""
        raise NotImplementedError

    def probabilities(self, mel: np.ndarray) -> dict[str, np.ndarray]:
        """The whole (T, n_mels) input in one pass, as `train.probabilities` names them (no windowing)."""
        return split_pedal({k: v[0] for k, v in self.run(np.asarray(mel, np.float32)[None]).items()})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model_id} on {self.device} ({self.runtime})>"


def split_pedal(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OUTPUTS -> PROBABILITIES: the (..., 3) pedal output as pedal_onset/offset/frame."""
    probs = {k: v for k, v in out.items() if k != "pedal"}
    pedal = out["pedal"]
    probs.update(pedal_onset=pedal[..., 0], pedal_offset=pedal[..., 1], pedal_frame=pedal[..., 2])
    return probs


class OnnxModel(Model):
    """onnxruntime on the CPU (or its CUDA provider when onnxruntime-gpu is installed and asked for)."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, info: ModelInfo, *, threads: int | None = None, device: str = "cpu"):
        super().__init__(info, path)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or 0  # 0: one per physical core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Spinning threads burn CPU between runs, which a machine shared with decoding and other work
        # pays for; measured no slower without.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            raise ModelError(f"{path.name}: not a loadable ONNX model ({_one_line(exc)})") from None
        names = [o.name for o in self.session.get_outputs()]
        if names != list(OUTPUTS):
            raise ModelError(f"{path.name}: outputs {names} are not keyscribe's {list(OUTPUTS)}")
        self.device = device
        self._input = self.session.get_inputs()[0].name

    def run(self, mel: np.ndarray) -> dict[str, np.ndarray]:
        out = self.session.run(None, {self._input: np.ascontiguousarray(mel, dtype=np.float32)})
        return dict(zip(OUTPUTS, out))


class TorchModel(Model):
    """The torch `Transcriber` (for CUDA, and for checkpoints not yet exported)."""

    runtime = "torch"

    def __init__(self, module, info: ModelInfo, path: Path | None, device: str = "cpu", threads: int | None = None):
        super().__init__(info, path)
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = device
        self.module = _ProbabilityGraph(module).to(device).eval()

    def run(self, mel: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).to(self.device)
            out = self.module(x)
        return {name: t.float().cpu().numpy() for name, t in zip(OUTPUTS, out)}


def _probability_graph_class():
    import torch

    class ProbabilityGraph(torch.nn.Module):
        """The Transcriber with sigmoids applied, outputs as a tuple in OUTPUTS order (the exported graph)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, mel):
            out = self.model(mel)
            return tuple(torch.sigmoid(out[name]) for name in OUTPUTS)

    return ProbabilityGraph


def _ProbabilityGraph(model):
    return _probability_graph_class()(model)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when an NVIDIA GPU and a CUDA torch are present, else 'cpu' (without importing torch
    on machines with no GPU driver)."""
    if device not in DEVICES:
        raise KeyscribeError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        if not (Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi")):
            return "cpu"
        return "cuda" if _torch_cuda_available() else "cpu"
    if device == "cuda" and not _torch_cuda_available() and not _ort_cuda_available():
        raise KeyscribeError("device cuda asked for, but neither torch nor onnxruntime sees a CUDA GPU")
    return device


def _torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _ort_cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def default_model_path() -> Path:
    return MODEL_DIR / f"{MODEL_NAME}.onnx"


def load_model(model: str | os.PathLike | Model | None = None, *, device: str = "auto",
               threads: int | None = None) -> Model:
    """A runtime for `model`: None (the shipped model), an `.onnx` file (its `.json` sidecar beside it),
    a sidecar `.json`, a folder holding one model, a training checkpoint `.pt` (torch), or a loaded
    `Model` (returned as it is). On the CPU an ONNX model runs in onnxruntime; on CUDA it runs in
    onnxruntime's CUDA provider when installed, else in torch from the `.pt` weights beside it.
    Raises `ModelError` (one line) when the file is missing or unusable."""
    if isinstance(model, Model):
        return model
    requested, device = device, resolve_device(device)
    path = _model_path(model)
    if path.suffix == ".pt":
        return _load_checkpoint(path, device, threads)
    info = read_info(path)
    if device == "cuda" and not _ort_cuda_available():
        weights = path.with_suffix(".pt")
        if weights.is_file():
            return _load_checkpoint(weights, device, threads, info)
        if requested == "cuda":
            raise ModelError(f"{path.name}: device cuda needs onnxruntime-gpu or the torch weights {weights.name} "
                             "beside the model (keyscribe export-model --with-torch)")
        device = "cpu"  # auto: the GPU cannot run this model here, the CPU can
    return OnnxModel(path, info, threads=threads, device=device)


def _model_path(model: str | os.PathLike | None) -> Path:
    if model is None:
        path = default_model_path()
        if not path.is_file():
            raise ModelError(f"the shipped model {path.name} is missing from {path.parent}; reinstall keyscribe "
                             "or pass a model file (--model PATH)")
        return path
    path = Path(model)
    if path.is_dir():
        found = sorted(path.glob("*.onnx"))
        if len(found) != 1:
            raise ModelError(f"{path}: expected one .onnx model in the folder, found {len(found)}")
        path = found[0]
    if path.suffix == ".json":
        path = path.with_suffix(".onnx")
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if path.suffix not in (".onnx", ".pt"):
        raise ModelError(f"{path.name}: not a model file (expected .onnx, .json or a .pt checkpoint)")
    return path


def read_info(onnx_path: Path) -> ModelInfo:
    """The sidecar of `onnx_path`; a bare ONNX file without one gets defaults and its file name as id."""
    sidecar = onnx_path.with_suffix(".json")
    if not sidecar.is_file():
        return ModelInfo(model_id=onnx_path.stem)
    try:
        raw = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{sidecar.name}: unreadable model description ({_one_line(exc)})") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{sidecar.name}: not a keyscribe model description")
    return ModelInfo.from_json(raw, sidecar.name)


def _load_checkpoint(path: Path, device: str, threads: int | None, info: ModelInfo | None = None) -> TorchModel:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ModelError(f"{path.name}: a torch checkpoint needs torch (pip install 'keyscribe[train]')") from None
    payload, module = _read_checkpoint(path)
    if info is None:
        info = checkpoint_info(path, payload)
    return TorchModel(module.eval(), info, path, device=device, threads=threads)


def _read_checkpoint(path: Path):
    """(payload, Transcriber in eval mode) of a checkpoint or a weights file written by `export_onnx`."""
    import torch

    from keyscribe.model import ModelConfig, Transcriber

    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        module = Transcriber(ModelConfig.from_dict(payload["model_config"]))
        module.load_state_dict(payload["model"], strict=True)
    except Exception as exc:  # torch.load and load_state_dict raise many types for bad files
        raise ModelError(f"{path.name}: not a usable keyscribe checkpoint ({_one_line(exc)})") from None
    return payload, module.eval()


def run_decode_config(checkpoint: str | os.PathLike) -> DecodeConfig:
    """The [decode] settings that training saved beside a checkpoint in its run's config.json (defaults when
    there is none). An unreadable file or an unknown key is a `ModelError`: a checkpoint must not be
    decoded with thresholds other than its run's without saying so."""
    path = Path(checkpoint).parent / "config.json"
    if not path.is_file():
        return DecodeConfig()
    try:
        return from_table(DecodeConfig, json.loads(path.read_text()).get("decode", {}), path, "decode")
    except (OSError, ValueError, TypeError, AttributeError, KeyscribeError) as exc:
        raise ModelError(f"cannot read the decode settings of {checkpoint} from {path}: {exc}") from None


def checkpoint_info(path: Path, payload: dict | None = None, model_id: str | None = None) -> ModelInfo:
    """A ModelInfo for a training checkpoint: decode thresholds from the run's config.json if present."""
    decode = run_decode_config(path)
    metrics: dict[str, Any] = {}
    model_config: dict = {}
    if payload is not None:
        state = payload.get("state", {}) or {}
        if "best_note_f1" in state and state["best_note_f1"] >= 0:
            metrics["validation_note_f1"] = round(float(state["best_note_f1"]), 4)
        if "step" in state:
            metrics["training_steps"] = int(state["step"])
        if state.get("train_seconds"):
            metrics["training_hours"] = round(float(state["train_seconds"]) / 3600, 2)
        model_config = dict(payload.get("model_config", {}))
    return ModelInfo(model_id=model_id or f"{path.parent.name}-{path.stem}", decode=decode,
                     model_config=model_config, metrics=metrics)


# --------------------------------------------------------------------------------------------------
# Export


def export_onnx(checkpoint_or_model, path: str | os.PathLike, *, model_id: str | None = None,
                decode: DecodeConfig | None = None, metrics: dict | None = None,
                licence: str = WEIGHTS_LICENCE, with_torch: bool = False, verify: bool = True) -> Path:
    """Export a checkpoint (`.pt` path) or a `Transcriber` to ONNX at `path`, with its JSON sidecar beside it.

    The graph takes log-mel (batch, frames, n_mels) and returns the sigmoid probabilities OUTPUTS with
    batch and frames dynamic. Decode thresholds come from `decode`, else from the checkpoint's run
    `config.json`, else the defaults. `verify` runs onnxruntime and torch on the same input and fails if
    they differ by more than 1e-4. `with_torch` also writes `<name>.pt` (weights only) for the CUDA
    runtime. Every file is written atomically. Returns the `.onnx` path.
    """
    import torch

    from keyscribe.model import Transcriber

    path = Path(path)
    if path.suffix != ".onnx":
        raise ModelError(f"{path}: the exported model's name must end in .onnx")
    if isinstance(checkpoint_or_model, Transcriber):
        module, payload = checkpoint_or_model, None
        info = ModelInfo(model_id=model_id or path.stem, model_config=module.config.to_dict())
    else:
        ckpt = Path(checkpoint_or_model)
        if not ckpt.is_file():
            raise ModelError(f"{ckpt}: no such checkpoint")
        payload, module = _read_checkpoint(ckpt)
        info = checkpoint_info(ckpt, payload, model_id)
    module = module.eval()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    info = ModelInfo(model_id=model_id or info.model_id, decode=decode or info.decode,
                     model_config=module.config.to_dict(), metrics={**info.metrics, **(metrics or {})},
                     licence=licence, extra={"created": created, "onnx_opset": 17, "exported_by": "keyscribe"})
    path.parent.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    # One thread: tracing runs the model on a short example, where torch's thread pool only costs (measured
    # 4.7 s instead of 0.04 s for the first LSTM call on a busy 2-core machine).
    torch.set_num_threads(1)
    try:
        return _export(torch, module, info, path, with_torch, verify)
    finally:
        torch.set_num_threads(threads)


def _export(torch, module, info: ModelInfo, path: Path, with_torch: bool, verify: bool) -> Path:
    graph = _ProbabilityGraph(module).eval()
    example = torch.randn(1, 400, module.config.n_mels)
    dims = {0: "batch", 1: "frames"}
    with _atomic(path) as tmp:
        with torch.inference_mode(False), torch.no_grad(), _quiet_export():
            torch.onnx.export(graph, (example,), str(tmp), input_names=["mel"], output_names=list(OUTPUTS),
                              dynamic_axes={"mel": dims, **{name: dims for name in OUTPUTS}},
                              opset_version=17, do_constant_folding=True, dynamo=False)
        graph.eval()  # the exporter restores the wrapper's training flag, which reaches the model
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        if verify:
            _verify_export(tmp, graph, module.config.n_mels)
        info = replace(info, extra={**info.extra, "sha256": digest})
        _write_json_atomic(path.with_suffix(".json"), info.to_json())
    if with_torch:
        with _atomic(path.with_suffix(".pt")) as tmp:
            torch.save({"model_config": module.config.to_dict(), "model": module.state_dict()}, tmp)
    return path


def _verify_export(onnx_path: Path, graph, n_mels: int) -> None:
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    mel = rng.normal(-4.0, 2.0, size=(2, 157, n_mels)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"mel": mel})
    with torch.inference_mode():
        ref = [t.numpy() for t in graph.eval()(torch.from_numpy(mel))]
    worst = max(float(np.abs(a - b).max()) for a, b in zip(ours, ref))
    if worst > 1e-4:
        raise ModelError(f"{onnx_path.name}: onnxruntime and torch disagree by {worst:.2e} after export")


class _quiet_export:
    """Silence the legacy exporter's deprecation and RNN warnings (they are about the exporter, not us)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


class _atomic:
    """`with _atomic(path) as tmp:` write to `tmp` (same folder); renamed to `path` only on success."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def _write_json_atomic(path: Path, data: dict) -> None:
    with _atomic(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


# --------------------------------------------------------------------------------------------------
# Streaming features


class StreamingMel:
    """`features.log_mel` of a recording fed in pieces: `push(samples)` and `finish()` return the frames
    that became computable, and all of them joined equal `log_mel` of the whole recording."""

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        self.config = config
        self.pad = config.n_fft // 2
        self.window = np.hanning(config.n_fft + 1)[:-1].astype(np.float32)
        self.fbank_t = scipy.sparse.csr_matrix(mel_filterbank(config).T)  # (n_mels, n_fft // 2 + 1)
        self.n_samples = 0
        self.next_frame = 0
        self._head: list[np.ndarray] = []  # audio held until the first pad + 1 samples are in
        self._buf: np.ndarray | None = None  # the padded signal from next_frame * hop on
        self._tail = np.zeros(0, np.float32)  # the last pad + 1 samples, for the end's reflection

    def push(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.n_samples += samples.size
        self._tail = np.concatenate([self._tail, samples[-(self.pad + 1):]])[-(self.pad + 1):]
        if self._buf is None:
            self._head.append(samples)
            if self.n_samples <= self.pad:
                return self._empty()
            audio = np.concatenate(self._head)
            self._head = []
            self._buf = np.concatenate([audio[1:self.pad + 1][::-1], audio])
        else:
            self._buf = np.concatenate([self._buf, samples])
        hop, n_fft = self.config.hop_length, self.config.n_fft
        ready = 0 if len(self._buf) < n_fft else 1 + (len(self._buf) - n_fft) // hop
        return self._frames(ready)

    def finish(self) -> np.ndarray:
        """The remaining frames, up to `config.n_frames(n_samples)` in all."""
        if self._buf is None:  # shorter than the padding: log_mel pads with zeros instead of reflecting
            audio = np.concatenate(self._head) if self._head else np.zeros(0, np.float32)
            self._head = []
            frames = log_mel(audio, self.config) if audio.size else self._empty()
            self.next_frame = len(frames)
            return frames
        self._buf = np.concatenate([self._buf, self._tail[:-1][::-1]])
        return self._frames(self.config.n_frames(self.n_samples) - self.next_frame)

    def _frames(self, count: int) -> np.ndarray:
        if count <= 0:
            return self._empty()
        hop, n_fft = self.config.hop_length, self.config.n_fft
        frames = np.lib.stride_tricks.sliding_window_view(self._buf, n_fft)[::hop][:count]
        # scipy's FFT: measured 18x faster than numpy's on these (frames, 2048) float32 blocks
        magnitude = np.abs(scipy.fft.rfft(frames * self.window, axis=1))
        mel = (self.fbank_t @ magnitude.T).T  # the filters are 99% zeros: sparse is 16x faster than dense
        out = np.log(np.maximum(np.ascontiguousarray(mel), self.config.log_floor))
        self.next_frame += count
        self._buf = self._buf[count * hop:].copy()
        return out

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.config.n_mels), np.float32)


# --------------------------------------------------------------------------------------------------
# Windows


def iter_probabilities(model: Model, mel_blocks: Iterable[np.ndarray], window: WindowConfig = WindowConfig()
                       ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Run `model` over a stream of log-mel frame blocks in overlapping windows; yield
    (first frame, probabilities (n, ...) as PROBABILITIES) for consecutive frames, each from the centre
    of its window (the recording's ends from the first and last windows)."""
    size, context = window.frames(model.features.frame_rate)
    keep = size - 2 * context
    n_mels = model.features.n_mels
    buf = np.zeros((0, n_mels), np.float32)  # frames from buf_start on
    buf_start = 0
    next_keep = 0  # first frame not yet yielded
    queue: list[tuple[int, int, int]] = []  # (window start, keep start, keep end) waiting for a batch

    def flush(queue_: list[tuple[int, int, int]], buf_: np.ndarray, buf_start_: int):
        starts = [a - buf_start_ for a, _, _ in queue_]
        lengths = {min(size, len(buf_) - s) for s in starts}
        if len(lengths) == 1:
            batch = np.stack([buf_[s:s + size] for s in starts])
            out = model.run(batch)
            results = [{k: v[i] for k, v in out.items()} for i in range(len(queue_))]
        else:
            results = [{k: v[0] for k, v in model.run(buf_[s:s + size][None]).items()} for s in starts]
        for (a, k0, k1), res in zip(queue_, results):
            yield k0, split_pedal({name: v[k0 - a:k1 - a] for name, v in res.items()})

    for block in mel_blocks:
        if len(block):
            buf = np.concatenate([buf, np.asarray(block, np.float32)])
        # A window whose centre starts at next_keep needs frames up to next_keep - context + size
        # (the first window starts at 0 and keeps everything but its right context).
        while True:
            start = max(0, next_keep - context)
            end_needed = start + size
            if buf_start + len(buf) < end_needed:
                break
            keep_end = start + size - context
            queue.append((start, next_keep, keep_end))
            next_keep = keep_end
            if len(queue) >= window.batch:
                yield from flush(queue, buf, buf_start)
                queue = []
                drop = max(0, next_keep - context) - buf_start
                buf, buf_start = buf[drop:], buf_start + drop
    total = buf_start + len(buf)
    if queue:
        yield from flush(queue, buf, buf_start)
    if next_keep < total:  # the end: a last window with the same left context, up to the last frame
        start = max(0, next_keep - context)
        out = model.run(buf[start - buf_start:][None])
        yield next_keep, split_pedal({k: v[0, next_keep - start:] for k, v in out.items()})


# --------------------------------------------------------------------------------------------------
# Streaming decoding


class StreamingDecoder:
    """`decode.decode_notes` and `decode_pedals` over probabilities fed in consecutive blocks of frames.

    Gives exactly the notes and pedal intervals the batch decoder gives on the whole recording, holding
    only per-key state of fixed size: the onset run in progress (its peak so far and the values beside
    it, for the sub-frame peak and the velocity) and the note waiting for its end. Each block costs O(frames x keys) in numpy plus O(1) Python per onset run, so
    time is linear in the recording's length.
    """

    def __init__(self, frame_rate: float, config: DecodeConfig = DecodeConfig(), n_keys: int = N_KEYS):
        self.frame_rate = frame_rate
        self.config = config
        self.n_keys = n_keys
        self.t = 0  # frames consumed
        self.notes: list[Note] = []
        self.pedals: list[PedalInterval] = []
        self._prev_onset = np.zeros(n_keys, np.float32)  # the last frame's values, for a run starting next
        self._prev_velocity = np.zeros(n_keys, np.float32)
        self._run: dict[int, _Run] = {}  # key -> its onset run in progress
        self._open: dict[int, tuple[float, int]] = {}  # key -> (onset_s, velocity) of a note waiting for its stop
        self._pedal_start: int | None = None

    def push(self, onset: np.ndarray, frame: np.ndarray, velocity: np.ndarray, pedal_frame: np.ndarray | None = None) -> None:
        """Add the next (n, 88) onset/frame/velocity probabilities and (n,) pedal-down probabilities."""
        n = len(onset)
        if n == 0:
            return
        cfg = self.config
        t0 = self.t
        on = onset >= cfg.onset_threshold  # (n, keys)
        stop = on | (frame < cfg.frame_threshold)  # where a sounding note ends: silence or a new onset
        active = np.flatnonzero(on.any(axis=0)).tolist()
        active = sorted(set(active).union(self._run, self._open))
        if active:
            # next_x[k, i]: the first frame >= i where x holds for key k (n when none), so every search
            # below is one lookup instead of a scan.
            next_on, next_off, next_stop = (_next_true(m[:, active]) for m in (on, ~on, stop))
            for j, key in enumerate(active):
                self._key_block(key, t0, n, onset[:, key], velocity[:, key],
                                next_on[j], next_off[j], next_stop[j])
        self._prev_onset = onset[-1].astype(np.float32, copy=True)
        self._prev_velocity = velocity[-1].astype(np.float32, copy=True)
        if pedal_frame is not None:
            self._pedal_block(t0, np.asarray(pedal_frame) >= cfg.pedal_threshold)
        self.t += n

    def _key_block(self, key: int, t0: int, n: int, onset: np.ndarray, velocity: np.ndarray,
                   next_on: list[int], next_off: list[int], next_stop: list[int]) -> None:
        pos = 0
        while pos < n:
            if key in self._open:
                f = next_stop[pos]
                if f >= n:
                    return
                self._close(key, t0 + f)
                pos = f
            elif key in self._run:  # a run carried over from the previous block (so pos == 0)
                run = self._run[key]
                if run.right is None and run.best == t0 - 1:  # the peak was the previous block's last frame
                    run.right, run.vel_right = onset[0], velocity[0]
                end = next_off[pos]
                run.extend(onset, velocity, pos, min(end, n), t0)
                if end >= n:
                    return
                del self._run[key]
                self._finish_run(key, run, t0 + end)
                pos = end
            else:
                s = next_on[pos]
                if s >= n:
                    return
                if s > 0:
                    before = (onset[s - 1], velocity[s - 1])
                elif t0 > 0:
                    before = (self._prev_onset[key], self._prev_velocity[key])
                else:
                    before = (None, None)  # the recording's first frame: no left neighbour
                run = _Run(t0 + s, *before)
                end = next_off[s]
                run.extend(onset, velocity, s, min(end, n), t0)
                if end >= n:
                    self._run[key] = run
                    return
                self._finish_run(key, run, t0 + end)
                pos = end

    def _finish_run(self, key: int, run: "_Run", end: int, n_frames: int | None = None) -> None:
        """The onset run ended at frame `end` (or the recording did, after `n_frames`): make its note,
        open until its stop. The peak is refined exactly as `decode._subframe_peak` does on the whole
        curve, with the same float32 arithmetic, in global frame numbers."""
        peak = float(run.best)
        if run.left is not None and run.right is not None:  # 0 < peak < n_frames - 1
            left, mid, right = run.left, run.value, run.right
            denom = left - 2 * mid + right
            if denom < 0:
                shift = 0.5 * (left - right) / denom
                peak = run.best + float(min(max(shift, -0.5), 0.5))
        last = end if n_frames is None else n_frames - 1
        idx = min(int(round(peak)), last)
        vel_at = {run.best - 1: run.vel_left, run.best: run.vel_best, run.best + 1: run.vel_right}[idx]
        vel = min(max(round(float(vel_at) * 127), 1), 127)
        self._open[key] = (max(peak, 0.0) / self.frame_rate, vel)

    def _close(self, key: int, stop: int) -> None:
        onset_s, vel = self._open.pop(key)
        offset_s = max(stop / self.frame_rate, onset_s + 1.0 / self.frame_rate)
        self.notes.append(Note(onset_s, offset_s, key + MIN_PITCH, vel))

    def _pedal_block(self, t0: int, down: np.ndarray) -> None:
        edges = np.diff(np.concatenate([[self._pedal_start is not None], down]).astype(np.int8))
        for i in np.flatnonzero(edges):
            if edges[i] > 0:
                self._pedal_start = t0 + int(i)
            else:
                self._add_pedal(self._pedal_start, t0 + int(i))
                self._pedal_start = None

    def _add_pedal(self, start: int, end: int) -> None:
        if (end - start) / self.frame_rate >= self.config.min_pedal_s:
            self.pedals.append(PedalInterval(start / self.frame_rate, end / self.frame_rate))

    def finish(self) -> tuple[list[Note], list[PedalInterval]]:
        """Close what is still open at the recording's end; (notes by onset then pitch, pedal intervals)."""
        n = self.t
        for key in sorted(self._run):
            self._finish_run(key, self._run.pop(key), n, n)
        for key in sorted(self._open):
            self._close(key, n)
        if self._pedal_start is not None:
            self._add_pedal(self._pedal_start, n)
            self._pedal_start = None
        self.notes.sort(key=lambda note: (note.onset_s, note.pitch))
        return self.notes, self.pedals


class _Run:
    """An onset run in progress: its first frame, its peak so far (the first maximum, as np.argmax) and
    the onset and velocity values at the peak and on either side (None where not seen yet, or, on the
    left, before the recording's start), and the values at the last frame seen."""

    __slots__ = ("start", "best", "value", "left", "right", "vel_left", "vel_best", "vel_right", "last", "vel_last")

    def __init__(self, start: int, before_onset, before_velocity):
        self.start = start
        self.best = -1
        self.value = self.left = self.right = self.vel_left = self.vel_best = self.vel_right = None
        self.last, self.vel_last = before_onset, before_velocity  # the frame before the run

    def extend(self, onset: np.ndarray, velocity: np.ndarray, a: int, r: int, t0: int) -> None:
        """Frames a .. r-1 of a block starting at global frame t0 belong to the run."""
        if r <= a:
            return
        i = a + int(np.argmax(onset[a:r]))
        if self.value is None or onset[i] > self.value:
            self.best, self.value, self.vel_best = t0 + i, onset[i], velocity[i]
            if i > a:
                self.left, self.vel_left = onset[i - 1], velocity[i - 1]
            else:
                self.left, self.vel_left = self.last, self.vel_last
            if i + 1 < len(onset):
                self.right, self.vel_right = onset[i + 1], velocity[i + 1]
            else:
                self.right = self.vel_right = None
        self.last, self.vel_last = onset[r - 1], velocity[r - 1]


def _next_true(mask: np.ndarray) -> list[list[int]]:
    """For an (n, keys) mask: per key, a list whose item i is the first frame >= i where the mask holds
    (n when it never does again)."""
    n = mask.shape[0]
    index = np.where(mask.T, np.arange(n, dtype=np.int32), np.int32(n))
    return np.minimum.accumulate(index[:, ::-1], axis=1)[:, ::-1].tolist()


# --------------------------------------------------------------------------------------------------
# The whole pipeline


@dataclass
class EngineResult:
    notes: list[Note]
    pedals: list[PedalInterval]
    n_samples: int
    n_frames: int
    seconds: float  # wall time


def transcribe_chunks(model: Model, chunks: Iterable[np.ndarray], window: WindowConfig = WindowConfig(),
                      progress=None, prefetch: bool = True) -> EngineResult:
    """Audio chunks (mono float32 at the model's sample rate) -> notes and pedal intervals, streaming.
    With `prefetch`, decoding the audio and its log-mel run in a thread beside the model (FFmpeg, the
    FFT and onnxruntime release the GIL; measured ~15% faster end to end on 2 cores). `progress(seconds_done)`
    is called after each block of frames is decoded."""
    started = time.perf_counter()
    features = model.features
    mel = StreamingMel(features)

    def mel_blocks() -> Iterator[np.ndarray]:
        for chunk in chunks:
            yield mel.push(chunk)
        yield mel.finish()

    decoder = StreamingDecoder(features.frame_rate, model.decode_config)
    blocks = _prefetched(mel_blocks()) if prefetch else mel_blocks()
    try:
        for first, probs in iter_probabilities(model, blocks, window):
            decoder.push(probs["onset"], probs["frame"], probs["velocity"], probs["pedal_frame"])
            if progress is not None:
                progress((first + len(probs["onset"])) / features.frame_rate)
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()  # stops the reader thread when the model or a callback failed
    notes, pedals = decoder.finish()
    if mel.n_samples == 0:
        raise KeyscribeError("no audio samples to transcribe")
    return EngineResult(notes, pedals, mel.n_samples, decoder.t, time.perf_counter() - started)


def _prefetched(items: Iterator, depth: int = 3) -> Iterator:
    """Iterate `items` in a background thread, `depth` items ahead; its exceptions re-raise here."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((end, None))
        except BaseException as exc:  # handed to the consumer, raised there
            q.put((end, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None and stop.is_set():
                close()

    thread = threading.Thread(target=work, name="keyscribe-audio", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def array_chunks(audio: np.ndarray, sample_rate: int, chunk_s: float) -> Iterator[np.ndarray]:
    step = max(1, round(chunk_s * sample_rate))
    for start in range(0, len(audio), step):
        yield audio[start:start + step]


def probabilities_whole(model: Model, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The reference for the windowed path: the model on the whole recording's log-mel in one pass."""
    return model.probabilities(log_mel(audio, model.features))


def probabilities_windowed(model: Model, audio: np.ndarray, window: WindowConfig = WindowConfig()) -> dict[str, np.ndarray]:
    """The windowed, streamed path's probabilities joined (for tests and for measuring `context_s`)."""
    mel = StreamingMel(model.features)

    def blocks():
        for chunk in array_chunks(audio, model.features.sample_rate, window.chunk_s):
            yield mel.push(chunk)
        yield mel.finish()

    parts = [probs for _, probs in iter_probabilities(model, blocks(), window)]
    return {k: np.concatenate([p[k] for p in parts]) for k in PROBABILITIES}


def export_model_files(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, name: str = MODEL_NAME,
                       model_id: str | None = None, metrics_file: str | os.PathLike | None = None,
                       with_torch: bool = False) -> Path:
    """`keyscribe export-model`: the checkpoint as OUT_DIR/<name>.onnx + <name>.json (decode thresholds
    from the run's config.json beside the checkpoint; `metrics_file`, a JSON of metrics such as
    `keyscribe evaluate-model --json` writes, recorded under "metrics"). Returns the .onnx path."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ModelError(f"{checkpoint}: no such checkpoint")
    metrics: dict[str, Any] = {}
    if metrics_file is not None:
        try:
            raw = json.loads(Path(metrics_file).read_text())
        except (OSError, ValueError) as exc:
            raise KeyscribeError(f"{metrics_file}: not a readable JSON file ({_one_line(exc)})") from None
        raw = raw.get("mean", raw) if isinstance(raw, dict) else {}
        metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in raw.items()
                   if isinstance(v, (int, float, str)) or v is None}
    model_id = model_id or f"{name}-{time.strftime('%Y%m%d')}"
    return export_onnx(checkpoint, Path(out_dir) / f"{name}.onnx", model_id=model_id, metrics=metrics,
                       with_torch=with_torch)
