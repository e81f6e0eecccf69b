"""keyscribe's web application: upload recordings, follow the job, read, hear and download the result.

A Django project and app in one package. `keyscribe serve` runs it with embedded defaults (SQLite, a
SqliteHuey queue and a media folder in the data folder, one worker process beside the web server);
production settings come from environment variables (see `keyscribe.web.settings`).

    keyscribe serve --port 8000          # web server + worker, one command
    keyscribe worker                     # a worker only (production: other machines, RedisHuey)
"""
from __future__ import annotations

import os

SETTINGS_MODULE = "keyscribe.web.settings"


def setup() -> None:
    """Configure Django for keyscribe's web app (idempotent); call before importing models or tasks."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    import django
    from django.apps import apps
    if not apps.ready:
        django.setup()
