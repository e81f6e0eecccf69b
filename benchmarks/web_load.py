"""Load test of the web app: N concurrent uploads (each its own session) through the JSON API.

Starts `keyscribe serve` on a free localhost port with a fresh data folder (or uses --url), uploads a
short piano recording from N threads at once, polls every job to the end, and checks that every upload
got a job, every job finished `done`, and every job's MIDI downloads. Reports upload time and job
latency (upload start -> done seen by the client; and created -> finished on the server): median and
worst. Only localhost is ever contacted. Exit status 0 when all N completed, 1 otherwise.

    .venv/bin/python benchmarks/web_load.py                 # 20 uploads, server with 2 workers
    .venv/bin/python benchmarks/web_load.py --jobs 50 --workers 1 --json out.json
    .venv/bin/python benchmarks/web_load.py --url http://127.0.0.1:8000   # an already running server
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from keyscribe.web import testing  # noqa: E402
from keyscribe.web.testing import Session  # noqa: E402


def run_client(base: str, i: int, data: bytes, start: threading.Barrier, out: dict, deadline: float) -> None:
    rec = out[i] = {"client": i}
    session = Session(base)
    try:
        start.wait()
        t0 = time.monotonic()
        status, body = session.upload(f"load-{i:02d}.ogg", data)
        rec["upload_s"] = time.monotonic() - t0
        rec["upload_status"] = status
        if status != 201:
            rec["error"] = body.get("error", f"HTTP {status}")
            return
        rec["id"] = body["id"]
        stages = []
        while time.monotonic() < deadline:
            code, job = session.get_json(f"/api/jobs/{body['id']}")
            if code != 200:
                rec["error"] = f"status HTTP {code}: {job.get('error')}"
                return
            if not stages or stages[-1] != job["stage"]:
                stages.append(job["stage"])
            if job["status"] in ("done", "failed"):
                rec["latency_s"] = time.monotonic() - t0
                rec["server_latency_s"] = job.get("latency_s")
                rec["status"] = job["status"]
                rec["stage_s"] = (job.get("summary") or {}).get("seconds")
                rec["error"] = job.get("error")
                if job["status"] == "done":
                    code, midi = session.request("GET", job["files"]["midi"])
                    rec["midi_ok"] = code == 200 and midi[:4] == b"MThd"
                break
            time.sleep(0.5)
        else:
            rec["error"] = "timed out"
        rec["stages"] = stages
    except Exception as exc:  # a lost connection is a result too
        rec["error"] = f"{type(exc).__name__}: {exc}"


def summarise(records: list[dict], wall_s: float) -> dict:
    done = [r for r in records if r.get("status") == "done" and r.get("midi_ok")]
    lat = sorted(r["latency_s"] for r in done)
    srv = sorted(r["server_latency_s"] for r in done if r.get("server_latency_s") is not None)
    up = sorted(r["upload_s"] for r in records if "upload_s" in r)
    ids = [r["id"] for r in records if "id" in r]
    return {
        "jobs": len(records), "accepted": len(ids), "distinct_ids": len(set(ids)), "done": len(done),
        "lost_or_failed": len(records) - len(done), "wall_s": round(wall_s, 2),
        "latency_median_s": round(statistics.median(lat), 2) if lat else None,
        "latency_worst_s": round(lat[-1], 2) if lat else None,
        "server_latency_median_s": round(statistics.median(srv), 2) if srv else None,
        "server_latency_worst_s": round(srv[-1], 2) if srv else None,
        "upload_median_s": round(statistics.median(up), 3) if up else None,
        "upload_worst_s": round(up[-1], 3) if up else None,
        "stage_median_s": {stage: round(statistics.median(r["stage_s"][stage] for r in done if r.get("stage_s")), 2)
                           for stage in ("decoding", "transcribing", "engraving")
                           if any(r.get("stage_s") for r in done)},
        "errors": sorted({r["error"] for r in records if r.get("error")}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=20, help="concurrent uploads (default 20)")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the started server")
    p.add_argument("--seconds", type=float, default=6.0, help="length of the uploaded recording")
    p.add_argument("--url", help="use this running server (localhost only) instead of starting one")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    p.add_argument("--json", help="write the summary and per-job records to this file")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="keyscribe-load-"))
    data = testing.piano_clip(work / "clip.ogg", seconds=args.seconds).read_bytes()
    server = None
    if args.url:
        host = urllib.parse.urlparse(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            p.error("--url must be a localhost address")
        base = args.url.rstrip("/")
    else:
        server = testing.Server(work / "data", extra_env={
            "KEYSCRIBE_WORKERS": str(args.workers), "KEYSCRIBE_RATE_LIMIT": "1000/60"}).start()
        base = server.url
    print(f"{args.jobs} concurrent uploads of {len(data) / 1024:.0f} KiB ({args.seconds:.0f} s of piano) "
          f"to {base}" + (f" ({args.workers} worker processes)" if server else ""), flush=True)
    records: dict[int, dict] = {}
    barrier = threading.Barrier(args.jobs)
    deadline = time.monotonic() + args.timeout
    threads = [threading.Thread(target=run_client, args=(base, i, data, barrier, records, deadline))
               for i in range(args.jobs)]
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        if server:
            server.stop()
    summary = summarise([records[i] for i in range(args.jobs)], time.monotonic() - t0)
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "jobs": records}, indent=2))
    ok = summary["done"] == args.jobs == summary["distinct_ids"]
    print(f"{'OK' if ok else 'FAILED'}: {summary['done']}/{args.jobs} done; job latency median "
          f"{summary['latency_median_s']} s, worst {summary['latency_worst_s']} s; wall {summary['wall_s']} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
