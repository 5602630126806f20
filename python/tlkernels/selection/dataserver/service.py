"""The dataserver as a web service (FastAPI): store and expert metadata, expert weights, budgeted
selections from expert scores, and the selected samples in chunks.

    GET    /v1/store                        datasets and sizes
    GET    /v1/experts                      K and each expert's metadata (with its file's sha256)
    GET    /v1/experts/{i}                  expert i's weights (safetensors bytes), sha256-checked
    POST   /v1/selections                   {"scores": [K floats], "budget": int, "seed": int?}
                                            -> {"id": str, "indices": [int]}
    GET    /v1/selections/{id}/samples?offset=&limit=    X, y, index of the selection (safetensors)
    DELETE /v1/selections/{id}              forgets a selection (204)

Selections are persisted under the store's ``selections/`` directory, so a restarted server
serves them. The client sends only scores, a budget and a seed: never target data.

Limits (arguments of ``create_app`` and ``tlkernels serve`` flags):
- request bodies over ``max_body_bytes`` (default 1 MiB: ~40,000 scores) get 413 before they are
  read in full; the JSON is parsed and validated in a worker thread, never on the event loop;
- retention: at most ``max_selections`` stored selections (default 10,000; the oldest go first)
  and none older than ``selection_ttl`` seconds (default 7 days); 0 turns a limit off. An expired
  selection answers 404 like an unknown one. Temporary files of interrupted writes are removed
  at start;
- integrity: an expert file whose sha256 differs from the manifest's is refused (500 naming the
  file); a corrupt file (selection, partitions, experts manifest, shard) fails only the requests
  that need it, with 500 and a message naming the file and what is wrong.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque

import numpy as np
from safetensors.torch import save as save_tensors

from ..._optional import require

try:  # the service extra
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, ConfigDict, Field, ValidationError
except ImportError:
    require("fastapi", "service", "the dataserver service (tlkernels serve)")
    raise

from .experts import load_expert_bytes, load_expert_manifest
from .sampling import output_data
from .store import CorruptFileError, Store

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_SELECTIONS",
    "DEFAULT_SELECTION_TTL",
    "create_app",
    "serve",
]

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_SELECTIONS = 10_000
DEFAULT_SELECTION_TTL = 7 * 24 * 3600.0

log = logging.getLogger("tlkernels.dataserver")


class SelectionRequest(BaseModel):
    """Strict: a budget of ``true`` or ``"5"``, a score ``"0.5"`` and unknown fields are refused."""

    model_config = ConfigDict(strict=True, extra="forbid")
    scores: list[float]
    budget: int
    seed: int | None = Field(None, ge=0)


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, by its Content-Length before
    anything is read, or while a chunked body is streamed in."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.limit
            except ValueError:
                return await self._reply(send, 400, "the Content-Length header is not a number")
            if too_large:
                return await self._reply(send, 413, self._message(int(declared)))
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reply(send, 413, self._message(None))

    def _message(self, n: int | None) -> str:
        size = f"{n} bytes" if n is not None else "the streamed body"
        return (
            f"request body too large: {size} exceeds the server's limit of {self.limit} bytes "
            "(tlkernels serve --max-body-bytes)"
        )

    @staticmethod
    async def _reply(send, status: int, detail: str):
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _Selections:
    """The persisted selections with their retention: at most ``max_count`` files, none older
    than ``ttl`` seconds (0 = no limit). Ordered by write time in memory; a scan of the directory
    at start. Thread-safe (handlers run in worker threads)."""

    def __init__(self, root: str, max_count: int, ttl: float):
        self.root, self.max_count, self.ttl = root, max_count, ttl
        self.lock = threading.Lock()
        os.makedirs(root, exist_ok=True)
        entries = []
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if name.startswith(".") and name.endswith(".tmp"):  # an interrupted write
                self._remove(path)
            elif name.endswith(".json") and name[:-5].isalnum():
                try:
                    entries.append((os.stat(path).st_mtime, name[:-5]))
                except FileNotFoundError:
                    pass
        self.order = deque(sid for _, sid in sorted(entries))
        self.known = set(self.order)
        with self.lock:
            self._prune()

    def path(self, sid: str) -> str:
        return os.path.join(self.root, f"{sid}.json")

    @staticmethod
    def _remove(path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def _prune(self) -> None:  # under the lock
        now = time.time()
        while self.order:
            sid = self.order[0]
            over_count = self.max_count and len(self.order) > self.max_count
            if not over_count and not (self.ttl and self._age(sid, now) > self.ttl):
                break
            self.order.popleft()
            self.known.discard(sid)
            self._remove(self.path(sid))

    def add(self, sid: str, record: dict) -> None:
        tmp = os.path.join(self.root, f".{sid}.json.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, self.path(sid))
        with self.lock:
            self.order.append(sid)
            self.known.add(sid)
            self._prune()

    def _age(self, sid: str, now: float) -> float:
        try:
            return now - os.stat(self.path(sid)).st_mtime
        except FileNotFoundError:
            return float("inf")

    def expired(self, sid: str) -> bool:
        return bool(self.ttl) and self._age(sid, time.time()) > self.ttl

    def delete(self, sid: str) -> bool:
        path = self.path(sid)
        with self.lock:
            existed = os.path.exists(path)
            self._remove(path)
            if sid in self.known:
                self.known.discard(sid)
                self.order.remove(sid)
        return existed


def _check_limits(**limits) -> None:
    """Each of create_app's limits (name=value) must be a number >= 0 (0: no limit)."""
    for name, v in limits.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"{name} must be a non-negative number (0: no limit), got {v!r}")


def _log_manifest_state(store_dir: str) -> None:
    """Logs, at start-up, an unreadable experts manifest (the other endpoints still serve;
    /v1/experts answers 500 naming it) or one whose files carry no sha256 (served unchecked)."""
    try:
        manifest = load_expert_manifest(store_dir)
    except CorruptFileError as e:
        log.error("%s", e)
        manifest = None
    if manifest is not None and any("sha256" not in e for e in manifest["experts"]):
        log.warning(
            "the experts manifest of %s records no sha256 for its files: they are served unchecked "
            "(rebuild the experts to record them)",
            store_dir,
        )


def _store_summary(store: Store) -> dict:
    """GET /v1/store: size, example shape, number of partitions (None before partitioning) and
    the datasets (name, size, shape, labelled)."""
    parts = store.partitions
    return {
        "size": store.size,
        "example_shape": list(store.example_shape),
        "n_partitions": None if parts is None else int(parts.max()) + 1,
        "datasets": [
            {
                "name": d.name,
                "size": d.size,
                "shape": list(d.shape),
                "labelled": d.labelled,
            }
            for d in store.datasets
        ],
    }


def _parse_selection(body: bytes) -> SelectionRequest:
    """The JSON body of POST /v1/selections; a malformed one raises FastAPI's 422
    RequestValidationError with the locations under "body"."""
    try:
        return SelectionRequest.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_context=False, include_input=False)
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in errors]) from None


def _make_selection(req: SelectionRequest, store: Store, selections: _Selections) -> dict:
    """Draws `req.budget` store indices by the experts' scores (one per partition), records them
    under a new id and returns {"id", "indices"}; 409 before partitioning, 400 for scores of the
    wrong length or not finite and for a budget outside [1, store size]."""
    parts = store.partitions
    if parts is None:
        raise HTTPException(409, "the store is not partitioned yet")
    k = int(parts.max()) + 1
    if len(req.scores) != k:
        raise HTTPException(
            400,
            f"scores must have one value per expert: {k}, got {len(req.scores)}",
        )
    if not np.isfinite(np.asarray(req.scores, dtype=np.float64)).all():
        raise HTTPException(400, "scores must be finite numbers (no NaN or infinity)")
    if not 0 < req.budget <= store.size:
        raise HTTPException(
            400,
            f"budget must be in [1, {store.size}] (the store size), got {req.budget}",
        )
    seed = 0 if req.seed is None else req.seed
    try:
        idx = output_data(req.scores, parts, req.budget, seed=seed)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    sid = uuid.uuid4().hex
    record = {
        "id": sid,
        "scores": req.scores,
        "budget": req.budget,
        "seed": seed,
        "indices": idx.tolist(),
    }
    selections.add(sid, record)
    return {"id": sid, "indices": record["indices"]}


def _selection_indices(path: str, sid: str, store_size: int) -> np.ndarray:
    """The indices (n,) int64 recorded in selection `sid`'s file at `path`: 404 when the file
    went away, CorruptFileError (naming selections/<sid>.json) when it is not a selection record
    or holds an index outside [0, store_size)."""
    shown = f"selections/{sid}.json"
    try:
        with open(path, encoding="utf-8") as f:
            indices = np.asarray(json.load(f)["indices"], dtype=np.int64).reshape(-1)
    except FileNotFoundError:
        raise HTTPException(404, f"unknown or expired selection id {sid!r}") from None
    except (
        UnicodeDecodeError,
        ValueError,
        KeyError,
        TypeError,
        OverflowError,
    ) as e:
        what = f"missing key {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise CorruptFileError(shown, f"not a selection record ({what})") from None
    if indices.size and (indices.min() < 0 or indices.max() >= store_size):
        raise CorruptFileError(shown, f"its indices are not all in [0, {store_size})")
    return indices


def create_app(
    store_dir: str,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_selections: int = DEFAULT_MAX_SELECTIONS,
    selection_ttl: float = DEFAULT_SELECTION_TTL,
) -> FastAPI:
    """The FastAPI application serving the store at `store_dir` (see the module docstring for the
    limits). Raises CorruptFileError (naming the file) if the store's manifest is unreadable."""
    _check_limits(max_body_bytes=max_body_bytes, max_selections=max_selections, selection_ttl=selection_ttl)
    store = Store(store_dir)
    selections = _Selections(os.path.join(store_dir, "selections"), int(max_selections), float(selection_ttl))
    _log_manifest_state(store_dir)
    app = FastAPI(title="tlkernels dataserver", version="1")
    if max_body_bytes:
        app.add_middleware(BodySizeLimit, limit=int(max_body_bytes))

    @app.exception_handler(CorruptFileError)
    async def corrupt_file(request: Request, exc: CorruptFileError):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": f"server data error: {exc}"}, status_code=500)

    def experts_or_404():
        manifest = load_expert_manifest(store_dir)
        if manifest is None:
            raise HTTPException(
                404,
                "this store has no experts yet (tlkernels dataserver build --partitions K)",
            )
        return manifest

    @app.get("/v1/store")
    def get_store():
        return _store_summary(store)

    @app.get("/v1/experts")
    def get_experts():
        return experts_or_404()

    @app.get("/v1/experts/{i}")
    def get_expert(i: int):
        manifest = experts_or_404()
        if not 0 <= i < manifest["k"]:
            raise HTTPException(404, f"expert index must be in [0, {manifest['k']}), got {i}")
        return Response(
            load_expert_bytes(store_dir, manifest, i),
            media_type="application/octet-stream",
        )

    def select(body: bytes) -> dict:  # in a worker thread: parsing, scoring, the file write
        return _make_selection(_parse_selection(body), store, selections)

    @app.post(
        "/v1/selections",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SelectionRequest.model_json_schema()}},
            }
        },
    )
    async def post_selection(request: Request):
        body = await request.body()  # bounded by BodySizeLimit
        return await run_in_threadpool(select, body)

    def known_selection(sid: str) -> str:
        if not sid.isalnum() or len(sid) > 64:
            raise HTTPException(404, f"unknown selection id {sid!r}")
        path = selections.path(sid)
        if not os.path.exists(path) or selections.expired(sid):
            raise HTTPException(404, f"unknown or expired selection id {sid!r}")
        return path

    @app.get("/v1/selections/{sid}/samples")
    def get_samples(sid: str, offset: int = Query(0, ge=0), limit: int = Query(1024, ge=1, le=65536)):
        indices = _selection_indices(known_selection(sid), sid, store.size)
        chunk = indices[offset : offset + limit]
        X, y = store.get(chunk)
        import torch

        body = save_tensors({"X": X, "y": y, "index": torch.from_numpy(chunk.copy())})
        return Response(
            body,
            media_type="application/octet-stream",
            headers={"X-Total": str(len(indices)), "X-Offset": str(offset)},
        )

    @app.delete("/v1/selections/{sid}", status_code=204)
    def delete_selection(sid: str):
        if not sid.isalnum() or len(sid) > 64 or not selections.delete(sid):
            raise HTTPException(404, f"unknown selection id {sid!r}")
        return Response(status_code=204)

    return app


def serve(store_dir: str, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    """Runs the service with uvicorn until interrupted. ``limits``: max_body_bytes,
    max_selections, selection_ttl (see create_app)."""
    uvicorn = require("uvicorn", "service", "tlkernels serve")
    uvicorn.run(create_app(store_dir, **limits), host=host, port=port, log_level="info")
