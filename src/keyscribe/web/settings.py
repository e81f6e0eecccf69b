"""Django settings for keyscribe's web app: embedded defaults, overridden by environment variables.

Defaults (one machine, no other service): a SQLite database, Huey's SqliteHuey queue and the media
folder (uploads and results), all in the data folder:

    KEYSCRIBE_DATA_DIR        data folder (default $XDG_DATA_HOME/keyscribe, ~/.local/share/keyscribe,
                              or ./keyscribe-data when the home folder is not writable)

Production:

    SECRET_KEY / KEYSCRIBE_SECRET_KEY   session and CSRF signing key (default: a random key kept in
                              the data folder, created on first use, mode 0600)
    ALLOWED_HOSTS / KEYSCRIBE_ALLOWED_HOSTS   comma-separated host names (default: localhost names)
    KEYSCRIBE_CSRF_TRUSTED_ORIGINS   comma-separated origins, e.g. https://piano.example.org
    KEYSCRIBE_DEBUG           1 for Django's debug pages (never in production)
    DATABASE_URL              postgres://user:password@host:5432/name (or sqlite:////path/db.sqlite3)
    KEYSCRIBE_DB_NAME, KEYSCRIBE_DB_USER, KEYSCRIBE_DB_PASSWORD, KEYSCRIBE_DB_HOST, KEYSCRIBE_DB_PORT
                              PostgreSQL by parts (used when KEYSCRIBE_DB_NAME is set and DATABASE_URL
                              is not); needs `pip install "psycopg[binary]"`
    KEYSCRIBE_REDIS_URL       redis://host:6379/0: use RedisHuey, so workers on other machines
                              (`keyscribe worker`) share the queue; needs `pip install redis`. The
                              media folder must then be shared storage (NFS etc.) mounted at the same
                              KEYSCRIBE_MEDIA_DIR on the web and worker machines.
    KEYSCRIBE_MEDIA_DIR       uploads and results (default <data>/media)
    KEYSCRIBE_MAX_UPLOAD_MB   largest accepted upload in MiB (default 200)
    KEYSCRIBE_MAX_DURATION_S  longest accepted recording in seconds (default 1800)
    KEYSCRIBE_MAX_FILES       most files in one upload (default 20)
    KEYSCRIBE_RATE_LIMIT      uploads per session per window, "N/SECONDS" (default 30/600)
    KEYSCRIBE_IP_RATE_LIMIT   uploads per client address per window (default 120/600): sessions are
                              free to make, so this bounds a client that drops its cookies
    KEYSCRIBE_TRUST_X_FORWARDED_FOR  1 behind a reverse proxy that sets X-Forwarded-For
    KEYSCRIBE_RETENTION_HOURS jobs and their files are deleted this long after creation (default 72)
    KEYSCRIBE_WORKERS         worker processes per `keyscribe worker` (default 1)
    KEYSCRIBE_MAX_ATTEMPTS    tries of one job before it is failed (default 3)
    KEYSCRIBE_STALE_S         a running job whose worker sent no heartbeat for this long is retried
                              (default 60)
    KEYSCRIBE_JOB_TIMEOUT_S   a job running longer is failed and its worker process replaced (3600)
    KEYSCRIBE_MODEL           transcription model file (default: the shipped model)
    KEYSCRIBE_DEVICE          auto (a GPU when there is one), cpu or cuda
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import unquote, urlparse

from keyscribe.errors import KeyscribeError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parents[2]


def _env(name: str, default: str | None = None, *aliases: str) -> str | None:
    for key in (name, *aliases):
        value = os.environ.get(key)
        if value not in (None, ""):
            return value
    return default


def _env_number(name: str, default: float, kind=float):
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise KeyscribeError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise KeyscribeError(f"{name}={raw!r} must be positive")
    return value


def _list(raw: str | None) -> list[str]:
    return [part.strip() for part in (raw or "").split(",") if part.strip()]


def default_data_dir() -> Path:
    configured = _env("KEYSCRIBE_DATA_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    xdg = _env("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    candidate = base / "keyscribe"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    return (Path.cwd() / "keyscribe-data").resolve()


DATA_DIR = default_data_dir()
DATA_DIR.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(_env("KEYSCRIBE_MEDIA_DIR", str(DATA_DIR / "media"))).expanduser().resolve()
MEDIA_ROOT.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    configured = _env("SECRET_KEY", None, "KEYSCRIBE_SECRET_KEY", "DJANGO_SECRET_KEY")
    if configured:
        return configured
    path = DATA_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    # Written whole to a temporary file, then linked into place: processes starting at the same time
    # (server and worker) agree on the first key and never read a half-written one.
    tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(50))
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _env("KEYSCRIBE_DEBUG", "0") == "1"
ALLOWED_HOSTS = _list(_env("ALLOWED_HOSTS", None, "KEYSCRIBE_ALLOWED_HOSTS")) or [
    "localhost", "127.0.0.1", "[::1]", "testserver"]
CSRF_TRUSTED_ORIGINS = _list(_env("KEYSCRIBE_CSRF_TRUSTED_ORIGINS"))

INSTALLED_APPS = [
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "huey.contrib.djhuey",
    "keyscribe.web.apps.WebConfig",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "keyscribe.web.middleware.SecurityHeadersMiddleware",
]
ROOT_URLCONF = "keyscribe.web.urls"
WSGI_APPLICATION = "keyscribe.web.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                       "keyscribe.web.views.limits_context"]},
}]


def _database() -> dict:
    url = _env("DATABASE_URL")
    if url:
        return _database_from_url(url)
    if _env("KEYSCRIBE_DB_NAME"):
        return {"ENGINE": "django.db.backends.postgresql", "NAME": _env("KEYSCRIBE_DB_NAME"),
                "USER": _env("KEYSCRIBE_DB_USER", ""), "PASSWORD": _env("KEYSCRIBE_DB_PASSWORD", ""),
                "HOST": _env("KEYSCRIBE_DB_HOST", ""), "PORT": _env("KEYSCRIBE_DB_PORT", ""),
                "CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True}
    return _sqlite(DATA_DIR / "keyscribe.sqlite3")


def _sqlite(path: Path | str) -> dict:
    # WAL + IMMEDIATE transactions + a long busy timeout: the web threads and the worker write at once.
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path),
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}}


def _database_from_url(url: str) -> dict:
    parts = urlparse(url)
    scheme = parts.scheme.split("+")[0]
    if scheme == "sqlite":
        return _sqlite(unquote(parts.path[1:] if parts.path.startswith("//") else parts.path) or
                       DATA_DIR / "keyscribe.sqlite3")
    if scheme not in ("postgres", "postgresql", "pgsql"):
        raise KeyscribeError(f"DATABASE_URL: unsupported database {parts.scheme!r} "
                             "(use postgres://... or sqlite:///...)")
    return {"ENGINE": "django.db.backends.postgresql", "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""), "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "", "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60, "CONN_HEALTH_CHECKS": True}


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = _env("KEYSCRIBE_REDIS_URL")
WORKERS = int(_env_number("KEYSCRIBE_WORKERS", 1, int))
if REDIS_URL:
    HUEY = {"huey_class": "huey.RedisHuey", "name": "keyscribe", "url": REDIS_URL,
            "immediate": False, "results": False, "utc": True,
            "consumer": {"workers": WORKERS, "worker_type": "process", "periodic": True,
                         "check_worker_health": True, "health_check_interval": 5}}
else:
    HUEY = {"huey_class": "huey.SqliteHuey", "name": "keyscribe",
            "filename": str(DATA_DIR / "queue.sqlite3"), "strict_fifo": True, "timeout": 30,
            "immediate": False, "results": False, "utc": True,
            "consumer": {"workers": WORKERS, "worker_type": "process", "periodic": True,
                         "check_worker_health": True, "health_check_interval": 5,
                         "initial_delay": 0.2, "backoff": 1.15, "max_delay": 1.0}}

SESSION_ENGINE = "django.contrib.sessions.backends.db"
SESSION_COOKIE_NAME = "keyscribe_session"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 60 * 60 * 24 * 30
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _env("KEYSCRIBE_SECURE_COOKIES", "0") == "1"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

STATIC_URL = "/static/"
MEDIA_URL = None  # results are served by views that check the session, never as plain media
# Browser assets installed by scripts/setup-system.sh (npm) into node_modules/ at the repo root
# (KEYSCRIBE_NODE_MODULES to point elsewhere). Only the files the pages use are exposed.
NODE_MODULES = Path(_env("KEYSCRIBE_NODE_MODULES", str(REPO_ROOT / "node_modules"))).expanduser()

MAX_UPLOAD_BYTES = int(_env_number("KEYSCRIBE_MAX_UPLOAD_MB", 200) * 1024 * 1024)
MAX_DURATION_S = float(_env_number("KEYSCRIBE_MAX_DURATION_S", 1800))
MAX_FILES = int(_env_number("KEYSCRIBE_MAX_FILES", 20, int))
_rate = (_env("KEYSCRIBE_RATE_LIMIT", "30/600") or "30/600").split("/")
try:
    RATE_LIMIT = (int(_rate[0]), float(_rate[1]))
except (ValueError, IndexError):
    raise KeyscribeError("KEYSCRIBE_RATE_LIMIT must look like N/SECONDS, e.g. 30/600") from None
_ip_rate = (_env("KEYSCRIBE_IP_RATE_LIMIT", "120/600") or "120/600").split("/")
try:
    IP_RATE_LIMIT = (int(_ip_rate[0]), float(_ip_rate[1]))
except (ValueError, IndexError):
    raise KeyscribeError("KEYSCRIBE_IP_RATE_LIMIT must look like N/SECONDS, e.g. 120/600") from None
# Behind a reverse proxy, the client's address is the last one it appended to X-Forwarded-For.
TRUST_X_FORWARDED_FOR = _env("KEYSCRIBE_TRUST_X_FORWARDED_FOR", "0") == "1"
RETENTION_HOURS = float(_env_number("KEYSCRIBE_RETENTION_HOURS", 72))
MAX_ATTEMPTS = int(_env_number("KEYSCRIBE_MAX_ATTEMPTS", 3, int))
STALE_S = float(_env_number("KEYSCRIBE_STALE_S", 60))
HEARTBEAT_S = min(5.0, STALE_S / 4)
JOB_TIMEOUT_S = float(_env_number("KEYSCRIBE_JOB_TIMEOUT_S", 3600))
MODEL = _env("KEYSCRIBE_MODEL")
DEVICE = _env("KEYSCRIBE_DEVICE", "auto")  # auto | cpu | cuda

# Uploads larger than this go to a temporary file, never into memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = str(MEDIA_ROOT / "tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
USE_I18N = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "keyscribe": {"handlers": ["console"], "level": _env("KEYSCRIBE_LOG_LEVEL", "INFO")},
        "huey": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

FILE_UPLOAD_HANDLERS = ["keyscribe.web.uploads.LimitedUploadHandler",
                        "django.core.files.uploadhandler.MemoryFileUploadHandler",
                        "django.core.files.uploadhandler.TemporaryFileUploadHandler"]
CSRF_FAILURE_VIEW = "keyscribe.web.views.csrf_failure"
