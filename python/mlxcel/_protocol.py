"""Wire helpers shared by the sync and async clients: endpoints, request bodies,
response parsing, server-sent events and error mapping. No I/O happens here."""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import httpx

from .errors import MlxcelConnectionError, MlxcelError, MlxcelServerError, MlxcelTimeoutError
from .types import ChatCompletion, Completion

Message = Dict[str, Any]
Messages = Union[str, Sequence[Message]]

# Keyword arguments that map one-to-one onto request fields; None means "server default".
SAMPLING_FIELDS = (
    "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "response_format",
)

UDS_BASE_URL = "http://localhost"


def parse_endpoint(base_url: str) -> Tuple[str, Optional[str]]:
    """Splits a user's address into (HTTP base URL, Unix socket path or None).

    Accepts ``http(s)://host:port[/v1]``, ``host:port``, ``unix:/path.sock`` and a bare socket
    path (absolute, relative with ``./``, or ending in ``.sock``).
    """
    url = base_url.strip()
    if not url:
        raise MlxcelError("base_url is empty")
    if url.startswith("unix:"):
        path = url[len("unix:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise MlxcelError(f"no socket path in {base_url!r}")
        return UDS_BASE_URL, path
    if "://" not in url and (url.startswith(("/", "./", "../", "~")) or url.endswith(".sock")):
        import os

        return UDS_BASE_URL, os.path.expanduser(url)
    if "://" not in url:
        url = "http://" + url
    scheme = url.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise MlxcelError(f"unsupported scheme {scheme!r} in {base_url!r} (use http, https or a socket path)")
    url = url.rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url, None


def auth_headers(api_key: Optional[str]) -> Dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def normalize_messages(messages: Messages) -> List[Message]:
    """A string becomes one user message; a list is passed through (copied)."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, dict):
        return [dict(messages)]
    out = list(messages)
    for m in out:
        if not isinstance(m, dict) or "role" not in m:
            raise MlxcelError(f"each message must be a dict with a 'role', got {m!r}")
    return out


def build_body(model: Optional[str], params: Dict[str, Any], extra: Dict[str, Any], stream: bool) -> Dict[str, Any]:
    """Request body: the model id, the non-None sampling fields, then ``extra`` verbatim."""
    body: Dict[str, Any] = {}
    if model:
        body["model"] = model
    for k, v in params.items():
        if v is not None:
            body[k] = v
    body.update(extra)
    if stream:
        body["stream"] = True
    return body


def error_from_response(status: int, text: str) -> MlxcelServerError:
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    return MlxcelServerError(status, body)


def decode_json(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise error_from_response(resp.status_code, resp.text)
    try:
        return resp.json()
    except ValueError as e:
        raise MlxcelError(f"server sent invalid JSON for {resp.request.url.path}: {resp.text[:200]!r}") from e


def parse_completion(body: Dict[str, Any]) -> Completion:
    choices = body.get("choices") or []
    first = choices[0] if choices else {}
    return Completion(text=first.get("text") or "", finish_reason=first.get("finish_reason"),
                      usage=body.get("usage"), raw=body)


def parse_chat_completion(body: Dict[str, Any]) -> ChatCompletion:
    choices = body.get("choices") or []
    first = choices[0] if choices else {}
    msg = first.get("message") or {}
    return ChatCompletion(text=msg.get("content") or "", finish_reason=first.get("finish_reason"),
                          usage=body.get("usage"), raw=body, reasoning=msg.get("reasoning_content"),
                          tool_calls=msg.get("tool_calls"))


class SSEParser:
    """Turns the lines of an OpenAI ``text/event-stream`` into JSON events.

    ``feed(line)`` returns the decoded event of a ``data:`` line (or None); ``done`` is set
    by ``data: [DONE]``. An ``{"error": ...}`` event raises MlxcelServerError.
    """

    def __init__(self, status: int) -> None:
        self.status = status
        self.done = False

    def feed(self, line: str) -> Optional[Dict[str, Any]]:
        if not line.startswith("data:"):
            return None  # blank separators, comments, event:/id: fields
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            event = json.loads(data)
        except ValueError as e:
            raise MlxcelError(f"server sent an invalid stream event: {data[:200]!r}") from e
        if isinstance(event, dict) and "error" in event:
            raise MlxcelServerError(self.status, event)
        return event

    def finish(self) -> None:
        """Called at the end of the body: a stream cut before [DONE] is a broken connection."""
        if not self.done:
            raise MlxcelConnectionError("the stream ended before [DONE] (the server closed the connection)")


def delta_text(event: Dict[str, Any], chat: bool) -> str:
    """The text of choice 0 in a stream chunk ('' for role-only, usage or other choices)."""
    for choice in event.get("choices") or []:
        if choice.get("index", 0) != 0:
            continue
        if chat:
            return (choice.get("delta") or {}).get("content") or ""
        return choice.get("text") or ""
    return ""


def map_transport_error(e: httpx.HTTPError, what: str) -> MlxcelError:
    """httpx's transport exceptions -> the client's error classes."""
    if isinstance(e, httpx.TimeoutException):
        return MlxcelTimeoutError(f"{what} timed out ({type(e).__name__})")
    if isinstance(e, (httpx.TransportError, httpx.StreamError)):
        return MlxcelConnectionError(f"{what} failed: {type(e).__name__}: {e}")
    return MlxcelError(f"{what} failed: {type(e).__name__}: {e}")


def check_tokens(tokens: Iterable[Any]) -> List[int]:
    out = []
    for t in tokens:
        if isinstance(t, dict):
            t = t.get("id")
        if isinstance(t, bool) or not isinstance(t, int):
            raise MlxcelError(f"token ids must be integers, got {t!r}")
        out.append(t)
    return out
