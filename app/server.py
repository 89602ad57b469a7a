"""Serving with uvicorn: graceful SIGTERM (readiness 503 first, accepted requests finished, exit code 0)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
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


def _worker(settings: Settings, metrics_dir: str, index: int) -> int:
    """One forked worker: its own model, batcher, event loop and SO_REUSEPORT socket on the shared port."""
    try:
        classifier = IntentClassifier.load(settings, Metrics(multiprocess_dir=metrics_dir))
    except PackageError as exc:
        logger.error("worker %d: %s", index, exc)
        return 2
    logger.info("worker %d (pid %d): %d model thread(s)", index, os.getpid(), settings.threads_per_worker)
    # One socket per worker: with a shared one, the first event loop to wake accepts a whole burst of new
    # connections, and a closed-loop client's connections then all land on one worker.
    return serve(settings, classifier, sockets=[listen(settings.host, settings.port, reuse_port=True)])


def serve_workers(settings: Settings) -> int:
    """Pre-fork INTENT_WORKERS processes on one port (SO_REUSEPORT); the parent forwards stop signals and waits.

    One process's event loop and model thread share one GIL; separate processes do not, so a 2-core box
    serves about twice the requests with 2 workers. Metrics are summed over the workers' files.
    """
    from prometheus_client.multiprocess import mark_process_dead

    listen(settings.host, settings.port, reuse_port=False).close()  # port taken or host invalid: fail here, once
    metrics_dir = os.environ.get(MULTIPROC_ENV)
    own_dir = metrics_dir is None
    if metrics_dir is None:
        metrics_dir = tempfile.mkdtemp(prefix="intentserve-metrics-")
    for stale in Path(metrics_dir).glob("*.db"):
        stale.unlink()  # values of an earlier run would be summed in
    children: list[int] = []
    for index in range(settings.workers):
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                code = _worker(settings, metrics_dir, index)
            except BaseException:
                logger.exception("worker %d crashed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    stopping = False

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        # SIGTERM for both: a second SIGINT would make uvicorn skip the graceful drain.
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    logger.info("serving with %d workers (pids %s)", settings.workers, children)
    codes: dict[int, int] = {}
    while len(codes) < len(children):
        pid, status = os.wait()
        codes[pid] = os.waitstatus_to_exitcode(status)
        mark_process_dead(pid, metrics_dir)
        if codes[pid] != 0 and not stopping:
            # A worker that dies takes the service down: the orchestrator restarts it whole.
            logger.error("worker pid %d exited with %d; stopping the others", pid, codes[pid])
            forward(signal.SIGTERM, None)
    if own_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [c for c in codes.values() if c != 0]
    return failed[0] if failed else 0
