"""The engines' domain errors, and the cleaning of Ray's error text.

Engines raise these; the gateway decides what each means for a client (an HTTP status,
a retry elsewhere). ``remote_reason`` turns an error Ray delivered from another process
into one line fit for a log or an answer.
"""

from __future__ import annotations

import re


class QueueFull(RuntimeError):
    """The variant's queue is at its bound; the caller should shed load."""


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed while it waited; it was dropped from the queue."""


class VariantFailed(RuntimeError):
    """A variant's deployment failed to answer (its replica died, or its run raised)."""


class CorruptArtifact(RuntimeError):
    """The ONNX file's sha256 does not match the manifest: it is never loaded."""


_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def remote_reason(error: BaseException) -> str:
    """One line for logs and answers: a remote error's cause and message, without the
    traceback, pid, address and actor id that Ray puts in the text of its errors."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    lines = (_ANSI_COLOUR.sub("", line).strip() for line in str(error).splitlines())
    lines = [line for line in lines if line and "(pid=" not in line]  # Ray's "ray::Actor (pid=...)"
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
