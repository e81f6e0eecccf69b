"""Helpers for the web app's tests, the browser test and the load benchmark (not used when serving).

`configure(data_dir)` points the settings at a fresh data folder and migrates it; `piano_clip(path)`
writes a short piano recording: the bundled example when a teammate shipped one, otherwise a few bars
rendered with the Salamander samples (or, without them, additive synthesis).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import json
import uuid
import http.cookiejar
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = PACKAGE_ROOT / "examples" / "example.ogg"
_configured: Path | None = None


def configure(data_dir: str | os.PathLike | None = None, **env: str) -> Path:
    """Set up Django on a fresh data folder (once per process) with a migrated database."""
    global _configured
    if _configured is not None:
        return _configured
    data = Path(data_dir or tempfile.mkdtemp(prefix="keyscribe-web-test-"))
    os.environ["KEYSCRIBE_DATA_DIR"] = str(data)
    os.environ.setdefault("KEYSCRIBE_LOG_LEVEL", "WARNING")
    os.environ.update(env)
    from keyscribe.web import setup
    setup()
    from django.core.management import call_command
    call_command("migrate", interactive=False, verbosity=0)
    _configured = data
    return data


def melody(seconds: float = 6.0):
    """A little two-hand piece (a C major tune over broken chords) as a `Performance`."""
    from keyscribe.notes import Note, PedalInterval, Performance
    beat = 0.5
    tune = [72, 74, 76, 77, 79, 77, 76, 74, 72, 76, 79, 84, 79, 76, 74, 72]
    bass = [48, 55, 52, 55, 53, 57, 55, 59]
    notes, pedals = [], []
    t = 0.25
    i = 0
    while t + beat <= seconds:
        notes.append(Note(t, t + beat * 0.9, tune[i % len(tune)], 80))
        if i % 2 == 0:
            notes.append(Note(t, t + beat * 1.8, bass[(i // 2) % len(bass)], 60))
        if i % 8 == 0:
            pedals.append(PedalInterval(t + 0.05, min(seconds, t + beat * 7.5)))
        t += beat
        i += 1
    return Performance(tuple(notes), tuple(pedals))


def piano_clip(path: str | os.PathLike, seconds: float = 6.0, sample_rate: int = 44100,
               prefer_example: bool = True) -> Path:
    """Write a short solo-piano recording to `path` (format from its suffix, e.g. .wav/.flac/.ogg)."""
    import soundfile as sf
    path = Path(path)
    if prefer_example and EXAMPLE.is_file():
        if path.suffix.lower() == EXAMPLE.suffix:
            path.write_bytes(EXAMPLE.read_bytes())
            return path
    perf = melody(seconds)
    n = int((seconds + 1.0) * sample_rate)
    audio = None
    try:
        from keyscribe.data.sampler import find_samples, get_sampler
        if find_samples() is not None:
            audio = get_sampler(sample_rate).render(perf, n)
    except Exception:
        audio = None
    if audio is None:  # additive synthesis: decaying harmonics
        t = np.arange(n) / sample_rate
        audio = np.zeros(n, np.float32)
        for note in perf.with_sustain().notes:
            f0 = 440.0 * 2 ** ((note.pitch - 69) / 12)
            a, b = int(note.onset_s * sample_rate), min(n, int((note.offset_s + 0.3) * sample_rate))
            tt = t[a:b] - note.onset_s
            env = np.exp(-tt * 2.5) * np.minimum(1.0, tt / 0.004)
            for h in range(1, 6):
                audio[a:b] += (note.velocity / 127) * 0.2 / h * env * np.sin(2 * np.pi * f0 * h * tt)
    audio = 0.8 * audio / max(1e-6, float(np.abs(audio).max()))
    sf.write(str(path), audio.astype(np.float32), sample_rate)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`keyscribe serve` (or `keyscribe worker` alone) as a child process on a free port."""

    def __init__(self, data_dir: Path, port: int | None = None, command: str = "serve",
                 extra_env: dict | None = None, log_path: Path | None = None,
                 args: list[str] | None = None) -> None:
        self.data_dir, self.command, self.extra_args = Path(data_dir), command, list(args or [])
        self.port = port or free_port()
        self.env = dict(os.environ, KEYSCRIBE_DATA_DIR=str(data_dir), KEYSCRIBE_ACCESS_LOG="0",
                        PYTHONUNBUFFERED="1", **(extra_env or {}))
        self.log_path = log_path or self.data_dir / f"{command}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 60.0) -> "Server":
        args = [sys.executable, "-m", "keyscribe.cli", self.command]
        if self.command == "serve":
            args += ["--port", str(self.port), "--host", "127.0.0.1"]
        args += self.extra_args
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if self.command == "serve":
            self.wait_ready(wait)
        return self

    def wait_ready(self, wait: float) -> None:
        import urllib.request
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keyscribe {self.command} exited: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"keyscribe {self.command} did not answer in {wait} s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group (server, worker and its worker processes) at once."""
        import signal
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        import signal
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                pass
            else:  # leftover children in the group
                os.killpg(self.proc.pid, signal.SIGKILL)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Session:
    """One browser-like client: its own cookie jar (so its own keyscribe session)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 120.0) -> tuple[int, bytes]:
        assert path.startswith("/")
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def upload(self, name: str, data: bytes) -> tuple[int, dict]:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        status, raw = self.request("POST", "/api/jobs", body,
                                   {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return status, json.loads(raw or b"{}")

    def get_json(self, path: str) -> tuple[int, dict]:
        status, raw = self.request("GET", path, headers={"Accept": "application/json"})
        return status, json.loads(raw or b"{}")


def random_model(folder: str | os.PathLike) -> Path:
    """A small random-weight CR-GCN exported to ONNX (needs torch): the real transcription machinery
    with a model that finds plenty of (meaningless) notes, for checking the score and playback paths
    while the shipped model is too early in its training to hear anything."""
    import torch

    from keyscribe import inference
    from keyscribe.model import ModelConfig, Transcriber
    torch.manual_seed(0)
    cooccurrence = np.random.default_rng(0).random((88, 88)).astype(np.float32)
    config = ModelConfig(conv_channels=(4, 8, 8), cnn_out=32, lstm_hidden=16, key_embedding=8, gcn_hidden=16)
    model = Transcriber(config, cooccurrence).eval()
    with torch.no_grad():  # sharpen a fresh init's ~0.5 outputs so that notes come and go
        model.pedal.weight.mul_(40.0)
        model.heads.embedding.mul_(30.0)
    return inference.export_onnx(model, Path(folder) / "random-init.onnx", model_id="random-init-test")


def model_hearing_notes(clip: str | os.PathLike, folder: str | os.PathLike) -> str | None:
    """None when the shipped model finds notes in `clip`; otherwise the path of `random_model`, with
    a warning, so that tests of what is drawn from the notes still run. Raises ImportError without
    torch."""
    import warnings

    from keyscribe.errors import ModelError
    from keyscribe.transcribe import transcribe
    try:
        if transcribe(clip).notes:
            return None
        why = "the shipped model finds no notes in the test recording"
    except ModelError as exc:
        why = f"the shipped model cannot be used ({exc})"
    path = random_model(folder)
    warnings.warn(f"{why}: score and playback checks use a random-weight model instead")
    return str(path)
