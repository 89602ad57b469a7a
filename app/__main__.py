"""`python -m app`: validate the configured package, then serve it with uvicorn."""

from __future__ import annotations

import logging
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
        print(
            f"intentserve: error: invalid setting INTENT_{str(err['loc'][0]).upper()}: {err['msg']}",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from app.main import create_app
    from app.metrics import Metrics
    from app.service import IntentClassifier

    try:
        classifier = IntentClassifier.load(settings, Metrics())
    except PackageError as exc:
        print(f"intentserve: error: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, classifier)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
