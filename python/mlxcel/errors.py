"""Exceptions raised by the mlxcel client.

Every error the client raises is an :class:`MlxcelError`; catch that one class to handle
them all. Transport failures (nothing listening, a connection cut mid-stream) are
:class:`MlxcelConnectionError`, deadlines are :class:`MlxcelTimeoutError`, an HTTP error
answer from the server is :class:`MlxcelServerError`, and a managed server that could not
start is :class:`MlxcelStartupError` (its log is in the message and in ``.log``).
"""

from __future__ import annotations

from typing import Any, Optional


class MlxcelError(Exception):
    """Base class of every error raised by the mlxcel client."""


class MlxcelConnectionError(MlxcelError):
    """The server could not be reached, or the connection broke (e.g. mid-stream)."""


class MlxcelTimeoutError(MlxcelError, TimeoutError):
    """A request (or a managed server's start-up) did not finish within its timeout."""

    def __init__(self, message: str, log: Optional[str] = None) -> None:
        super().__init__(message)
        self.log = log  # the managed server's log, when the start-up timed out


class MlxcelStartupError(MlxcelError):
    """A managed server exited (or could not be launched) before it became healthy."""

    def __init__(self, message: str, log: str = "", returncode: Optional[int] = None) -> None:
        super().__init__(message)
        self.log = log
        self.returncode = returncode


class MlxcelServerError(MlxcelError):
    """The server answered with an error: an HTTP status >= 400, or an error event in a stream.

    ``status`` is the HTTP status (the stream's status, 200, for an error event), ``body``
    the decoded JSON body (or the raw text when it was not JSON). ``message``, ``type``,
    ``param`` and ``code`` come from the OpenAI error object ``{"error": {...}}``.
    """

    def __init__(self, status: int, body: Any) -> None:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            self.message = str(err.get("message", ""))
            self.type = err.get("type")
            self.param = err.get("param")
            self.code = err.get("code")
        else:
            self.message = str(err if err is not None else body)
            self.type = self.param = self.code = None
        self.status = status
        self.body = body
        super().__init__(f"server answered {status}: {self.message}")
