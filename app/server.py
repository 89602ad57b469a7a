"""Serving with uvicorn: graceful SIGTERM (readiness 503 first, accepted requests finished, exit code 0).

With INTENT_WORKERS > 1 a parent process pre-forks the workers, replaces one that crashes (with back-off) and
gives up after repeated crashes; workers exit when the parent dies, however it dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.batcher import INFERENCE_THREAD
from app.core.config import Settings
from app.guard import guarded_protocol
from app.main import create_app
from app.metrics import MULTIPROC_ENV, Metrics
from app.package import PackageError
from app.service import IntentClassifier

logger = logging.getLogger(__name__)


class Server(uvicorn.Server):
    """uvicorn's server, plus: readiness turns 503 the moment a stop signal arrives; SIGTERM exits 0."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Mark the app draining, then let uvicorn stop accepting and wait for in-flight requests."""
        if not self.app.state.draining:
            self.app.state.draining = True
            logger.info("%s: draining: readiness 503, finishing accepted requests", signal.Signals(sig).name)
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises the signal after a graceful stop (exit 143); SIGTERM is the orchestrator's
            # ordinary "stop", so a clean drain should end with exit code 0.
            with contextlib.suppress(AttributeError, ValueError):
                self._captured_signals.remove(sig)


def serve(settings: Settings, classifier: IntentClassifier, sockets: list[socket.socket] | None = None) -> int:
    """Run the app until a stop signal (on `sockets` if given, else host:port); returns the exit code."""
    app = create_app(settings, classifier)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep our handler (text or JSON, with request ids) for uvicorn's loggers too
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        timeout_keep_alive=settings.keep_alive_s,
        # httptools' parser with bounds on header size, pipelining, read time and connections (app.guard).
        http=guarded_protocol(settings),
    )
    server = Server(config, app)
    server.run(sockets=sockets)
    stuck = [t for t in threading.enumerate() if t.name.startswith(INFERENCE_THREAD)]
    for thread in stuck:
        thread.join(timeout=1.0)  # an idle worker exits at once after the executor's shutdown
    if any(t.is_alive() for t in stuck):
        # A model call that never returns would block the interpreter's exit (it joins executor threads):
        # the shutdown bound wins, and the exit code says the stop was not clean.
        logger.error("a model call is still running after the shutdown timeout; exiting without it")
        logging.shutdown()
        os._exit(1)
    return 0 if server.started else 3


def listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening TCP socket; with reuse_port each worker has its own and the kernel spreads connections."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


METRICS_PREFIX = "intentserve-metrics-"
RESTART_WINDOW_S = 60.0  # crashes counted toward INTENT_WORKER_RESTARTS within this window
FIRST_BACKOFF_S = 0.5  # wait before replacing a crashed worker, doubled per recent crash
MAX_BACKOFF_S = 10.0
PACKAGE_ERROR = 2  # a worker's exit code when the package cannot be loaded: replacing it would fail the same way
GAVE_UP = 1
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _exit_with_parent(parent: int) -> None:
    """SIGTERM this worker (a graceful drain) when the parent dies, even by SIGKILL: no orphan keeps the port."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:  # the parent died before the kernel could be told
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if armed:
        return

    def watch() -> None:
        # Elsewhere, no kernel notice: poll. The parent's death re-parents this process, changing getppid().
        while os.getppid() == parent:
            time.sleep(1.0)
        logger.warning("parent process %d is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker(settings: Settings, metrics_dir: str, index: int) -> int:
    """One forked worker: its own model, batcher, event loop and SO_REUSEPORT socket on the shared port."""
    try:
        classifier = IntentClassifier.load(settings, Metrics(multiprocess_dir=metrics_dir))
    except PackageError as exc:
        logger.error("worker %d: %s", index, exc)
        return PACKAGE_ERROR
    logger.info("worker %d (pid %d): %d model thread(s)", index, os.getpid(), settings.threads_per_worker)
    # One socket per worker: with a shared one, the first event loop to wake accepts a whole burst of new
    # connections, and a closed-loop client's connections then all land on one worker.
    return serve(settings, classifier, sockets=[listen(settings.host, settings.port, reuse_port=True)])


def _run_worker(settings: Settings, metrics_dir: str, own_dir: bool, index: int, parent: int) -> None:
    """The forked child's whole life; never returns."""
    # A replacement is forked after the parent installed its signal handlers: a stop signal must stop this
    # worker (uvicorn installs its own when it starts serving), not run the parent's forwarding.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 1
    try:
        _exit_with_parent(parent)
        code = _worker(settings, metrics_dir, index)
    except BaseException:
        logger.exception("worker %d crashed", index)
    finally:
        if own_dir and os.getppid() != parent:
            # Orphaned: nobody else will remove the metrics folder the parent created.
            shutil.rmtree(metrics_dir, ignore_errors=True)
        logging.shutdown()
        os._exit(code)


def _remove_stale_metrics_dirs() -> None:
    """Metrics folders of earlier parents that are gone (killed before they could clean up)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*-*"):
        pid = folder.name[len(METRICS_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def serve_workers(settings: Settings) -> int:
    """Pre-fork INTENT_WORKERS processes on one port (SO_REUSEPORT); the parent supervises them.

    One process's event loop and model thread share one GIL; separate processes do not, so a 2-core box
    serves about twice the requests with 2 workers. Metrics are summed over the workers' files. A worker that
    dies is replaced after a back-off; more than INTENT_WORKER_RESTARTS crashes within a minute stop the service
    (exit 1), and a worker that cannot load the package stops it at once (exit 2).
    """
    from prometheus_client.multiprocess import mark_process_dead

    listen(settings.host, settings.port, reuse_port=False).close()  # port taken or host invalid: fail here, once
    parent = os.getpid()
    metrics_dir = os.environ.get(MULTIPROC_ENV)
    own_dir = metrics_dir is None
    if metrics_dir is None:
        _remove_stale_metrics_dirs()
        metrics_dir = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{parent}-")
    for stale in Path(metrics_dir).glob("*.db"):
        stale.unlink()  # values of an earlier run would be summed in
    workers: dict[int, int] = {}  # pid -> worker index

    def spawn(index: int) -> int:
        pid = os.fork()
        if pid == 0:  # child
            _run_worker(settings, metrics_dir, own_dir, index, parent)
        workers[pid] = index
        return pid

    for index in range(settings.workers):
        spawn(index)
    stopping = False

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        # SIGTERM for both: a second SIGINT would make uvicorn skip the graceful drain.
        for child in list(workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    logger.info("serving with %d workers (pids %s)", settings.workers, list(workers))
    crashes: deque[float] = deque()
    pending: list[tuple[float, int]] = []  # (monotonic time, index) of scheduled replacements
    exit_code = 0
    try:
        while workers or (pending and not stopping):
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                now = time.monotonic()
                for due in [p for p in pending if p[0] <= now]:
                    pending.remove(due)
                    if not stopping:
                        logger.warning("replacing worker %d (pid %d)", due[1], spawn(due[1]))
                time.sleep(0.05)
                continue
            index = workers.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            mark_process_dead(pid, metrics_dir)
            if stopping:
                # A worker still loading its model has no handler yet, so the forwarded SIGTERM ends it at once:
                # that is the stop that was asked for, not a failure.
                exit_code = exit_code or (0 if code == -signal.SIGTERM else code)
                continue
            if code == PACKAGE_ERROR:
                logger.error("worker pid %d cannot load the package; stopping the others", pid)
                exit_code = code
                forward(signal.SIGTERM, None)
                continue
            now = time.monotonic()
            crashes.append(now)
            while crashes and crashes[0] < now - RESTART_WINDOW_S:
                crashes.popleft()
            if len(crashes) > settings.worker_restarts:
                logger.error(
                    "worker pid %d exited with %d: %d worker exits within %.0f s (INTENT_WORKER_RESTARTS=%d): "
                    "giving up, stopping the others",
                    pid,
                    code,
                    len(crashes),
                    RESTART_WINDOW_S,
                    settings.worker_restarts,
                )
                exit_code = GAVE_UP
                forward(signal.SIGTERM, None)
                continue
            delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (len(crashes) - 1))
            logger.error("worker %d (pid %d) exited with %d; replacing it in %.1f s", index, pid, code, delay)
            pending.append((now + delay, index))
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return exit_code
