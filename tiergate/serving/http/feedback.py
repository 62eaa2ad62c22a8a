"""POST /v1/feedback: late ground truth for answers this replica served.

    add_feedback_routes(app, access)

``{"request_id": "...", "label": 3}`` labels one answer: 200 when accepted, else the
refusal's status (404 unknown, 410 expired, 409 duplicate, 403 forbidden) with ``outcome``
naming it. ``{"items": [{"request_id", "label"}, ...]}`` labels several: 200, with each
item's outcome in ``results``. Labels that are no class index, or do not match the
request's images, are 422 naming the field, and then no item is taken.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from tiergate.serving import schemas
from tiergate.serving.errors import Conflict, Forbidden, Gone, NotFound, ServingError
from tiergate.serving.http.access import Access
from tiergate.serving.quality import LabelItem, LabelResult, Outcome, may_label
from tiergate.serving.schemas import error_responses as errors

REFUSALS: dict[Outcome, tuple[type[ServingError], str]] = {
    Outcome.UNKNOWN: (NotFound, "no answer with this id was served here"),
    Outcome.EXPIRED: (Gone, "the answer is no longer held (serving.feedback.retention_s, max_answers)"),
    Outcome.DUPLICATE: (Conflict, "the answer is labelled already"),
    Outcome.FORBIDDEN: (Forbidden, "the key may not use the tier that served this answer"),
}


def add_feedback_routes(app: FastAPI, access: Access) -> None:
    @app.post("/v1/feedback", response_model=schemas.FeedbackResponse,
              responses=errors(400, 401, 403, 404, 408, 409, 410, 413, 422, 429, 503))  # fmt: skip
    async def feedback(body: schemas.FeedbackRequest, request: Request):
        """Join labels to served answers: live accuracy per variant and tier (see README)."""
        grant = access.key(request)
        if grant is not None:
            grant.take()
        results = access.replica.feedback.label(_items(body), may_label(grant))
        if body.items is None and results[0].outcome is not Outcome.ACCEPTED:
            _refuse(results[0])
        rows = [schemas.FeedbackResult(**vars(result)) for result in results]
        accepted = sum(result.outcome is Outcome.ACCEPTED for result in results)
        return schemas.FeedbackResponse(accepted=accepted, results=rows)


def _items(body: schemas.FeedbackRequest) -> list[LabelItem]:
    if body.items is None:
        return [LabelItem(body.request_id, body.label, "label")]
    return [LabelItem(item.request_id, item.label, f"items[{i}].label") for i, item in enumerate(body.items)]


def _refuse(result: LabelResult) -> None:
    """The one-label form's refusal, as the error its outcome maps to."""
    error, why = REFUSALS[result.outcome]
    raise error(f"request_id: {why}", field="request_id", outcome=result.outcome.value)
