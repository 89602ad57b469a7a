"""`python -m app`: validate the configured package, then serve it with uvicorn."""

from __future__ import annotations

import sys

from pydantic import ValidationError


def main() -> int:
    """Load settings and model up front so a bad package exits with one clear line."""
    from app.core.config import Settings
    from app.package import PackageError

    try:
        settings = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = (
            f"setting INTENT_{str(err['loc'][0]).upper()}" if err["loc"] else "settings"
        )  # no loc: a cross-field rule
        print(f"intentserve: error: invalid {where}: {err['msg']}", file=sys.stderr)
        return 2

    from app.core.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)

    from app.metrics import Metrics
    from app.server import serve, serve_workers
    from app.service import IntentClassifier

    try:
        if settings.workers > 1:
            # Check the package here (files, sha256, backend) and load the model only in the forked workers:
            # a process that forks after starting model threads can deadlock its children.
            IntentClassifier.check(settings)
            return serve_workers(settings)
        classifier = IntentClassifier.load(settings, Metrics())
    except PackageError as exc:
        print(f"intentserve: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # workers > 1: the port is checked before forking
        print(f"intentserve: error: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 2
    return serve(settings, classifier)


if __name__ == "__main__":
    raise SystemExit(main())
