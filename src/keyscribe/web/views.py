"""Pages, the JSON API, downloads and the local static/vendor files.

Every job lookup goes through `_job_for`, which matches the job id *and* the session's owner token:
a job of another session is indistinguishable from one that does not exist (404).
"""
from __future__ import annotations

import logging
import mimetypes
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect, ensure_csrf_cookie
from django.views.decorators.http import require_GET, require_http_methods
from django.views.static import serve

from keyscribe.web.models import Job
from keyscribe.web.uploads import UploadError, accept, check_rate, client_ip, owner_token

log = logging.getLogger("keyscribe.web.views")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("audio/ogg", ".ogg")

HISTORY_LIMIT = 100


def limits_context(request) -> dict:
    return {"max_upload_mb": settings.MAX_UPLOAD_BYTES // (1024 * 1024),
            "max_duration_min": round(settings.MAX_DURATION_S / 60),
            "retention_hours": round(settings.RETENTION_HOURS)}


def _job_for(request, job_id: str) -> Job:
    owner = owner_token(request, create=False)
    if not owner or len(job_id) > 64:
        raise Http404("no such job")
    try:
        return Job.objects.get(pk=job_id, owner=owner)
    except Job.DoesNotExist:
        raise Http404("no such job") from None


def _history(request) -> list[Job]:
    owner = owner_token(request, create=False)
    return list(Job.objects.filter(owner=owner)[:HISTORY_LIMIT]) if owner else []


def job_json(job: Job) -> dict:
    files = {kind: (reverse("download", args=[job.id, kind]) if job.files.get(kind) else None)
             for kind in ("midi", "musicxml", "pdf", "csv")}
    return {"id": job.id, "status": job.api_status, "stage": job.status,
            "progress": round(job.progress, 3), "error": job.error or None,
            "warning": job.warning or None, "name": job.original_name,
            "created": job.created_at.isoformat(), "duration_s": job.duration_s,
            "latency_s": job.latency_s, "summary": job.summary or None, "files": files,
            "url": reverse("job", args=[job.id])}


def _files_from(request) -> list:
    files = request.FILES.getlist("file")
    oversize = getattr(request, "oversize_uploads", [])
    if not files and not oversize:
        raise UploadError("no file was sent: choose one or more recordings (audio or video)")
    if len(files) + len(oversize) > settings.MAX_FILES:
        raise UploadError(f"too many files at once: at most {settings.MAX_FILES}", 400)
    return files


def _too_large(request) -> bool:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False
    return length > settings.MAX_UPLOAD_BYTES * settings.MAX_FILES + 1024 * 1024


def _oversize_errors(request) -> list[str]:
    mb = settings.MAX_UPLOAD_BYTES // (1024 * 1024)
    return [f"{name}: larger than the upload limit of {mb} MB"
            for name in getattr(request, "oversize_uploads", [])]


# ----------------------------------------------------------------------------------------- pages
@require_GET
@ensure_csrf_cookie
def index(request):
    return render(request, "keyscribe/index.html", {"jobs": _history(request)})


@csrf_exempt  # checked below, after the size-limiting upload handler is in place
@require_http_methods(["POST"])
def upload(request):
    if _too_large(request):  # refused before the body is read; nothing is stored
        return render(request, "keyscribe/index.html", {"jobs": _history(request), "errors": [
            f"the upload is larger than the limit of {settings.MAX_UPLOAD_BYTES // (1024 * 1024)} MB "
            f"per file"]}, status=413)
    return _upload(request)


@csrf_protect
def _upload(request):
    ctx = {"jobs": None, "errors": [], "accepted": []}
    status = 200
    if True:
        try:
            files = _files_from(request)
            owner, ip = owner_token(request), client_ip(request)
            check_rate(owner, len(files), ip)
            for f in files:
                try:
                    ctx["accepted"].append(accept(f, owner, ip))
                except UploadError as exc:
                    ctx["errors"].append(exc.message)
                    status = max(status, exc.status)
            for message in _oversize_errors(request):
                ctx["errors"].append(message)
                status = max(status, 413)
        except UploadError as exc:
            ctx["errors"].append(exc.message)
            status = exc.status
    if ctx["accepted"] and not ctx["errors"]:
        if len(ctx["accepted"]) == 1:
            return redirect("job", ctx["accepted"][0].id)
        return redirect("history")
    ctx["jobs"] = _history(request)
    return render(request, "keyscribe/index.html", ctx, status=200 if ctx["accepted"] else status)


@require_GET
@ensure_csrf_cookie
def history(request):
    return render(request, "keyscribe/history.html", {"jobs": _history(request)})


@require_GET
@ensure_csrf_cookie
def job_page(request, job_id: str):
    job = _job_for(request, job_id)
    labels = {"midi": "MIDI", "musicxml": "MusicXML", "pdf": "PDF", "csv": "CSV (notes)",
              "json": "JSON"}
    downloads = [(kind, label, reverse("download", args=[job.id, kind]))
                 for kind, label in labels.items() if job.files.get(kind)]
    stages = [Job.QUEUED, Job.DECODING, Job.TRANSCRIBING, Job.ENGRAVING, Job.DONE]
    return render(request, "keyscribe/job.html", {"job": job, "job_data": job_json(job),
                                                  "downloads": downloads, "stages": stages})


@csrf_protect
@require_http_methods(["POST"])
def delete_job(request, job_id: str):
    job = _job_for(request, job_id)
    job.delete_files()
    job.delete()
    return redirect("history")


@require_GET
def download(request, job_id: str, kind: str):
    job = _job_for(request, job_id)
    if kind == "view":
        path = job.file_path("view")
        if path is None or not path.is_file():
            raise Http404("no result yet")
        response = FileResponse(open(path, "rb"), content_type="application/json")
        response["Cache-Control"] = "private, no-store"
        return response
    if kind not in Job.FILES:
        raise Http404("no such file")
    path = job.file_path(kind)
    if kind == "pdf" and path is not None and not path.is_file():
        _engrave_pdf(job, path)
    if path is None or not path.is_file():
        raise Http404("this file is not available for this job")
    suffix, mime = Job.FILES[kind]
    response = FileResponse(open(path, "rb"), as_attachment=True, filename=f"{job.stem}{suffix}",
                            content_type=mime)
    response["Cache-Control"] = "private, no-store"
    return response


def _engrave_pdf(job: Job, path) -> None:
    """The job's PDF from its MusicXML (the pipeline leaves it to the first download)."""
    from keyscribe.errors import ScoreError
    from keyscribe.score import musicxml_to_pdf

    musicxml = job.file_path("musicxml")
    if musicxml is None or not musicxml.is_file():
        return
    try:
        musicxml_to_pdf(musicxml, path)
    except ScoreError:
        log.warning("job %s: the PDF could not be engraved from its MusicXML", job.id)


# ----------------------------------------------------------------------------------------- API
def _api_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message, "status": status}, status=status)


@csrf_exempt  # scripts have no CSRF token; the session cookie is SameSite=Lax
@never_cache
def api_jobs(request):
    if request.method == "GET":
        return JsonResponse({"jobs": [job_json(j) for j in _history(request)]})
    if request.method != "POST":
        return _api_error(f"method {request.method} not allowed; use GET or POST", 405)
    if _too_large(request):
        return _api_error(f"the upload is larger than the limit of "
                          f"{settings.MAX_UPLOAD_BYTES // (1024 * 1024)} MB", 413)
    try:
        files = request.FILES.getlist("file")  # parses the body; oversize files are dropped
        oversize = _oversize_errors(request)
        if oversize:
            raise UploadError(oversize[0], 413)
        if not files:
            raise UploadError("no file: send the recording as the multipart form field 'file'")
        if len(files) > 1:
            raise UploadError("send one recording per request (one 'file' field)")
        owner, ip = owner_token(request), client_ip(request)
        check_rate(owner, 1, ip)
        job = accept(files[0], owner, ip)
    except UploadError as exc:
        return _api_error(exc.message, exc.status)
    data = job_json(job)
    response = JsonResponse({"id": job.id, "status": "queued", "url": data["url"],
                             "status_url": reverse("api_job", args=[job.id])}, status=201)
    response["Location"] = reverse("api_job", args=[job.id])
    return response


@csrf_exempt
@never_cache
def api_job(request, job_id: str):
    if request.method != "GET":
        return _api_error(f"method {request.method} not allowed; use GET", 405)
    try:
        job = _job_for(request, job_id)
    except Http404:
        return _api_error("no such job (jobs are visible only to the session that created them)", 404)
    return JsonResponse(job_json(job))


# ----------------------------------------------------------------------------------------- errors
def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", "")


def error_404(request, exception=None):
    if _wants_json(request):
        return _api_error("not found", 404)
    return render(request, "keyscribe/error.html", {"title": "Not found", "message":
                  "There is no such page, or this job belongs to another session or was removed."},
                  status=404)


def error_500(request):
    if _wants_json(request):
        return _api_error("internal server error", 500)
    return render(request, "keyscribe/error.html", {"title": "Server error", "message":
                  "Something went wrong on the server. Please try again."}, status=500)


def error_400(request, exception=None):
    if _wants_json(request):
        return _api_error("bad request", 400)
    return render(request, "keyscribe/error.html", {"title": "Bad request", "message":
                  "The request could not be understood."}, status=400)


def csrf_failure(request, reason=""):
    if _wants_json(request):
        return _api_error("CSRF check failed: reload the page and try again", 403)
    return render(request, "keyscribe/error.html", {"title": "Form expired", "message":
                  "The form's security check failed (CSRF). Reload the page and try again."},
                  status=403)


# ----------------------------------------------------------------------------------------- assets
# Browser libraries installed from npm by scripts/setup-system.sh: URL prefix -> folder under
# node_modules and the file names allowed from it.
VENDOR = {
    "verovio": ("verovio/dist", {"verovio-module.mjs", "verovio.mjs"}),
    "tone": ("tone/build", {"Tone.js"}),
}
PIANO_LAYERS = (5, 10, 15)  # Salamander velocity layers the player loads


def vendor(request, package: str, path: str):
    if package == "piano":
        layer, _, name = path.partition("/")
        if not (layer.isdigit() and int(layer) in PIANO_LAYERS and name.endswith(".ogg")
                and "/" not in name and ".." not in name):
            raise Http404("no such sample")
        folder = Path(settings.NODE_MODULES) / "@audio-samples" / f"piano-velocity{layer}" / "audio"
        return _cached(serve(request, name, document_root=str(folder)))
    if package not in VENDOR or path not in VENDOR[package][1]:
        raise Http404("no such asset")
    folder = Path(settings.NODE_MODULES) / VENDOR[package][0]
    if not (folder / path).is_file():
        raise Http404(f"{package} is not installed: run scripts/setup-system.sh (npm packages)")
    return _cached(serve(request, path, document_root=str(folder)))


def static(request, path: str):
    from django.contrib.staticfiles import finders
    found = finders.find(path)
    if not found:
        raise Http404("no such file")
    found = Path(found)
    return _cached(serve(request, found.name, document_root=str(found.parent)), max_age=300)


def _cached(response, max_age: int = 86400):
    response["Cache-Control"] = f"public, max-age={max_age}"
    return response


