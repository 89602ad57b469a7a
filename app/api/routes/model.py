"""The loaded model: GET /v1/model and the admin reload."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request

from app.api.body import JSONRoute
from app.api.deps import get_classifier, require_admin, require_key
from app.api.errors import APIError, errors
from app.api.schemas import ModelInfo, ReloadRequest, ReloadResponse
from app.core.config import Settings
from app.package import PackageError, PackagePathError, os_reason, without_machine_paths
from app.reload import ReloadBusyError, reload_classifier
from app.service import IntentClassifier

logger = logging.getLogger(__name__)
router = APIRouter(route_class=JSONRoute)


def _model_info(classifier: IntentClassifier, settings: Settings) -> dict:
    m = classifier.manifest
    return {
        "name": m.name,
        "backend": classifier.backend.name,
        "precision": classifier.backend.precision,
        "labels": len(m.labels),
        "oos_label": m.oos_label,
        "oos_score": classifier.oos_score,
        "oos_threshold": classifier.threshold,
        "max_length": m.max_length,
        "domains": classifier.domains,
        "source": without_machine_paths(m.source, settings.package_root),
        "metrics": {k: v.model_dump() for k, v in m.metrics.items()},
        "created_at": m.created_at,
    }


@router.get("/v1/model", response_model=ModelInfo, responses=errors(401, 503), dependencies=[Depends(require_key)])
async def model_info(request: Request) -> dict:
    """Summary of the loaded package's manifest."""
    return _model_info(get_classifier(request), request.app.state.settings)


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=errors(400, 401, 403, 404, 409, 413, 422, 503),
    dependencies=[Depends(require_admin)],
)
async def reload(request: Request, body: ReloadRequest | None = None) -> dict:
    """Load, verify and warm up a package, then swap it in; on any failure the current one keeps serving."""
    get_classifier(request)
    if request.app.state.settings.workers > 1:
        # A reload would swap the model in the one worker that got this request and leave the others as they are.
        raise APIError(
            409, "reload_unavailable", "hot reload needs INTENT_WORKERS=1; with several workers, restart the service"
        )
    model_dir = body.model_dir if body is not None else None
    try:
        old, new = await reload_classifier(request.app, model_dir)
    except ReloadBusyError as exc:
        raise APIError(409, "reload_in_progress", str(exc)) from exc
    except PackagePathError as exc:
        raise APIError(403, "path_forbidden", str(exc)) from exc
    except PackageError as exc:
        # An authenticated operator needs the reason (e.g. which file fails its sha256).
        raise APIError(409, "package_refused", str(exc)) from exc
    except OSError as exc:  # e.g. a path component longer than the file system allows: the reason, no traceback
        raise APIError(409, "package_refused", f"cannot read the package at {model_dir}: {os_reason(exc)}") from exc
    except Exception as exc:
        logger.exception("reload failed")
        raise APIError(409, "package_refused", "the package could not be loaded; see the service log") from exc
    return {"previous": old.manifest.name, "model": _model_info(new, request.app.state.settings)}
