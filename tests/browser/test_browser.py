"""Real-browser test: Debian's chromium (driven by playwright-core from npm) against `keyscribe serve`.

Uploads the bundled example, waits for the real pipeline, checks the score SVG has notes, presses play
and sees notes highlighted, downloads the MIDI and parses it; any request to an address other than
localhost fails the test. Screenshots go to a temporary folder, or to KEYSCRIBE_WEB_SHOTS (e.g. docs/web)
when set.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from keyscribe.web import testing

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("results_page.mjs")
CHROMIUM = os.environ.get("KEYSCRIBE_CHROMIUM", "/usr/bin/chromium")


def test_upload_score_play_download_in_chromium(tmp_path):
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: run scripts/setup-system.sh (apt chromium)"
    assert (ROOT / "node_modules" / "playwright-core").is_dir(), "run scripts/setup-system.sh (npm)"
    assert shutil.which("node"), "node is missing: run scripts/setup-system.sh"
    recording = testing.piano_clip(tmp_path / "example.ogg", seconds=8.0)
    shots = Path(os.environ.get("KEYSCRIBE_WEB_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    try:  # while the shipped model hears nothing, a random-weight one shows the score paths
        substitute = testing.model_hearing_notes(recording, tmp_path / "model")
    except ImportError:
        substitute = None
    env = {"KEYSCRIBE_MODEL": substitute} if substitute else {}
    with testing.Server(tmp_path / "data", extra_env=env) as server:
        run = subprocess.run(["node", str(SCRIPT), server.url, str(recording), str(tmp_path), str(shots)],
                             cwd=ROOT, capture_output=True, text=True, timeout=900)
        log = server.log()
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result from the browser script:\n{run.stdout}\n{run.stderr}\n{log}"
    seen = json.loads(lines[-1])
    assert run.returncode == 0, f"{seen.get('error')}\n{run.stderr}\nserver log:\n{log}"
    assert seen["external"] == [], seen["external"]
    assert seen["pageErrors"] == []
    assert seen["historyRows"] == 1

    from keyscribe.midi import read_midi
    assert seen["midiName"] == "example.mid"
    assert len(read_midi(seen["midiPath"]).notes) == seen["notes"]
    assert (shots / "results.png").stat().st_size > 10_000
    if seen["notes"] == 0:  # an early shipped model that hears nothing: the page must say so
        assert "no notes were heard" in (seen["warning"] or "")
        pytest.skip("the shipped model found no notes in the example, so there is no score to check")
    assert seen["scoreNotes"] > 0
    assert seen["highlightedInScore"] > 0 and seen["highlightedInList"] > 0
