"""A transcription job: one uploaded recording, its progress and its result files."""
from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from django.conf import settings
from django.db import models
from django.utils import timezone


def new_job_id() -> str:
    return secrets.token_urlsafe(18)  # 144 random bits, 24 URL-safe characters


class Job(models.Model):
    QUEUED, DECODING, TRANSCRIBING, ENGRAVING, DONE, FAILED = (
        "queued", "decoding", "transcribing", "engraving", "done", "failed")
    STAGES = [(s, s) for s in (QUEUED, DECODING, TRANSCRIBING, ENGRAVING, DONE, FAILED)]
    RUNNING_STAGES = (DECODING, TRANSCRIBING, ENGRAVING)
    # Result files a job offers for download: kind -> (file name suffix, MIME type).
    FILES = {
        "midi": (".mid", "audio/midi"),
        "musicxml": (".musicxml", "application/vnd.recordare.musicxml+xml"),
        "pdf": (".pdf", "application/pdf"),
        "csv": (".csv", "text/csv"),
        "json": (".json", "application/json"),
    }

    id = models.CharField(primary_key=True, max_length=32, default=new_job_id, editable=False)
    owner = models.CharField(max_length=64, db_index=True)  # the creating session's random token
    client_ip = models.GenericIPAddressField(null=True, blank=True)  # for the per-address rate limit
    original_name = models.CharField(max_length=255)  # as uploaded; only ever shown escaped
    stem = models.CharField(max_length=100)  # safe download name stem derived from original_name
    input_name = models.CharField(max_length=64)  # file name inside the job folder
    size_bytes = models.BigIntegerField(default=0)
    duration_s = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=STAGES, default=QUEUED, db_index=True)
    progress = models.FloatField(default=0.0)  # 0..1 over the whole job
    error = models.TextField(blank=True, default="")
    warning = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=128, blank=True, default="")  # host:pid running it
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    files = models.JSONField(default=dict, blank=True)  # kind -> file name in the job folder
    summary = models.JSONField(default=dict, blank=True)  # notes, key, metre, tempo, pages

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "created_at"]), models.Index(fields=["client_ip", "created_at"])]

    def __str__(self) -> str:
        return f"{self.id} {self.original_name} {self.status}"

    @property
    def folder(self) -> Path:
        return Path(settings.MEDIA_ROOT) / "jobs" / self.id

    @property
    def input_path(self) -> Path:
        return self.folder / self.input_name

    @property
    def api_status(self) -> str:
        """The coarse status of the JSON API: queued | running | done | failed."""
        return "running" if self.status in self.RUNNING_STAGES else self.status

    @property
    def finished(self) -> bool:
        return self.status in (self.DONE, self.FAILED)

    @property
    def latency_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()

    def file_path(self, kind: str) -> Path | None:
        name = self.files.get(kind)
        return self.folder / name if name else None

    def delete_files(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
