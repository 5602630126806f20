"""The client side: download experts, score them on the target (FastAdapt, the paper's
Algorithm 3) locally, and send only the scores and a budget; then fetch the selected samples."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from torch import Tensor

from ..._optional import require
from ...selfsup import rotation_accuracy
from .experts import build_expert, verify_expert_bytes

__all__ = ["DataServerClient", "fast_adapt_scores"]


@torch.no_grad()
def _features(net, X: Tensor, batch_size: int = 1024) -> np.ndarray:
    net.eval()
    return torch.cat([net.features(X[i : i + batch_size]) for i in range(0, X.shape[0], batch_size)]).numpy()


def fast_adapt_scores(experts, X: Tensor, y: Tensor | None = None, folds: int = 5, seed: int = 0) -> np.ndarray:
    """One score z_i per expert, computed on the client's target data, which never leaves it.

    With labels y: a linear probe (standardised penultimate features, logistic regression), its
    stratified k-fold cross-validated accuracy. Without labels: the expert's rotation-prediction
    accuracy on X (Yan et al. 2020, eq. 5). X (N, C, H, W); y (N,) or None. Returns (K,)."""
    X = torch.as_tensor(X, dtype=torch.float32)
    if y is None:
        return np.array([rotation_accuracy(e, X) for e in experts])
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y)
    k = min(folds, int(np.bincount(y).min()))
    if k < 2:
        raise ValueError("y needs at least 2 examples of every class for the cross-validated probe")
    cv = StratifiedKFold(k, shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    return np.array([cross_val_score(probe, _features(e, X), y, cv=cv).mean() for e in experts])


class DataServerClient:
    """Talks to a ``tlkernels serve`` dataserver.

    url: the server's base URL (e.g. "http://127.0.0.1:8000"); http: optionally an httpx.Client
    to use instead (tests pass FastAPI's TestClient)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", http=None, timeout: float = 60.0):
        if http is None:
            httpx = require("httpx", "service", "DataServerClient")
            http = httpx.Client(base_url=url, timeout=timeout)
        self.http = http

    def _get(self, path: str, **params):
        r = self.http.get(path, params=params or None)
        if r.status_code >= 400:
            raise RuntimeError(f"GET {path} failed ({r.status_code}): {r.text}")
        return r

    def store_info(self) -> dict:
        return self._get("/v1/store").json()

    def experts(self) -> list:
        """Downloads every expert: a list of networks with ``features`` and rotation heads."""
        manifest = self._get("/v1/experts").json()
        out = []
        for i, meta in enumerate(manifest["experts"]):
            net = build_expert(meta["config"])
            data = self._get(f"/v1/experts/{i}").content
            # the manifest's sha256: a file damaged on the way (or served unchecked) is refused
            verify_expert_bytes(data, meta, where=" (as downloaded from the server)")
            net.load_state_dict(load_tensors(data))
            out.append(net)
        return out

    def select(self, scores, budget: int, seed: int | None = None) -> tuple[str, np.ndarray]:
        """Sends the scores and the budget; returns (selection id, sorted indices)."""
        body = {"scores": [float(s) for s in scores], "budget": int(budget)}
        if seed is not None:
            body["seed"] = int(seed)
        r = self.http.post("/v1/selections", json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"POST /v1/selections failed ({r.status_code}): {r.text}")
        d = r.json()
        return d["id"], np.asarray(d["indices"], dtype=np.int64)

    def delete(self, selection_id: str) -> None:
        """Asks the server to forget a selection (its samples can no longer be fetched)."""
        r = self.http.delete(f"/v1/selections/{selection_id}")
        if r.status_code >= 400:
            raise RuntimeError(f"DELETE /v1/selections/{selection_id} failed ({r.status_code}): {r.text}")

    def samples(self, selection_id: str, chunk: int = 4096) -> tuple[Tensor, Tensor, Tensor]:
        """Fetches a selection in chunks: X (n, ...), y (n,) (-1 = unlabelled), index (n,)."""
        parts, offset = [], 0
        while True:
            r = self._get(f"/v1/selections/{selection_id}/samples", offset=offset, limit=chunk)
            t = load_tensors(r.content)
            parts.append(t)
            offset += t["index"].numel()
            if offset >= int(r.headers["X-Total"]) or t["index"].numel() == 0:
                break
        return tuple(torch.cat([p[k] for p in parts]) for k in ("X", "y", "index"))

    def request_data(self, X, y=None, budget: int = 1000, seed: int = 0):
        """FastAdapt on (X, y) locally, then select and download `budget` examples:
        returns (X_sel, y_sel, index, scores)."""
        scores = fast_adapt_scores(self.experts(), X, y, seed=seed)
        sid, _ = self.select(scores, budget, seed=seed)
        Xs, ys, idx = self.samples(sid)
        return Xs, ys, idx, scores
