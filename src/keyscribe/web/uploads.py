"""Accepting uploads: size limit while receiving, content sniffing, safe names, rate limit, enqueue.

An upload is written into its job folder and the job row is committed before the job is enqueued, so
a queue that is down (or a crash right after the upload) loses nothing: `pipeline.sweep` enqueues
queued jobs the queue does not hold.
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile
from django.db import transaction
from django.utils import timezone

from keyscribe.errors import AudioError
from keyscribe.web.models import Job, new_job_id

log = logging.getLogger("keyscribe.web.uploads")


@dataclass
class UploadError(Exception):
    message: str
    status: int = 400

    def __str__(self) -> str:
        return self.message


class LimitedUploadHandler(FileUploadHandler):
    """First upload handler: drops any file that grows past MAX_UPLOAD_BYTES while it is received
    (its name is remembered in `request.oversize_uploads`), so an oversize file never fills the disk."""

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > settings.MAX_UPLOAD_BYTES:
            if self.request is not None:
                names = getattr(self.request, "oversize_uploads", [])
                names.append(self.file_name or "(unnamed)")
                self.request.oversize_uploads = names
            raise SkipFile()
        return raw_data

    def file_complete(self, file_size: int):
        return None


def owner_token(request, create: bool = True) -> str | None:
    """The session's random owner token, the key that makes jobs visible to this session only."""
    import secrets
    token = request.session.get("owner")
    if token is None and create:
        token = secrets.token_urlsafe(24)
        request.session["owner"] = token
    return token


def safe_stem(name: str) -> str:
    """A file name stem safe on every OS and in a Content-Disposition header."""
    stem = Path(name.replace("\\", "/")).name
    stem = stem.rsplit(".", 1)[0] if "." in stem.strip(".") else stem
    stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")
    return stem[:80] or "recording"


def safe_suffix(name: str) -> str:
    suffix = Path(name.replace("\\", "/")).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".bin"


def client_ip(request) -> str | None:
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if forwarded:
            return forwarded[-1][:45]
    return request.META.get("REMOTE_ADDR") or None


def check_rate(owner: str, n_new: int, ip: str | None = None) -> None:
    """Per-session limit, and a looser per-address one (a client can always start a new session)."""
    for field, value, (limit, window_s), who in (
            ("owner", owner, settings.RATE_LIMIT, "session"),
            ("client_ip", ip, settings.IP_RATE_LIMIT, "address")):
        if value is None:
            continue
        since = timezone.now() - timedelta(seconds=window_s)
        recent = Job.objects.filter(**{field: value}, created_at__gte=since).count()
        if recent + n_new > limit:
            minutes = math.ceil(window_s / 60)
            raise UploadError(f"too many uploads: at most {limit} recordings per {minutes} minutes per "
                              f"{who}; please wait and try again", 429)


def _display_name(name: str) -> str:
    name = Path((name or "").replace("\\", "/")).name or "recording"
    return "".join(c for c in name if c.isprintable())[:255] or "recording"


def accept(uploaded, owner: str, ip: str | None = None) -> Job:
    """Store one uploaded file as a new queued job, or raise UploadError with a message for people."""
    display = _display_name(uploaded.name)
    if uploaded.size == 0:
        raise UploadError(f"{display}: the file is empty (0 bytes)")
    if uploaded.size > settings.MAX_UPLOAD_BYTES:
        raise UploadError(f"{display}: larger than the upload limit of "
                          f"{settings.MAX_UPLOAD_BYTES // (1024 * 1024)} MB", 413)
    job_id = new_job_id()
    folder = Path(settings.MEDIA_ROOT) / "jobs" / job_id
    folder.mkdir(parents=True, mode=0o700)
    input_name = "_input" + safe_suffix(display)  # "_": never a result name (see safe_stem)
    path = folder / input_name
    try:
        temporary = getattr(uploaded, "temporary_file_path", None)
        if temporary is not None and Path(temporary()).parent.stat().st_dev == folder.stat().st_dev:
            shutil.move(temporary(), path)  # a large upload already on this disk: no second copy
        else:
            with open(path, "wb") as f:
                for chunk in uploaded.chunks():
                    f.write(chunk)
        os.chmod(path, 0o600)
        duration = sniff(path, display)
        job = Job(id=job_id, owner=owner, original_name=display, stem=safe_stem(display),
                  input_name=input_name, size_bytes=uploaded.size, duration_s=duration, client_ip=ip)
        with transaction.atomic():
            job.save(force_insert=True)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    enqueue_after_commit(job.id)
    return job


def sniff(path: Path, display: str) -> float | None:
    """Decode-probe the file: it must hold decodable audio within the duration limit.

    Returns the duration from the header (None when the header does not say). Errors name the file
    as uploaded, never the path on the server.
    """
    from keyscribe import audio
    try:
        duration = audio.audio_duration_s(path)
        if duration is not None and duration > settings.MAX_DURATION_S:
            raise UploadError(f"{display}: the recording lasts {_clock(duration)}, longer than the limit "
                              f"of {_clock(settings.MAX_DURATION_S)}", 413)
        first = next(audio.iter_audio_chunks(path, chunk_s=1.0, max_duration_s=settings.MAX_DURATION_S),
                     None)
        if first is None or first.size == 0:
            raise UploadError(f"{display}: the audio stream holds no samples")
        return duration
    except AudioError as exc:
        message = str(exc).replace(str(path.resolve()), display).replace(str(path), display)
        if "not a readable audio or video file" in message or "not an audio file" in message:
            message = (f"{display}: this is not an audio or video file keyscribe can read "
                       "(accepted: WAV, FLAC, MP3, OGG, Opus, M4A/AAC, and the sound of MP4/MOV/WebM videos)")
        raise UploadError(message) from None


def enqueue_after_commit(job_id: str) -> None:
    def enqueue() -> None:
        from keyscribe.web.tasks import enqueue_job
        try:
            enqueue_job(job_id)
        except Exception:  # the job stays queued in the database; the upkeep sweep enqueues it
            log.exception("job %s: could not enqueue now; the sweep will", job_id)
    transaction.on_commit(enqueue)


def _clock(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}" if whole >= 3600 else \
        f"{whole // 60}:{whole % 60:02d}"
