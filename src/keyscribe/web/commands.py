"""`keyscribe serve` (web server + worker, one command) and `keyscribe worker` (queue consumer only).

`serve` migrates the database, starts `keyscribe worker` as a child process (restarted if it dies) and
runs a threaded WSGI server in the foreground; Ctrl-C or SIGTERM stops both. For production behind a
reverse proxy, run the WSGI app `keyscribe.web.wsgi:application` under gunicorn/uwsgi and
`keyscribe worker` on as many machines as needed (KEYSCRIBE_REDIS_URL, shared media folder).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("keyscribe.web.server")


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the web app: upload recordings, get scores (server + worker)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--workers", type=int, help="worker processes (default KEYSCRIBE_WORKERS or 1)")
    p.add_argument("--no-worker", action="store_true",
                   help="web server only (run `keyscribe worker` elsewhere)")
    p.set_defaults(run=run_serve)


def add_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a transcription worker for the web app's job queue")
    p.add_argument("--workers", type=int, help="worker processes (default KEYSCRIBE_WORKERS or 1)")
    p.add_argument("--no-periodic", action="store_true",
                   help="do not run the periodic upkeep (retry sweep, retention clean-up)")
    p.set_defaults(run=run_worker)


def _setup() -> None:
    from keyscribe.web import setup
    setup()


def run_worker(args: argparse.Namespace) -> int:
    _setup()
    from django.conf import settings
    from django.db import connections
    from huey.consumer_options import ConsumerConfig

    from keyscribe.web import tasks
    from keyscribe.web.pipeline import worker_id

    options = dict(settings.HUEY.get("consumer", {}))
    if args.workers:
        options["workers"] = args.workers
    if args.no_periodic:
        options["periodic"] = False
    config = ConsumerConfig(**options)
    config.validate()
    _wait_for_schema()
    tasks.startup_sweep()
    _preload()
    connections.close_all()  # no connection may be shared with forked worker processes
    log.info("worker %s: %d %s worker(s) on queue %s", worker_id(), config.workers, config.worker_type,
             type(tasks.HUEY).__name__)
    consumer = tasks.HUEY.create_consumer(**config.values)
    consumer.run()  # huey's signal handlers: SIGTERM stops at once, SIGINT after running jobs
    return 0


def _wait_for_schema(timeout: float = 120.0) -> None:
    """Wait until the database has the job table (the web side migrates it), or fail with a hint."""
    from django.db import DatabaseError, connections

    from keyscribe.errors import KeyscribeError
    from keyscribe.web.models import Job
    deadline = time.monotonic() + timeout
    while True:
        try:
            Job.objects.exists()
            return
        except DatabaseError:
            connections.close_all()
            if time.monotonic() > deadline:
                raise KeyscribeError("the database has no keyscribe tables: start `keyscribe serve` "
                                     "or run `django-admin migrate` with DJANGO_SETTINGS_MODULE="
                                     "keyscribe.web.settings first") from None
            time.sleep(1.0)


def _preload() -> None:
    """Import the pipeline's heavy modules once, before the worker processes fork, so that no job
    pays for them (music21 alone takes seconds). The model is loaded in each process on first use."""
    import importlib
    for name in ("keyscribe.transcribe", "keyscribe.inference", "keyscribe.score", "keyscribe.score.engrave",
                 "keyscribe.score.beats", "keyscribe.score.spelling", "music21", "verovio", "cairosvg"):
        try:
            importlib.import_module(name)
        except Exception:  # a missing optional part shows up in the job that needs it
            log.warning("could not preload %s", name, exc_info=True)
    try:  # partitura only through the score engine's guard (a bare import may download a soundfont)
        from keyscribe.score.spelling import _partitura
        _partitura()
    except Exception:
        log.warning("could not preload partitura", exc_info=True)
    try:  # engrave a few bars once: the score engine loads its lazy parts (beat model, fonts) here
        import tempfile

        from keyscribe.score import performance_to_score, write_score
        from keyscribe.web.testing import melody
        with tempfile.TemporaryDirectory() as tmp:
            write_score(performance_to_score(melody(4.0), title="warm-up"), tmp, "warm-up",
                        formats=("musicxml", "pdf"))
    except Exception:
        log.warning("could not warm up the score engine", exc_info=True)


def _pdeathsig() -> None:
    """In the child: die with SIGTERM when the parent (`keyscribe serve`) dies, even by SIGKILL."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class WorkerSupervisor:
    """Keeps one `keyscribe worker` child running; restarts it (with back-off) when it exits."""

    def __init__(self, workers: int | None) -> None:
        self.cmd = [sys.executable, "-m", "keyscribe.cli", "worker"]
        if workers:
            self.cmd += ["--workers", str(workers)]
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self.cmd, preexec_fn=_pdeathsig if sys.platform == "linux" else None)
        log.info("started worker process %d", self.proc.pid)

    def _watch(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            code = self.proc.wait() if self.proc else 0
            if self._stop.is_set():
                return
            log.warning("worker process exited with status %s; restarting in %.0f s", code, delay)
            if self._stop.wait(delay):
                return
            started = time.monotonic()
            self._spawn()
            delay = 1.0 if time.monotonic() - started > 60 else min(30.0, delay * 2)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # huey: stop now; an interrupted job is retried on restart
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_serve(args: argparse.Namespace) -> int:
    _setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer, run
    if os.environ.get("KEYSCRIBE_ACCESS_LOG", "1") == "0":
        WSGIRequestHandler.log_message = lambda self, *a: None
    from django.core.wsgi import get_wsgi_application

    from keyscribe.errors import KeyscribeError

    if not 0 < args.port < 65536:
        raise KeyscribeError(f"--port must be 1..65535, got {args.port}")
    call_command("migrate", interactive=False, verbosity=0)
    application = get_wsgi_application()
    supervisor = None if args.no_worker else WorkerSupervisor(args.workers)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if supervisor:
            supervisor.start()
        if args.host not in ("127.0.0.1", "localhost", "::1") and not (
                os.environ.get("ALLOWED_HOSTS") or os.environ.get("KEYSCRIBE_ALLOWED_HOSTS")):
            print("keyscribe: note: set ALLOWED_HOSTS=<this machine's name or address> so that other "
                  "machines can reach the app (only localhost names are allowed now)", flush=True)
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"keyscribe: serving on http://{shown}:{args.port}/ (data: {settings.DATA_DIR}; "
              f"queue: {settings.HUEY['huey_class'].split('.')[-1]}); Ctrl-C stops", flush=True)
        WSGIServer.request_queue_size = 64
        run(args.host, args.port, application, ipv6=":" in args.host, threading=True,
            on_bind=None, server_cls=WSGIServer)
    except OSError as exc:
        raise KeyscribeError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        pass
    finally:
        if supervisor:
            supervisor.stop()
    return 0
