"""tiergate's log lines inside a Serve replica: written to the replica's own Serve log file,
each line emitted while a request is handled carrying that request's id.

Ray Serve tags its lines with the request id only when its access log is on (off by
default here, for speed); ``RequestIdFilter`` does it for every line instead. Log lines
name variants, statuses and errors: never a key, a header or a payload.

    route_into_serve_log()  # once, in the replica's constructor
"""

from __future__ import annotations

import logging

PACKAGES = ("tiergate",)


def current_request_id() -> str:
    """The id Ray Serve gave the request this task is handling ('' outside a request)."""
    try:
        from ray.serve.context import _get_serve_request_context
    except ImportError:
        return ""
    return _get_serve_request_context().request_id


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to a record made while a request is handled (Serve's formatter
    then prints it after the replica's name)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = current_request_id()
            if request_id:
                record.request_id = request_id
        return True


def route_into_serve_log(level: int = logging.INFO) -> None:
    """Send tiergate's loggers to the handlers Serve set up for this replica (its log file
    under the session's logs/serve/), with request ids."""
    serve_logger = logging.getLogger("ray.serve")
    handlers = list(serve_logger.handlers)
    for handler in handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = handlers, False
        logger.setLevel(level)
