"""Huey tasks: the transcription job and the periodic upkeep (retry sweep, retention clean-up).

Huey retries a job whose run raised an unexpected exception (RETRIES times, RETRY_DELAY s apart);
a worker killed mid-job raises nothing, so `upkeep` (every minute, and once when a worker starts)
re-queues jobs whose worker is gone. Each job runs in its own worker process slot; an exception in
one job is caught here and never reaches the others.
"""
from __future__ import annotations

import logging

from huey import crontab
from huey.contrib.djhuey import HUEY, db_periodic_task, db_task

from keyscribe.web import pipeline

log = logging.getLogger("keyscribe.web.tasks")
RETRIES = 2
RETRY_DELAY = 5


@db_task(retries=RETRIES, retry_delay=RETRY_DELAY, context=True)
def transcribe_job(job_id: str, task=None) -> str | None:
    try:
        outcome = pipeline.run_job(job_id)
    except Exception:
        if task is not None and task.retries > 0 and not HUEY.immediate:
            pipeline.requeue(job_id)  # huey runs this task again in RETRY_DELAY s
        else:
            pipeline.give_up(job_id)
        raise
    return outcome.status if outcome else None


def enqueue_job(job_id: str) -> None:
    transcribe_job(job_id)


@db_periodic_task(crontab(minute="*"))
def upkeep() -> None:
    pipeline.sweep(enqueue_job)
    pipeline.remove_expired()


def startup_sweep() -> dict[str, int]:
    """Run by `keyscribe worker` before it consumes: interrupted jobs back in the queue at once."""
    result = pipeline.sweep(enqueue_job)
    if any(result.values()):
        log.info("startup: re-queued %(requeued)d interrupted and enqueued %(enqueued)d waiting job(s)",
                 result)
    return result


__all__ = ["transcribe_job", "enqueue_job", "upkeep", "startup_sweep"]
