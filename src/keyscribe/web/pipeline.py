"""The job pipeline: decode -> transcribe -> engrave -> result files, with progress in the database.

`run_job(job_id)` is what the queue runs (see `tasks`). It is idempotent: it first claims the job with
one atomic UPDATE (queued -> decoding), so a job enqueued twice (a retry sweep racing a slow queue) runs
once. While it runs, a heartbeat thread stamps the job every few seconds; a job whose heartbeat stops
(its worker was killed) is put back in the queue by `sweep()` up to `MAX_ATTEMPTS` tries.

Errors a user caused (`KeyscribeError`: undecodable, too long, silent) fail the job at once with their
one-line message; anything else is logged with its traceback and retried.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections
from django.db.models import F, Q
from django.utils import timezone

from keyscribe.errors import AudioError, KeyscribeError
from keyscribe.web.models import Job

log = logging.getLogger("keyscribe.web.pipeline")

# Share of the whole job each stage takes, for the progress bar (transcription dominates).
_STAGE_SPAN = {Job.DECODING: (0.0, 0.05), Job.TRANSCRIBING: (0.05, 0.85), Job.ENGRAVING: (0.85, 1.0)}
INTERNAL_ERROR = "internal error while processing this recording; it was logged for the maintainers"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class JobGone(Exception):
    """The job was deleted (retention, the user) or taken over by another worker while running."""


@dataclass
class Outcome:
    status: str
    error: str = ""


# ----------------------------------------------------------------------------------------- progress
class Progress:
    """Writes stage and progress to the job row (only when they change enough) and keeps a heartbeat.

    Every write is conditional on this worker still owning the job, so a worker that lost the job
    (deleted, or re-queued after it was presumed dead) stops at its next progress report.
    """

    def __init__(self, job_id: str, owner: str) -> None:
        self.job_id, self.owner = job_id, owner
        self.stage = Job.DECODING
        self.value = 0.0
        self._last_write = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)
        self.lost = False

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _mine(self):
        return Job.objects.filter(pk=self.job_id, worker=self.owner, status__in=Job.RUNNING_STAGES)

    def _write(self, **fields) -> None:
        with self._lock:
            n = self._mine().update(heartbeat_at=timezone.now(), **fields)
            self._last_write = time.monotonic()
        if n == 0:
            self.lost = True
            raise JobGone(self.job_id)

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        self.value = _STAGE_SPAN[stage][0]
        self._write(status=stage, progress=self.value)

    def report(self, fraction: float) -> None:
        """Progress within the current stage, 0..1."""
        lo, hi = _STAGE_SPAN[self.stage]
        value = lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0)
        if value - self.value >= 0.01 or time.monotonic() - self._last_write > settings.HEARTBEAT_S:
            self.value = value
            self._write(progress=round(value, 4))
        elif self.lost:
            raise JobGone(self.job_id)

    def _beat(self) -> None:
        from django.db import connection
        started = time.monotonic()
        try:
            while not self._stop.wait(settings.HEARTBEAT_S):
                if time.monotonic() - started > settings.JOB_TIMEOUT_S:
                    self._time_out()
                    return
                try:
                    with self._lock:
                        n = self._mine().update(heartbeat_at=timezone.now())
                    if n == 0:
                        self.lost = True
                        return
                except Exception:  # the database is briefly unavailable: the next beat retries
                    log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection


    def _time_out(self) -> None:
        """The job ran past JOB_TIMEOUT_S (a hang): fail it and free the worker for the others."""
        import multiprocessing
        message = (f"processing took longer than the limit of {settings.JOB_TIMEOUT_S:.0f} s and was "
                   "stopped")
        n = self._mine().update(status=Job.FAILED, error=message, finished_at=timezone.now())
        self.lost = True
        log.error("job %s: %s", self.job_id, message)
        if n and multiprocessing.current_process().name != "MainProcess":
            # a huey worker process stuck in native code cannot be interrupted: end it; the
            # consumer starts a fresh worker process in its place
            os._exit(70)


# ----------------------------------------------------------------------------------------- running
def claim(job_id: str) -> Job | None:
    """Atomically take a queued job for this worker; None if it is gone or someone else has it."""
    now = timezone.now()
    me = worker_id()
    n = Job.objects.filter(pk=job_id, status=Job.QUEUED).update(
        status=Job.DECODING, progress=0.0, worker=me, started_at=now, heartbeat_at=now,
        attempts=F("attempts") + 1, error="")
    if n == 0:
        return None
    return Job.objects.get(pk=job_id)


def run_job(job_id: str) -> Outcome | None:
    """Run one job start to end. Returns None when there was nothing to do (not queued)."""
    job = claim(job_id)
    if job is None:
        log.info("job %s: not queued any more, nothing to do", job_id)
        return None
    if job.attempts > settings.MAX_ATTEMPTS:
        return _fail(job, f"gave up after {settings.MAX_ATTEMPTS} interrupted tries "
                          "(the worker stopped while processing this recording)")
    log.info("job %s: attempt %d on %s (%s)", job.id, job.attempts, job.worker, job.original_name)
    progress = Progress(job.id, job.worker)
    try:
        with progress:
            warning = _process(job, progress)
    except JobGone:
        log.info("job %s: deleted or taken over while running; stopped", job_id)
        return None
    except KeyscribeError as exc:
        return _fail(job, str(exc))
    except Exception:
        log.exception("job %s: unexpected error", job.id)
        raise  # the task wrapper retries or fails the job
    n = Job.objects.filter(pk=job.id, worker=job.worker, status__in=Job.RUNNING_STAGES).update(
        status=Job.DONE, progress=1.0, finished_at=timezone.now(), heartbeat_at=timezone.now(),
        files=job.files, summary=job.summary, duration_s=job.duration_s, warning=warning)
    if n == 0:
        return None
    log.info("job %s: done in %.1f s", job.id, (timezone.now() - job.created_at).total_seconds())
    return Outcome(Job.DONE)


def _fail(job: Job, message: str) -> Outcome:
    log.info("job %s: failed: %s", job.id, message)
    Job.objects.filter(pk=job.id).exclude(status=Job.DONE).update(
        status=Job.FAILED, error=message[:2000], finished_at=timezone.now())
    return Outcome(Job.FAILED, message)


def give_up(job_id: str, message: str = INTERNAL_ERROR) -> None:
    """Fail a job after its last try raised an unexpected exception."""
    Job.objects.filter(pk=job_id).exclude(status=Job.DONE).update(
        status=Job.FAILED, error=message, finished_at=timezone.now())


def requeue(job_id: str) -> None:
    """Put a running job back to queued (before a retry of the same task)."""
    Job.objects.filter(pk=job_id, status__in=Job.RUNNING_STAGES).update(status=Job.QUEUED, worker="")


# ----------------------------------------------------------------------------------------- stages
def _process(job: Job, progress: Progress) -> str:
    from keyscribe import audio

    folder, path, stem = job.folder, job.input_path, job.stem
    if not path.is_file():
        raise AudioError(f"{job.original_name}: the uploaded file is missing on the server")

    # decoding: the recording must decode, within the duration limit, before the model runs
    t0 = time.monotonic()
    progress.set_stage(Job.DECODING)
    duration = audio.audio_duration_s(path)
    if duration is not None and duration > settings.MAX_DURATION_S:
        raise AudioError(f"{job.original_name}: lasts {duration:.0f} s, longer than the limit of "
                         f"{settings.MAX_DURATION_S:.0f} s")
    rate = audio.DEFAULT_CONFIG.sample_rate
    n_samples, peak = 0, 0.0
    for chunk in audio.iter_audio_chunks(path, rate, chunk_s=30.0, max_duration_s=settings.MAX_DURATION_S):
        n_samples += len(chunk)
        peak = max(peak, float(abs(chunk).max()))
        if duration:
            progress.report(n_samples / rate / duration)
    job.duration_s = n_samples / rate
    if peak < 1e-4:
        raise AudioError(f"{job.original_name}: the recording is silent")
    progress.report(1.0)

    # transcribing
    t1 = time.monotonic()
    progress.set_stage(Job.TRANSCRIBING)
    tr = _transcribe(path, progress)
    perf = tr.performance
    files: dict[str, str] = {}
    tr.to_midi(folder / f"{stem}.mid")
    files["midi"] = f"{stem}.mid"
    tr.to_csv(folder / f"{stem}.csv")
    files["csv"] = f"{stem}.csv"
    tr.to_json(folder / f"{stem}.json")
    files["json"] = f"{stem}.json"
    job.files = files
    progress.report(1.0)

    # engraving
    t2 = time.monotonic()
    progress.set_stage(Job.ENGRAVING)
    summary = {"notes": len(perf.notes), "pedals": len(perf.pedals),
               "duration_s": round(job.duration_s, 3)}
    score_q: list[float | None] = [None] * len(perf.notes)
    warning = ""
    if perf.notes:
        from keyscribe.errors import ScoreError
        from keyscribe.score import performance_to_score, write_score
        try:
            score = performance_to_score(perf, title=job.stem.replace("_", " "))
            progress.report(0.5)
            write_score(score, folder, stem, formats=("musicxml",))
            # The PDF is made from the MusicXML on its first download (views.download): the page shows
            # the score without it, and cairo's drawing of the pages was 25 of 56 s of this stage in a
            # profile of a 4-minute piece (the score MIDI of Chopin op. 10/3, 4 pages) on a busy machine.
            files["musicxml"], files["pdf"] = f"{stem}.musicxml", f"{stem}.pdf"
            beat_ql = float(score.metre.beat_ql)
            for q in score.qnotes:
                if 0 <= q.index < len(score_q):
                    score_q[q.index] = round(float(q.onset) * beat_ql, 4)
            summary.update(key=score.key.name, time_signature=score.time_signature,
                           tempo_bpm=round(float(score.tempo_bpm), 1))
        except ScoreError as exc:
            warning = f"no sheet music: {exc}"
    else:
        warning = "no notes were heard in this recording, so there is no sheet music"
    # names starting with "_" never collide with "<stem>.<ext>": safe stems never start with "_"
    _write_view(perf, score_q, job.duration_s, folder / "_view.json")
    files["view"] = "_view.json"
    summary["seconds"] = {"decoding": round(t1 - t0, 2), "transcribing": round(t2 - t1, 2),
                          "engraving": round(time.monotonic() - t2, 2)}
    job.summary = summary
    progress.report(1.0)
    return warning


def _transcribe(path: Path, progress: Progress):
    """keyscribe.transcribe.transcribe with the worker's model, its progress written to the job."""
    from keyscribe.transcribe import transcribe

    return transcribe(path, model=_model(), progress=lambda done_s, total_s: progress.report(done_s / total_s))


_MODELS: dict = {}


def _model():
    """The transcription model (settings.MODEL, or the shipped one), loaded once per worker process."""
    from keyscribe.inference import load_model

    key = settings.MODEL or ""
    if key not in _MODELS:
        _MODELS[key] = load_model(settings.MODEL or None, device=settings.DEVICE)
    return _MODELS[key]


def _write_view(perf, score_q: list, duration_s: float, path: Path) -> None:
    """What the result page draws: notes (with their position in the score), pedals, length."""
    from keyscribe.notes import extend_by_pedal, pitch_name
    sounding = extend_by_pedal(perf.notes, perf.pedals)  # same (onset, pitch) order as perf.notes
    notes = [{"on": round(n.onset_s, 4), "off": round(n.offset_s, 4), "soff": round(s.offset_s, 4),
              "pitch": n.pitch, "name": pitch_name(n.pitch), "vel": n.velocity, "q": score_q[i]}
             for i, (n, s) in enumerate(zip(perf.notes, sounding))]
    pedals = [[round(p.onset_s, 4), round(p.offset_s, 4)] for p in perf.pedals]
    path.write_text(json.dumps({"duration_s": round(duration_s, 3), "notes": notes, "pedals": pedals},
                               separators=(",", ":")), encoding="utf-8")


# ----------------------------------------------------------------------------------------- upkeep
def _alive_here(worker: str) -> bool | None:
    """Whether the worker process `host:pid` is alive, or None when it runs on another host."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(enqueue) -> dict[str, int]:
    """Put interrupted jobs back in the queue and enqueue queued jobs the queue does not hold.

    A running job is interrupted when its worker process on this host is gone, or its heartbeat is
    older than STALE_S (workers on other hosts). Enqueueing twice is harmless (see `claim`).
    `enqueue(job_id)` puts one job in the queue.
    """
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.STALE_S)
    me = worker_id()
    requeued = 0
    for job in Job.objects.filter(status__in=Job.RUNNING_STAGES).exclude(worker=me):
        alive = _alive_here(job.worker)
        stale = job.heartbeat_at is None or job.heartbeat_at < stale_before
        if alive is False or (alive is None and stale):
            n = Job.objects.filter(pk=job.pk, worker=job.worker, status=job.status).update(
                status=Job.QUEUED, worker="", progress=0.0)
            if n:
                log.warning("job %s: worker %s stopped during %s; re-queued (try %d of %d)",
                            job.pk, job.worker, job.status, job.attempts + 1, settings.MAX_ATTEMPTS)
                enqueue(job.pk)
                requeued += 1
    enqueued = 0
    pending = _pending_job_ids()
    for job_id in Job.objects.filter(status=Job.QUEUED, created_at__lt=now - timedelta(seconds=5)
                                     ).values_list("pk", flat=True):
        if pending is not None and job_id in pending:
            continue
        enqueue(job_id)
        enqueued += 1
    return {"requeued": requeued, "enqueued": enqueued}


def _pending_job_ids() -> set[str] | None:
    from huey.contrib.djhuey import HUEY
    try:
        return {t.args[0] for t in HUEY.pending() if t.args}
    except Exception:  # a queue we cannot list: enqueue everything queued (duplicates are no-ops)
        log.warning("cannot list the queue", exc_info=True)
        return None


def remove_expired() -> int:
    """Delete jobs (and their folders) older than RETENTION_HOURS, and stale upload temp files."""
    cutoff = timezone.now() - timedelta(hours=settings.RETENTION_HOURS)
    n = 0
    for job in Job.objects.filter(created_at__lt=cutoff).filter(
            Q(status__in=(Job.DONE, Job.FAILED, Job.QUEUED)) |
            Q(heartbeat_at__lt=timezone.now() - timedelta(seconds=settings.STALE_S))):
        job.delete_files()
        job.delete()
        n += 1
    # folders without a job row (a crash between storing an upload and committing its job)
    jobs_dir = Path(settings.MEDIA_ROOT) / "jobs"
    for folder in jobs_dir.iterdir() if jobs_dir.is_dir() else []:
        try:
            old = time.time() - folder.stat().st_mtime > 3600
        except OSError:
            continue
        if old and not Job.objects.filter(pk=folder.name).exists():
            shutil.rmtree(folder, ignore_errors=True)
    tmp = Path(settings.FILE_UPLOAD_TEMP_DIR)
    for f in tmp.glob("*") if tmp.is_dir() else []:
        try:
            if time.time() - f.stat().st_mtime > 24 * 3600:
                f.unlink()
        except OSError:
            pass
    from django.contrib.sessions.models import Session
    Session.objects.filter(expire_date__lt=timezone.now()).delete()
    if n:
        log.info("removed %d job(s) older than %.0f h", n, settings.RETENTION_HOURS)
    return n
