"""The HTTP service of `textclf serve`: FastAPI routes over the micro-batcher and the live model, Prometheus metrics,
Bearer auth, and errors as {"error": ..., "detail": ...}. Imported only by serve: FastAPI is the `serve` extra."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.exceptions import HTTPException

from textclf_cli.console import log
from textclf_cli.serving.batcher import MicroBatcher, Slot
from textclf_cli.serving.live import LiveModel, ReloadResult, ServedModel, load_served
from textclf_cli.serving.scoring import Predictions, rows
from textclf_cli.serving.settings import SETTINGS_ENV, ServeSettings
from textclf_cli.serving.targets import follow

OPEN_ROUTES = ("/healthz",)  # answered without the API key: a load balancer's liveness probe holds none
ROUTES = ("/v1/predict", "/v1/model", "/v1/reload", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(min_length=1, description="The texts to classify.")
    top_k: int | None = Field(default=None, ge=1, description="Give the k most likely labels (default: all).")


class PredictResponse(BaseModel):  # for /docs: the route writes its JSON itself, which is faster
    model: dict[str, Any]
    predictions: list[dict[str, Any]] = Field(description="One record per text, as `predict --format jsonl`.")


class ApiError(Exception):
    """A request the service refuses (4xx) or a model call that failed (500): {"error": ..., "detail": ...}."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


@dataclass
class ServeMetrics:
    """The service's Prometheus metrics, in a registry of its own."""

    registry: CollectorRegistry
    requests: Counter
    texts: Counter
    latency: Histogram
    batch: Histogram
    model: Gauge
    reloads: Counter
    abstained: Counter


def new_metrics() -> ServeMetrics:
    registry = CollectorRegistry()
    return ServeMetrics(
        registry,
        Counter("textclf_requests", "HTTP requests by route and status code", ["route", "status"], registry=registry),
        Counter("textclf_texts", "Texts in predict requests by status code", ["status"], registry=registry),
        Histogram("textclf_request_latency_seconds", "Request latency by route", ["route"], registry=registry,
                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
        Histogram("textclf_batch_size", "Texts per model call", registry=registry,
                  buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)),
        Gauge("textclf_model_info", "The model being served (value 1)", ["run_id", "scorer"], registry=registry),
        Counter("textclf_reloads", "Model reloads by result (ok, failed)", ["result"], registry=registry),
        Counter("textclf_abstained_texts", "Texts below --min-confidence", registry=registry),
    )


def create_app(settings: ServeSettings, first: ServedModel) -> FastAPI:
    """The service, serving `first` and following settings.target from there."""
    metrics = new_metrics()
    live = LiveModel(Path(settings.target), first, settings.min_confidence,
                     on_reload=lambda result, current: record_reload(metrics, result, current))
    show_model(metrics, first)
    model_thread, reload_thread = ThreadPoolExecutor(1, "textclf-model"), ThreadPoolExecutor(1, "textclf-reload")

    def score(texts: list[str]) -> tuple[ServedModel, Predictions]:  # in the model thread
        model = live.current  # this call finishes on the model it took, whatever a reload swaps in meanwhile
        return model, model.predict(texts, settings.batch_size)

    batcher = MicroBatcher(score, model_thread, settings.max_batch, settings.max_wait_ms / 1000,
                           on_batch=metrics.batch.observe)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        follower = asyncio.create_task(follow_target(live, reload_thread, settings.reload_every_s))
        yield
        follower.cancel()
        await batcher.stop()
        model_thread.shutdown(wait=False, cancel_futures=True)
        reload_thread.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="textclf", summary="Text classification with a textclf model", lifespan=lifespan)
    add_routes(app, settings, live, batcher, metrics, reload_thread)
    add_error_handlers(app)
    app.add_middleware(MeteredAuth, metrics=metrics, api_key=settings.api_key)
    return app


def add_routes(app: FastAPI, settings: ServeSettings, live: LiveModel, batcher: MicroBatcher, metrics: ServeMetrics,
               reload_thread: ThreadPoolExecutor) -> None:
    @app.post("/v1/predict", response_model=PredictResponse, openapi_extra=REQUEST_BODY)
    async def predict(http: Request) -> Response:
        """Labels and probabilities of each text (multi-label models: `labels`), in the record shape of
        `textclf predict --format jsonl`."""
        request = parse_request(await http.body())
        check_limits(request.texts, settings)
        try:
            slot = await batcher.submit(request.texts)
        except Exception as exc:
            metrics.texts.labels("500").inc(len(request.texts))
            log.error(f"predict: the model failed on a batch: {type(exc).__name__}: {exc}")
            raise ApiError(500, "the model failed on this request; the next one may work",
                           f"{type(exc).__name__}: {str(exc)[:300]}") from None
        model, records = slot_records(slot, request.top_k, settings.min_confidence)
        metrics.texts.labels("200").inc(len(records))
        metrics.abstained.inc(sum(1 for record in records if record.get("abstained")))
        body = {"model": brief(model), "predictions": records}
        return Response(json.dumps(body, ensure_ascii=False), media_type="application/json")

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """The model being served: run, labels, task, its evaluation metrics, the scorer, when it was loaded."""
        current = live.current
        return {**current.info, "load_seconds": current.load_seconds, "min_confidence": settings.min_confidence}

    @app.post("/v1/reload")
    async def reload() -> dict[str, Any]:
        """Check the target now; a changed model is loaded, warmed up and swapped in (409 when it is refused)."""
        result = await asyncio.get_running_loop().run_in_executor(reload_thread, live.check, True)
        if result.outcome == "failed":
            raise ApiError(409, f"reload refused; still serving {live.current.run_id}", result.detail)
        return {**asdict(result), "model": brief(live.current)}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, Any]:
        """A model is loaded and answered its warm-up."""
        return {"status": "ready", "run_id": live.current.run_id}

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


# the body is parsed by the route itself: as JSON whatever its Content-Type says (`curl -d` sends a form type), and
# straight from bytes by pydantic; this tells /docs what it takes
REQUEST_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": PredictRequest.model_json_schema()}}}}


def parse_request(body: bytes) -> PredictRequest:
    try:
        return PredictRequest.model_validate_json(body or b"null")
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None


def invalid_request(errors: list[dict[str, Any]]) -> ApiError:
    """400 for a body that is not JSON, 422 naming a field that is wrong (all of them in detail)."""
    problems = [validation_problem(error) for error in errors]
    if any(problem["type"] == "json_invalid" for problem in problems):
        return ApiError(400, f"malformed JSON: {problems[0]['message']}; the body must be a JSON object such as "
                             '{"texts": ["a text"]}', problems)
    # an unknown field first: `text` for `texts` is a typo, and the missing field it leaves is its echo
    # (pydantic's own order of the two differs between versions)
    first = min(problems, key=lambda problem: problem["type"] != "extra_forbidden")
    return ApiError(422, f"{first['field']}: {first['message']}", problems)


def check_limits(texts: list[str], settings: ServeSettings) -> None:
    if len(texts) > settings.max_texts:
        raise ApiError(413, f"texts: {len(texts)} texts, more than --max-texts {settings.max_texts} in one request; "
                            f"send them in smaller requests", {"field": "texts", "max_texts": settings.max_texts})
    for index, text in enumerate(texts):
        if len(text) > settings.max_chars:
            raise ApiError(413, f"texts[{index}]: {len(text)} characters, more than --max-chars "
                                f"{settings.max_chars}", {"field": f"texts[{index}]", "max_chars": settings.max_chars})


def slot_records(slot: Slot, top_k: int | None, min_confidence: float | None) -> tuple[ServedModel, list[dict]]:
    """This request's rows of a batched model call, as `predict --format jsonl` records."""
    model, batch = slot.result
    part = Predictions(batch.texts[slot.start: slot.stop], batch.labels, batch.probabilities[slot.start: slot.stop],
                       batch.thresholds, batch.label_separator)
    return model, rows(part, top_k, min_confidence)


def brief(model: ServedModel) -> dict[str, Any]:
    """The model of a response: which run answered."""
    return {"run_id": model.info.get("run_id"), "experiment": model.info.get("experiment"),
            "scorer": model.opened.kind}


def show_model(metrics: ServeMetrics, model: ServedModel) -> None:
    metrics.model.clear()
    metrics.model.labels(model.run_id, model.opened.kind).set(1)


def record_reload(metrics: ServeMetrics, result: ReloadResult, current: ServedModel) -> None:
    metrics.reloads.labels("ok" if result.outcome == "reloaded" else "failed").inc()
    show_model(metrics, current)


async def follow_target(live: LiveModel, reload_thread: ThreadPoolExecutor, every_s: float) -> None:
    """Check the target every `every_s` seconds (never when 0), off the event loop."""
    if every_s <= 0:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every_s)
        try:
            await loop.run_in_executor(reload_thread, live.check)
        except RuntimeError:  # the thread pool shut down: the service is stopping
            return


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = invalid_request(list(exc.errors()))
        return error_response(error.status, error.error, error.detail)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:  # a bug: the service stays up
        return error_response(500, "internal error; the next request may work", f"{type(exc).__name__}: {exc}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), request.url.path, exc.headers)


MESSAGES = {  # pydantic's error types, in the words of this service
    "missing": "is required",
    "string_type": "must be a string",
    "list_type": "must be a list of strings",
    "too_short": "must hold at least one text",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "greater_than_equal": "must be at least 1",
    "extra_forbidden": "unknown field (the fields are texts and top_k)",
    "model_type": "must be a JSON object such as {\"texts\": [\"a text\"]}",
    "model_attributes_type": "must be a JSON object such as {\"texts\": [\"a text\"]}",
    "dict_type": "must be a JSON object such as {\"texts\": [\"a text\"]}",
}


def validation_problem(error: dict[str, Any]) -> dict[str, Any]:
    """{"field": "texts[2]", "message": ..., "type": ...} from one of FastAPI's validation errors."""
    location = [part for part in error.get("loc", ()) if part != "body"]
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".") or "body"
    kind = str(error.get("type", ""))
    message = MESSAGES.get(kind, str(error.get("msg", "is not valid")))
    if kind == "json_invalid":
        message = f"not valid JSON ({(error.get('ctx') or {}).get('error', 'invalid')})"
    return {"field": field, "message": message, "type": kind}


def error_response(status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


@dataclass
class MeteredAuth:
    """ASGI middleware: the API key check (every route but /healthz) and the request metrics, for every request
    (a plain ASGI callable: Starlette's BaseHTTPMiddleware costs a task per request)."""

    app: Any
    metrics: ServeMetrics
    api_key: str | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"
        started, status = time.perf_counter(), [500]

        async def send_metered(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.api_key is not None and path not in OPEN_ROUTES and not self.authorized(scope):
                response = error_response(401, "unauthorized: send the API key as `Authorization: Bearer KEY`",
                                          "a missing or wrong key", {"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send_metered)
            else:
                await self.app(scope, receive, send_metered)
        finally:
            self.metrics.requests.labels(route, str(status[0])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    def authorized(self, scope: dict) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, key = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), self.api_key.encode())


def app_from_environment() -> FastAPI:
    """The app of one --workers process: the settings come from the parent through SETTINGS_ENV."""
    settings = ServeSettings(**json.loads(os.environ[SETTINGS_ENV]))
    return create_app(settings, load_served(follow(Path(settings.target)), settings.min_confidence))
