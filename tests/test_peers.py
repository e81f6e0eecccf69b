"""The peer benchmark's pure helpers (benchmarks/peers.py); no peer is installed or run here."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from keyscribe.notes import Note, PedalInterval, Performance

PEERS = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers", PEERS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["peers"] = module
    spec.loader.exec_module(module)
    return module


def test_shim_wheel_is_a_valid_torchaudio_distribution(peers, tmp_path):
    path = peers.build_shim_wheel(tmp_path)
    assert path.name == f"torchaudio-{peers.SHIM_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        dist = f"torchaudio-{peers.SHIM_VERSION}.dist-info"
        assert {"torchaudio/__init__.py", "torchaudio/functional.py", f"{dist}/METADATA", f"{dist}/RECORD"} <= names
        meta = zf.read(f"{dist}/METADATA").decode()
        assert "Name: torchaudio\n" in meta and f"Version: {peers.SHIM_VERSION}\n" in meta
        for line in zf.read(f"{dist}/RECORD").decode().splitlines():
            name, digest, size = line.split(",")
            if not digest:
                continue
            data = zf.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expected}" and int(size) == len(data)
    # building twice gives the same bytes (the environment stamp relies on a stable wheel)
    first = path.read_bytes()
    assert peers.build_shim_wheel(tmp_path).read_bytes() == first


def _htk_filterbank(n_freqs, f_min, f_max, n_mels, sample_rate):
    """An independent numpy HTK triangular mel filter bank (no normalisation)."""
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    mel_to_hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    freqs = np.linspace(0, sample_rate // 2, n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    fb = np.zeros((n_freqs, n_mels))
    for j in range(n_mels):
        lo, mid, hi = edges[j:j + 3]
        fb[:, j] = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return fb


def test_shim_melscale_fbanks_matches_the_htk_formula(peers):
    torch = pytest.importorskip("torch")
    namespace: dict = {}
    exec(peers.SHIM_FUNCTIONAL, namespace)
    fb = namespace["melscale_fbanks"](2049, 30, 8000, 229, 44100)  # transkun 2.0's MelSpectrum
    assert isinstance(fb, torch.Tensor) and tuple(fb.shape) == (2049, 229)
    np.testing.assert_allclose(fb.numpy(), _htk_filterbank(2049, 30, 8000, 229, 44100), atol=1e-4)
    slaney = namespace["melscale_fbanks"](513, 0, 8000, 64, 16000, norm="slaney", mel_scale="slaney")
    assert tuple(slaney.shape) == (513, 64) and float(slaney.min()) >= 0
    with pytest.raises(ValueError):
        namespace["melscale_fbanks"](513, 0, 8000, 64, 16000, norm="area")


def test_has_velocity_needs_more_than_one_value(peers):
    flat = Performance((Note(0, 1, 60, 100), Note(1, 2, 62, 100)))
    assert not peers.has_velocity(flat)
    assert peers.has_velocity(Performance((Note(0, 1, 60, 100), Note(1, 2, 62, 90))))
    assert not peers.has_velocity(Performance())


def test_clip_reference_sustains_then_cuts_at_the_end(peers):
    window = Performance((Note(0.0, 0.5, 60, 80), Note(1.0, 1.2, 64, 70), Note(9.995, 10.5, 67, 60)),
                         (PedalInterval(0.4, 3.0),))
    ref = peers.clip_reference(window, 2.0)
    assert ref.pedals == ()
    assert [(n.onset_s, n.offset_s, n.pitch) for n in ref.notes] == [(0.0, 2.0, 60), (1.0, 2.0, 64)]


def test_one_line_prefers_the_error_line(peers):
    text = ("Collecting x\nWARNING: Location 'file:///opt' is ignored\nERROR: No matching distribution found for x==9\n"
            "[notice] A new release of pip\n")
    assert peers.one_line(text) == "ERROR: No matching distribution found for x==9"
    assert peers.one_line("Traceback (most recent call last):\n  File 'a'\nOSError: bad lib\n") == "OSError: bad lib"
    assert peers.one_line("") == "(no output)"
    assert len(peers.one_line("x" * 1000)) == 240


def _row(tool, file, f1, wall, rss, duration=10.0, error=None):
    scores = None if error else {"frame/f1": f1, "note/f1": f1, "note_offset/f1": f1 / 2}
    return {"tool": tool, "set": "maps", "file": file, "duration_s": duration, "wall_s": wall,
            "peak_rss_mb": rss, "scores": scores, "error": error}


def test_summarise_and_table(peers):
    rows = [_row("a", "x", 0.8, 5.0, 100), _row("a", "y", 0.6, 15.0, 300), _row("a", "z", 0, 1.0, 50, error="exit 1")]
    s = peers.summarise(rows)
    assert (s["files"], s["scored"], s["failed"]) == (3, 2, 1)
    assert s["scores"]["note/f1"] == pytest.approx(0.7)
    assert s["scores"]["note_offset_velocity/f1"] is None  # no file had it
    assert s["xrt"] == pytest.approx(20.0 / 20.0) and s["peak_rss_mb"] == 300
    results = {"tools": {"a": {"load_s": 2.5}, "b": {"error": "b: cannot install"}},
               "sets": {"maps": {"a": {"summary": s}, "b": {"summary": peers.summarise([])}}}}
    table = peers.format_peer_table(results)
    lines = table.splitlines()
    assert "load s" in lines[0] and len(lines) == 4
    assert lines[2].split()[:5] == ["maps", "a", "2/3", "0.700", "0.700"] and "2.5" in lines[2]
    assert "not run: b: cannot install" in lines[3]


def test_cache_requires_the_same_key(peers, tmp_path):
    cache = peers.Cache(tmp_path, enabled=True)
    cache.put("tool", "maps/x", {"v": 1}, {"wall_s": 3.0})
    assert cache.get("tool", "maps/x", {"v": 1}) == {"wall_s": 3.0}
    assert cache.get("tool", "maps/x", {"v": 2}) is None
    assert peers.Cache(tmp_path, enabled=False).get("tool", "maps/x", {"v": 1}) is None


@pytest.mark.skipif(shutil.which("taskset") is None or not Path("/usr/bin/time").exists(),
                    reason="needs taskset and GNU time")
def test_run_measured_times_and_kills(peers, tmp_path):
    cores = peers.pick_cores(None)
    m = peers.run_measured([sys.executable, "-c", "x = bytearray(64 * 2**20); x[::4096] = b'1' * len(x[::4096])"],
                           cores=cores, env=peers.child_env(len(cores)), log=tmp_path / "a.log", timeout_s=60)
    assert m.returncode == 0 and not m.timed_out and m.wall_s > 0 and m.peak_rss_mb > 64
    # a small tool spawned from this (large) process reports its own RSS, not this process's
    ballast = bytearray(300 * 2**20)
    ballast[::4096] = b"1" * len(ballast[::4096])
    m = peers.run_measured(["true"], cores=cores, env=peers.child_env(1), log=tmp_path / "t.log", timeout_s=60)
    assert m.returncode == 0 and m.peak_rss_mb < 50
    del ballast
    m = peers.run_measured([sys.executable, "-c", "import sys; sys.exit(3)"], cores=cores, env=peers.child_env(1),
                           log=tmp_path / "c.log", timeout_s=60)
    assert m.returncode == 3 and m.peak_rss_mb is not None
    m = peers.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], cores=cores,
                           env=peers.child_env(1), log=tmp_path / "b.log", timeout_s=0.5)
    assert m.timed_out and m.wall_s < 10
