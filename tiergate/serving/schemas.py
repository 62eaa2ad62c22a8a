"""Request and response bodies of the HTTP API (they also make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tiergate.profiles.tiers import MAX_LATENCY_MS, RequestSlo

NAME_CHARS = 128  # the longest tier or variant name a request may give


class RouteRequest(BaseModel):
    """What decides the variant: a tier, the request's own SLO, or a pin. Strict JSON types:
    numbers are numbers, booleans are booleans ("false" and 0 are refused), and every
    number is finite and bounded."""

    model_config = ConfigDict(extra="forbid", strict=True)

    tier: str | None = Field(
        None, max_length=NAME_CHARS, description="fast, balanced, accurate, or a configured tier"
    )
    slo: RequestSlo | None = None
    variant: str | None = Field(None, max_length=NAME_CHARS, description="pin a variant by name")
    strict: bool = Field(False, description="refuse (422) instead of serving outside the SLO")
    batch_size: int = Field(
        1,
        ge=1,
        description="images the request will carry (route only); at most serving.limits.max_batch_images",
    )
    timeout_ms: float | None = Field(
        None,
        gt=0,
        le=MAX_LATENCY_MS,
        allow_inf_nan=False,
        description="answer within this or get 429 (refused up front) / 503 (timed out in the queue); "
        "serving.admission.request_timeout_s caps it",
    )


class PredictRequest(RouteRequest):
    """``inputs`` (one image [C,H,W] or a batch [N,C,H,W] of JSON numbers) or ``image`` (base64)."""

    inputs: list[Any] | None = Field(None, description="JSON numbers only: no strings, booleans or null")
    image: str | None = Field(None, description="base64-encoded PNG or JPEG")
    top_k: int = Field(1, ge=1, le=100)

    @model_validator(mode="after")
    def _one_payload(self) -> PredictRequest:
        if (self.inputs is None) == (self.image is None):
            raise ValueError("give exactly one of 'inputs' or 'image'")
        return self


class Score(BaseModel):
    label: str
    index: int
    score: float  # softmax probability


class Prediction(BaseModel):
    label: str
    index: int
    score: float
    top_k: list[Score]


class Decision(BaseModel):
    variant: str | None
    tier: str | None
    reason: str
    explanation: str
    predicted_latency_ms: float | None
    max_latency_ms: float | None
    min_accuracy: float | None
    slo_feasible: bool


class PredictResponse(BaseModel):
    variant: str
    tier: str | None
    reason: str
    explanation: str
    predictions: list[Prediction]
    latency_ms: float
    slo_met: bool
    request_id: str
    retried_from: str | None = None  # the variant that failed before this one answered
    warning: str | None = Field(
        None,
        description="set when the answer came from a demoted variant (a pin reaches one): why it was demoted",
    )


class ErrorBody(BaseModel):
    """Every error answer, from the gateway, the API-key check or the front door."""

    model_config = ConfigDict(extra="allow")  # e.g. "known" names, the SLO's "best_accuracy"

    error: str = Field(description="what is wrong, naming the field or value at fault")
    field: str | None = Field(None, description="the input at fault, where one input is")


ERROR_MEANINGS = {
    400: "a /v1 body that is not UTF-8 text, or malformed v2 binary framing",
    401: "API keys are on and the request has no valid key",
    403: "the key does not allow this tier, variant or operation (or labelling what they served)",
    404: "unknown variant or model, or feedback for an answer never served here",
    408: "the body did not arrive in full within serving.limits.body_read_timeout_s",
    409: "not for this configuration (API keys off, feedback off), the keys file did not load (current "
    "keys stay), or an answer labelled already (feedback: outcome 'duplicate')",
    410: "feedback: the answer is no longer held (past serving.feedback.retention_s or max_answers)",
    413: "the body or an image is over the limits",
    422: "an input, tier or SLO the gateway will not serve (named in error/field)",
    429: "over the key's rate, or the variant's queue could not answer by the deadline (Retry-After)",
    503: "not ready, overloaded (refused before the body is read), shed (load would answer it too late "
    "for its bound: reason 'shed') or the deadline passed (Retry-After)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: each code with ``ErrorBody`` and what it means."""
    return {code: {"model": ErrorBody, "description": ERROR_MEANINGS[code]} for code in codes}


class RebuildRequest(BaseModel):
    """POST /v1/admin/rebuild: build one variant again; without ``variant``, the coordinator
    reads its config file again and builds what changed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    variant: str | None = Field(
        None, max_length=NAME_CHARS, description="a configured variant; absent: the config file read again"
    )
    force: bool = Field(False, description="rebuild even when the artifact cache holds a build of it")


ClassIndex = Annotated[int, Field(ge=0, description="a class index: the model's output position")]
FeedbackLabel = ClassIndex | list[ClassIndex]
FEEDBACK_LABEL = (
    "the true class index; for a request of several images, a list with one per image, in the "
    "request's order (an int is the same as a list of one)"
)


class FeedbackItem(BaseModel):
    """One label for one answered request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str = Field(
        min_length=1, max_length=NAME_CHARS, description="the answer's id: /v1 request_id, v2 id"
    )
    label: FeedbackLabel = Field(description=FEEDBACK_LABEL)


class FeedbackRequest(BaseModel):
    """POST /v1/feedback: ``{"request_id", "label"}`` for one answer, or ``{"items": [...]}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    request_id: str | None = Field(None, min_length=1, max_length=NAME_CHARS, description="one answer's id")
    label: FeedbackLabel | None = Field(None, description=FEEDBACK_LABEL)
    items: list[FeedbackItem] | None = Field(
        None, min_length=1, description="several labels; at most serving.feedback.max_items"
    )

    @model_validator(mode="after")
    def _one_form(self) -> FeedbackRequest:
        single = self.request_id is not None or self.label is not None
        if self.items is not None and single:
            raise ValueError("give either 'items' or 'request_id' and 'label', not both")
        if self.items is None and (self.request_id is None or self.label is None):
            raise ValueError("give 'request_id' and 'label', or 'items'")
        return self


class FeedbackResult(BaseModel):
    request_id: str
    outcome: Literal["accepted", "unknown", "expired", "duplicate", "forbidden"]
    variant: str | None = Field(None, description="accepted: the variant that served the answer")
    tier: str | None = Field(None, description="accepted: the tier it was served under")
    labelled: int = Field(0, description="accepted: images labelled")
    correct: int = Field(0, description="accepted: of them, predicted right")


class FeedbackResponse(BaseModel):
    accepted: int = Field(description="items accepted")
    results: list[FeedbackResult] = Field(description="one per item, in order")
