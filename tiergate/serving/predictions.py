"""Logits into the answer's predictions: softmax scores, the top-1 label and the top-k
classes per image.

    predictions(logits, top_k=3, classes=("T-shirt", ...))
"""

from __future__ import annotations

import numpy as np

from tiergate.serving import schemas


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
