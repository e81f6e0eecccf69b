"""Restart tests with real processes: a worker killed mid-job (SIGKILL, no clean-up) and started again
finishes the job; the load benchmark's 20 concurrent uploads all complete."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from keyscribe.web import testing

ROOT = Path(__file__).resolve().parents[1]
RUNNING = ("decoding", "transcribing", "engraving")


def wait_for(session: testing.Session, job_id: str, stages, timeout: float, step: float = 0.05) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, job = session.get_json(f"/api/jobs/{job_id}")
        assert code == 200, job
        if job["stage"] in stages:
            return job
        time.sleep(step)
    raise AssertionError(f"job {job_id} not in {stages} after {timeout} s: {job}")


def test_worker_killed_mid_job_then_restarted_completes(tmp_path):
    data = tmp_path / "data"
    clip = testing.piano_clip(tmp_path / "long.ogg", seconds=30.0, prefer_example=False)
    web = testing.Server(data, command="serve", args=["--no-worker"]).start()  # workers come and go
    worker = testing.Server(data, command="worker", log_path=data / "worker1.log").start()
    try:
        session = testing.Session(web.url)
        status, body = session.upload("long.ogg", clip.read_bytes())
        assert status == 201, body
        job_id = body["id"]
        status, body = session.upload("second.ogg", clip.read_bytes())  # waits in the queue meanwhile
        assert status == 201, body
        second_id = body["id"]
        job = wait_for(session, job_id, RUNNING, timeout=120)
        worker.kill()  # the whole worker process group, mid-job
        time.sleep(1.0)
        code, job = session.get_json(f"/api/jobs/{job_id}")
        assert job["stage"] in RUNNING, f"the job was not interrupted: {job}"
        worker2 = testing.Server(data, command="worker", log_path=data / "worker2.log").start()
        try:
            job = wait_for(session, job_id, ("done", "failed"), timeout=600, step=0.5)
            assert job["status"] == "done", (job, worker2.log())
            assert "re-queued" in worker2.log()
            code, midi = session.request("GET", job["files"]["midi"])
            assert code == 200 and midi[:4] == b"MThd"
            second = wait_for(session, second_id, ("done", "failed"), timeout=600, step=0.5)
            assert second["status"] == "done", second  # the queued job survived the kill too
        finally:
            worker2.stop()
    finally:
        worker.stop()
        web.stop()


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_serve_restarts_its_worker_when_it_dies(tmp_path):
    import os
    import signal
    clip = testing.piano_clip(tmp_path / "clip.ogg", seconds=4.0, prefer_example=False)
    with testing.Server(tmp_path / "data") as web:
        (worker_pid,) = _children(web.proc.pid)
        os.kill(worker_pid, signal.SIGKILL)  # the worker that `keyscribe serve` started
        session = testing.Session(web.url)
        status, body = session.upload("clip.ogg", clip.read_bytes())
        assert status == 201, body
        job = wait_for(session, body["id"], ("done", "failed"), timeout=300, step=0.5)
        assert job["status"] == "done", (job, web.log())
        assert "restarting" in web.log()
        assert _children(web.proc.pid) != [worker_pid]


def test_load_twenty_concurrent_uploads(tmp_path):
    out = tmp_path / "load.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "web_load.py"), "--jobs", "20",
                          "--workers", "2", "--seconds", "4", "--json", str(out)],
                         capture_output=True, text=True, timeout=1200)
    print(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK: 20/20 done" in run.stdout
