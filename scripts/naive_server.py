"""The naive serving baseline, "as most users write it", for scripts/bench_serving.py.

A plain FastAPI app whose sync `def` endpoint calls a transformers text-classification pipeline
once per request. FastAPI runs sync endpoints in Starlette's default thread pool (40 threads),
so concurrent requests run concurrent PyTorch forward passes of batch size 1: no batching, no
thread tuning, no ONNX, every request padded on its own. This is deliberately left untuned.

    python scripts/naive_server.py --model artifacts/teacher --port 8300
    python scripts/naive_server.py --noop --port 8301   # same app, no model: the framework's floor
    python scripts/naive_server.py --noop --port 8301 --reuse-port  # start N of these: N processes, one port

`--noop` answers a fixed result without touching a model (the "empty FastAPI endpoint" reference).
Both validate the body with a pydantic model, as any FastAPI app would. GET /healthz answers once
the model is loaded (the model is loaded before uvicorn starts listening).
"""

from __future__ import annotations

import argparse
import socket

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Query(BaseModel):
    text: str


def build_app(model_dir: str | None) -> FastAPI:
    app = FastAPI(title="naive intent classifier")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    if model_dir is None:

        @app.post("/classify")
        async def classify_noop(query: Query) -> dict:
            return {"intent": "noop", "confidence": 1.0}

        return app

    from transformers import pipeline  # the heavy import only when a model is served

    classifier = pipeline("text-classification", model=model_dir)

    @app.post("/classify")
    def classify(query: Query) -> dict:
        result = classifier(query.text)[0]
        return {"intent": result["label"], "confidence": float(result["score"])}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", help="package folder with config.json, model.safetensors and tokenizer files")
    group.add_argument("--noop", action="store_true", help="serve no model: a constant answer")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT, so several processes share the port as the service's workers do",
    )
    args = parser.parse_args()
    app = build_app(None if args.noop else args.model)
    if not args.reuse_port:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
