"""The synchronous client.

    from mlxcel import LLM

    with LLM("models/mlxcel-demo") as llm:          # managed: starts `mlxcel serve`
        print(llm.chat("What is 12 + 30?").text)    # -> 42
        for piece in llm.chat_stream("Hello"):
            print(piece, end="")

    llm = LLM(base_url="http://127.0.0.1:8080")     # connect to a running server
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Optional, Union

import httpx

from . import _protocol as proto
from ._base import _DEFAULT, ClientBase, make_timeout
from .errors import MlxcelError, MlxcelTimeoutError
from .types import ChatCompletion, Completion


class LLM(ClientBase):
    """A client of one mlxcel server, managed (started here) or connected to (``base_url``).

    Managed mode (``base_url`` left out) runs ``mlxcel serve -m MODEL`` (binary from
    ``binary``, ``$MLXCEL_BIN`` or PATH) on a free port, waits until ``/health`` is 200 and
    stops the server on ``close()``, on leaving a ``with`` block, when the object is
    garbage-collected, or at interpreter exit. ``server_args`` adds server flags.
    Connect mode takes ``base_url``: ``http://host:port`` or a Unix socket path. ``timeout``
    (seconds, None = none) bounds each network step of a request; for a stream, the wait
    for each chunk.

    Request methods take the OpenAI request fields as keyword arguments (``max_tokens``,
    ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``seed``, ``stop``, ``n``,
    ``response_format``, ``tools``, ``chat_template_kwargs``, ...); None values are left out.
    """

    def __init__(self, model: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._client: Optional[httpx.Client] = None
        if self.server is not None:
            self.server.start()  # raises MlxcelStartupError / MlxcelTimeoutError with the log
            self._adopt_server_address()
        self._client = httpx.Client(transport=httpx.HTTPTransport(**self._transport_kwargs()),
                                    headers=self._headers(), timeout=make_timeout(self.timeout))
        if self.server is not None:
            try:
                self._discover_model()
            except BaseException:
                self.close()
                raise

    # --- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        """Closes the connections and stops a managed server (idempotent)."""
        self._closed = True
        if self._client is not None:
            self._client.close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Waits until the server's /health answers 200 (e.g. while a connected server loads)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._get_raw("/health", 5.0).status_code == 200:
                    return
            except MlxcelError:
                pass
            if time.monotonic() > deadline:
                where = self.socket_path or self.base_url
                raise MlxcelTimeoutError(f"server at {where} not ready within {timeout:g} s")
            time.sleep(0.05)

    # --- HTTP --------------------------------------------------------------------
    def _get_raw(self, path: str, timeout: Any = _DEFAULT) -> httpx.Response:
        self._check_open()
        assert self._client is not None
        try:
            return self._client.get(self.base_url + path, timeout=self._request_timeout(timeout))
        except httpx.HTTPError as e:
            raise proto.map_transport_error(e, f"GET {path}") from e

    def _get(self, path: str, timeout: Any = _DEFAULT) -> Any:
        return proto.decode_json(self._get_raw(path, timeout))

    def _post(self, path: str, body: Dict[str, Any], timeout: Any = _DEFAULT) -> Any:
        self._check_open()
        assert self._client is not None
        try:
            resp = self._client.post(self.base_url + path, json=body, timeout=self._request_timeout(timeout))
        except httpx.HTTPError as e:
            raise proto.map_transport_error(e, f"POST {path}") from e
        return proto.decode_json(resp)

    def _stream(self, path: str, body: Dict[str, Any], chat: bool, raw: bool, timeout: Any) -> Iterator[Any]:
        self._check_open()
        assert self._client is not None
        try:
            with self._client.stream("POST", self.base_url + path, json=body,
                                     timeout=self._request_timeout(timeout)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise proto.error_from_response(resp.status_code, resp.text)
                parser = proto.SSEParser(resp.status_code)
                for line in resp.iter_lines():
                    event = parser.feed(line)
                    if event is None:
                        continue
                    if raw:
                        yield event
                    else:
                        text = proto.delta_text(event, chat)
                        if text:
                            yield text
                parser.finish()
        except httpx.HTTPError as e:
            raise proto.map_transport_error(e, f"stream from {path}") from e

    def _discover_model(self) -> str:
        data = self._get("/v1/models").get("data") or []
        if not data or not isinstance(data[0], dict) or "id" not in data[0]:
            raise MlxcelError(f"/v1/models listed no model: {data!r}")
        self._model_id = str(data[0]["id"])
        return self._model_id

    def _ensure_model(self) -> None:
        if self._model_id is None:
            self._discover_model()

    # --- API ---------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The served model id (from /v1/models, fetched once)."""
        self._ensure_model()
        assert self._model_id is not None
        return self._model_id

    def models(self) -> List[Dict[str, Any]]:
        """The /v1/models list (OpenAI model objects: id, object, created, owned_by)."""
        return list(self._get("/v1/models").get("data") or [])

    def health(self) -> bool:
        """True when /health answers 200 (model loaded)."""
        return self._get_raw("/health", 5.0).status_code == 200

    def generate(self, prompt: Union[str, List[int]], *, timeout: Any = _DEFAULT, **params: Any) -> Completion:
        """Completes a raw prompt (no chat template) via /v1/completions."""
        self._ensure_model()
        body = self._completion_body(prompt, params, False)
        return proto.parse_completion(self._post("/v1/completions", body, timeout))

    def chat(self, messages: proto.Messages, *, timeout: Any = _DEFAULT, **params: Any) -> ChatCompletion:
        """One chat turn via /v1/chat/completions; a string is one user message."""
        self._ensure_model()
        body = self._chat_body(messages, params, False)
        return proto.parse_chat_completion(self._post("/v1/chat/completions", body, timeout))

    def stream(self, prompt: Union[str, List[int]], *, raw: bool = False, timeout: Any = _DEFAULT,
               **params: Any) -> Iterator[Any]:
        """Streams a raw-prompt completion: text pieces, or the chunk dicts with ``raw=True``.

        The request is sent when iteration starts; leaving the loop early cancels it.
        """
        self._ensure_model()
        return self._stream("/v1/completions", self._completion_body(prompt, params, True), False, raw, timeout)

    def chat_stream(self, messages: proto.Messages, *, raw: bool = False, timeout: Any = _DEFAULT,
                    **params: Any) -> Iterator[Any]:
        """Streams a chat turn: content pieces, or the chunk dicts with ``raw=True``
        (which also carry ``delta.reasoning_content`` and ``delta.tool_calls``)."""
        self._ensure_model()
        return self._stream("/v1/chat/completions", self._chat_body(messages, params, True), True, raw, timeout)

    def tokenize(self, text: str, *, add_special: bool = False, with_pieces: bool = False) -> List[Any]:
        """Token ids of ``text`` (``with_pieces``: ``{"id", "piece"}`` dicts)."""
        body = {"content": text, "add_special": add_special, "with_pieces": with_pieces}
        return list(self._post("/tokenize", body).get("tokens") or [])

    def detokenize(self, tokens: List[int]) -> str:
        """The text of token ids."""
        return str(self._post("/detokenize", {"tokens": proto.check_tokens(tokens)}).get("content", ""))

    def openai_client(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client for this server (needs the ``openai`` package)."""
        openai, args = self._openai_kwargs()
        if self._uds:
            args["http_client"] = httpx.Client(transport=httpx.HTTPTransport(uds=self._uds))
        args.update(kwargs)
        return openai.OpenAI(**args)

    def __repr__(self) -> str:
        where = self.socket_path or self.base_url
        mode = f"managed pid={self.pid}" if self.managed else "connected"
        return f"<mlxcel.LLM {mode} {where} model={self._model_id!r}>"
