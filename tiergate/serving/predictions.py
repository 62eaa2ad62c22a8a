"""Logits into the answer's predictions: softmax scores, the top-1 label and the top-k
classes per image.

    check_finite(logits, request)          # 422 for an answer the model cannot give
    predictions(logits, top_k=3, classes=("T-shirt", ...))
"""

from __future__ import annotations

import numpy as np

from tiergate.serving import schemas
from tiergate.serving.errors import InvalidRequest


def check_finite(logits: np.ndarray, request: schemas.RouteRequest) -> None:
    """Refuses (422) an answer the model cannot give: finite inputs large enough to overflow
    its arithmetic come out as inf or NaN logits, which have no class or score."""
    if not np.isfinite(logits).all():
        field = "image" if getattr(request, "image", None) is not None else "inputs"
        raise InvalidRequest(
            f"{field}: the model's output for this input is not finite (values too large?)", field=field
        )


def predictions(logits: np.ndarray, top_k: int, classes: tuple[str, ...]) -> list[schemas.Prediction]:
    """Softmax scores, the top-1 label and the ``top_k`` classes for each row of ``logits``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    k = min(top_k, probabilities.shape[1])
    results = []
    for row in probabilities:
        order = np.argsort(-row)[:k]
        scores = [
            schemas.Score(label=classes[i] if i < len(classes) else str(i), index=int(i), score=float(row[i]))
            for i in order
        ]
        top = scores[0]
        results.append(schemas.Prediction(label=top.label, index=top.index, score=top.score, top_k=scores))
    return results
