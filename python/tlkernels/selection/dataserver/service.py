"""The dataserver as a web service (FastAPI): store and expert metadata, expert weights, budgeted
selections from expert scores, and the selected samples in chunks.

    GET  /v1/store                          datasets and sizes
    GET  /v1/experts                        K and each expert's metadata
    GET  /v1/experts/{i}                    expert i's weights (safetensors bytes)
    POST /v1/selections                     {"scores": [K floats], "budget": int, "seed": int?}
                                            -> {"id": str, "indices": [int]}
    GET  /v1/selections/{id}/samples?offset=&limit=    X, y, index of the selection (safetensors)

Selections are persisted under the store's ``selections/`` directory, so a restarted server
serves them. The client sends only scores, a budget and a seed: never target data.
"""

from __future__ import annotations

import json
import math
import os
import uuid

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel
from safetensors.torch import save as save_tensors

from .experts import load_expert_manifest
from .sampling import output_data
from .store import Store

__all__ = ["create_app", "serve"]


class SelectionRequest(BaseModel):
    scores: list[float]
    budget: int
    seed: int | None = None


def create_app(store_dir: str) -> FastAPI:
    """The FastAPI application serving the store at `store_dir`."""
    store = Store(store_dir)
    sel_dir = os.path.join(store_dir, "selections")
    os.makedirs(sel_dir, exist_ok=True)
    app = FastAPI(title="tlkernels dataserver", version="1")

    def experts_or_404():
        manifest = load_expert_manifest(store_dir)
        if manifest is None:
            raise HTTPException(404, "this store has no experts yet (tlkernels dataserver build --experts)")
        return manifest

    @app.get("/v1/store")
    def get_store():
        parts = store.partitions
        return {"size": store.size, "example_shape": list(store.example_shape),
                "n_partitions": None if parts is None else int(parts.max()) + 1,
                "datasets": [{"name": d.name, "size": d.size, "shape": list(d.shape), "labelled": d.labelled}
                             for d in store.datasets]}

    @app.get("/v1/experts")
    def get_experts():
        return experts_or_404()

    @app.get("/v1/experts/{i}")
    def get_expert(i: int):
        manifest = experts_or_404()
        if not 0 <= i < manifest["k"]:
            raise HTTPException(404, f"expert index must be in [0, {manifest['k']}), got {i}")
        with open(os.path.join(store_dir, "experts", manifest["experts"][i]["file"]), "rb") as f:
            return Response(f.read(), media_type="application/octet-stream")

    @app.post("/v1/selections")
    def post_selection(req: SelectionRequest):
        parts = store.partitions
        if parts is None:
            raise HTTPException(409, "the store is not partitioned yet")
        k = int(parts.max()) + 1
        if len(req.scores) != k:
            raise HTTPException(400, f"scores must have one value per expert: {k}, got {len(req.scores)}")
        if not all(math.isfinite(s) for s in req.scores):
            raise HTTPException(400, "scores must be finite numbers (no NaN or infinity)")
        if not 0 < req.budget <= store.size:
            raise HTTPException(400, f"budget must be in [1, {store.size}] (the store size), got {req.budget}")
        seed = 0 if req.seed is None else req.seed
        try:
            idx = output_data(req.scores, parts, req.budget, seed=seed)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        sid = uuid.uuid4().hex
        record = {"id": sid, "scores": req.scores, "budget": req.budget, "seed": seed, "indices": idx.tolist()}
        tmp = os.path.join(sel_dir, f".{sid}.json.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(sel_dir, f"{sid}.json"))
        return {"id": sid, "indices": record["indices"]}

    @app.get("/v1/selections/{sid}/samples")
    def get_samples(sid: str, offset: int = Query(0, ge=0), limit: int = Query(1024, ge=1, le=65536)):
        if not sid.isalnum():
            raise HTTPException(404, f"unknown selection id {sid!r}")
        path = os.path.join(sel_dir, f"{sid}.json")
        if not os.path.exists(path):
            raise HTTPException(404, f"unknown selection id {sid!r}")
        with open(path) as f:
            indices = np.asarray(json.load(f)["indices"], dtype=np.int64)
        chunk = indices[offset:offset + limit]
        X, y = store.get(chunk)
        import torch
        body = save_tensors({"X": X, "y": y, "index": torch.from_numpy(chunk.copy())})
        return Response(body, media_type="application/octet-stream",
                        headers={"X-Total": str(len(indices)), "X-Offset": str(offset)})

    return app


def serve(store_dir: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Runs the service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(store_dir), host=host, port=port, log_level="info")
