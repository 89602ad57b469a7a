"""`python -m app`: validate the configured package, then serve it with uvicorn."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError


def main() -> int:
    """Load settings and model up front so a bad package exits with one clear line."""
    from app.core.config import Settings, error_message
    from app.package import PackageError

    try:
        settings = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = (
            f"setting INTENT_{str(err['loc'][0]).upper()}" if err["loc"] else "settings"
        )  # no loc: a cross-field rule
        return _fail(f"invalid {where}: {error_message(err)}")
    unknown = Settings.unknown_variables()
    if unknown:  # a misspelt INTENT_API_KEY would otherwise serve an open API
        return _fail(f"unknown setting {', '.join(unknown)}; the settings are listed in docs/configuration.md")

    from app.core.config import OtelSettings
    from app.tracing import Tracing, TracingError

    try:
        Tracing.from_settings(OtelSettings())  # the app builds its own; this only refuses a request it cannot meet
    except TracingError as exc:
        return _fail(str(exc))

    from app.core.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)

    from app.metrics import Metrics
    from app.package import os_reason
    from app.server import listen, serve, serve_workers
    from app.service import IntentClassifier

    try:
        listen(settings.host, settings.port, reuse_port=False).close()  # a taken port or bad host: fail before loading
    except OSError as exc:
        return _fail(f"cannot listen on {settings.host}:{settings.port}: {exc}")
    classifier = None
    try:
        if settings.workers > 1:
            # Check the package here (files, sha256, backend) and load the model only in the forked workers:
            # a process that forks after starting model threads can deadlock its children.
            IntentClassifier.check(settings)
        else:
            classifier = IntentClassifier.load(settings, Metrics())
    except PackageError as exc:
        return _fail(str(exc))
    except OSError as exc:
        where = exc.filename if exc.filename is not None else settings.model_dir
        return _fail(f"cannot read model file {where}: {os_reason(exc)}")
    except Exception as exc:  # whatever else a bad package makes a library raise: one line, not a traceback
        logging.getLogger("app").debug("loading the package failed", exc_info=exc)
        reason = str(exc).split("\n", 1)[0]
        return _fail(f"cannot load the model package {settings.model_dir}: {type(exc).__name__}: {reason}")
    if classifier is None:
        return serve_workers(settings)
    return serve(settings, classifier)


def _fail(message: str) -> int:
    print(f"intentserve: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
