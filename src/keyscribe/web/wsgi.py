"""WSGI entry point for production servers, e.g. `gunicorn keyscribe.web.wsgi:application`."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "keyscribe.web.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
