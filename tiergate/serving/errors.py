"""What can go wrong with a request, in the gateway's own terms: none of these know HTTP.
``tiergate.serving.http.errors`` is the one place that maps them to statuses and bodies.

    raise InvalidRequest("tier: unknown tier 'turbo'", field="tier", known=["fast", ...])

Each error's message names the problem and the field or value at fault; ``details`` are
extra fields for the answer's body (``known`` names, ``best_accuracy``, ...).
"""

from __future__ import annotations

import reprlib

ECHO_CHARS = 64  # the most of a client's value an error message repeats
_ECHO = reprlib.Repr()  # reprlib bounds every kind of value, nested ones too
_ECHO.maxstring = _ECHO.maxother = ECHO_CHARS
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxdict = _ECHO.maxset = 4
_ECHO.maxlevel = 2


def echo(value: object) -> str:
    """A client's value as an error message may repeat it: its repr, cut to about
    ``ECHO_CHARS`` characters with the original length, so an answer never reflects a
    large input (an 8 MB tier name comes back as 64 characters and "(8388608 characters)")."""
    try:
        text = _ECHO.repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        return f"<a {type(value).__name__} too large to show>"
    if isinstance(value, str | bytes) and len(value) > ECHO_CHARS:
        text += f" ({len(value)} characters)"
    return text


def capped(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` as is when short, else its first ``limit`` characters, "..." and its length:
    for text built from a client's input that is not a value (a key name, a path)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class ServingError(Exception):
    """Base of the gateway's answers other than a prediction."""

    def __init__(self, message: str, *, field: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.field, self.details = field, details


class InvalidRequest(ServingError):
    """The request is well-formed JSON but a field's value cannot be served (shape,
    values, an unknown tier, a parameter out of range)."""


class MalformedRequest(ServingError):
    """The body cannot be parsed at all (e.g. a binary-tensor header that does not fit)."""


class TooLarge(ServingError):
    """The payload, or an image's dimensions, exceed a configured limit."""


class BodyTimeout(ServingError):
    """The request's body did not arrive in full in the time allowed for reading it (a
    client that sends its body slowly must not hold a replica's admission slot)."""


class NotFound(ServingError):
    """A named variant or model does not exist."""


class Unsatisfiable(ServingError):
    """No variant meets the request's accuracy floor, or none is predicted within its
    latency bound and the request is strict."""


class Conflict(ServingError):
    """An operation that the current state does not allow (reloading keys that are off,
    a keys file that does not load, a variant in the wrong state)."""


class Gone(ServingError):
    """What the request names existed but is no longer held (an answer past its retention)."""


class Unauthenticated(ServingError):
    """No API key, or an unknown one."""


class Forbidden(ServingError):
    """The key may not do this (a tier outside its grant, an admin operation)."""


class Overloaded(ServingError):
    """Too much work queued to answer in time; try again after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int = 1, **details: object) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class RateLimited(Overloaded):
    """The API key is over its request rate."""


class Shed(ServingError):
    """Under overload, no variant could answer within the request's bound (plus its grace),
    so it is refused at once instead of being answered late; try again after
    ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: int = 1, **details: object) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s


class Unavailable(ServingError):
    """The service cannot answer now: not ready, timed out, or the variant failed."""

    def __init__(self, message: str, *, retry_after_s: int | None = None, **details: object) -> None:
        super().__init__(message, **details)
        self.retry_after_s = retry_after_s
