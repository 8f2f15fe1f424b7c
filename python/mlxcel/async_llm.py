"""The asyncio client: the same API as LLM, with awaitables and async iterators.

    from mlxcel import AsyncLLM

    async with AsyncLLM("models/mlxcel-demo") as llm:   # starts the server on entry
        answer = await llm.chat("What is 12 + 30?")
        async for piece in llm.chat_stream("Hello"):
            print(piece, end="")
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Dict, List, Optional, Union

import httpx

from . import _protocol as proto
from ._base import _DEFAULT, ClientBase, make_timeout
from .errors import MlxcelError, MlxcelTimeoutError
from .types import ChatCompletion, Completion


class AsyncLLM(ClientBase):
    """The asyncio twin of :class:`mlxcel.LLM` (same arguments and methods).

    Nothing happens in the constructor: a managed server starts, and the model id is
    discovered, on ``await llm.start()``, on entering ``async with``, or on the first
    request. ``await llm.aclose()`` (or leaving ``async with``) stops it; garbage collection
    and interpreter exit stop it too.
    """

    def __init__(self, model: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._client: Optional[httpx.AsyncClient] = None
        self._start_lock: Optional[asyncio.Lock] = None

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> "AsyncLLM":
        """Starts a managed server (waits for /health) and discovers the model id; idempotent."""
        self._check_open()
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._client is None:
                if self.server is not None:
                    await self.server.start_async()
                    self._adopt_server_address()
                self._client = httpx.AsyncClient(
                    transport=httpx.AsyncHTTPTransport(**self._transport_kwargs()),
                    headers=self._headers(), timeout=make_timeout(self.timeout))
            if self._model_id is None and self.server is not None:
                await self._discover_model()
        return self

    async def aclose(self) -> None:
        """Closes the connections and stops a managed server (idempotent)."""
        self._closed = True
        if self._client is not None:
            await self._client.aclose()
        if self.server is not None:
            self.server.stop()

    def close(self) -> None:
        """Stops a managed server without awaiting (for sync code paths); prefer ``aclose()``."""
        self._closed = True
        if self.server is not None:
            self.server.stop()

    async def __aenter__(self) -> "AsyncLLM":
        try:
            return await self.start()
        except BaseException:
            await self.aclose()
            raise

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Waits until the server's /health answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (await self._get_raw("/health", 5.0)).status_code == 200:
                    return
            except MlxcelError:
                pass
            if time.monotonic() > deadline:
                where = self.socket_path or self.base_url
                raise MlxcelTimeoutError(f"server at {where} not ready within {timeout:g} s")
            await asyncio.sleep(0.05)

    # --- HTTP --------------------------------------------------------------------
    async def _http(self) -> httpx.AsyncClient:
        self._check_open()
        if self._client is None:
            await self.start()
        assert self._client is not None
        return self._client

    async def _get_raw(self, path: str, timeout: Any = _DEFAULT) -> httpx.Response:
        client = await self._http()
        try:
            return await client.get(self.base_url + path, timeout=self._request_timeout(timeout))
        except httpx.HTTPError as e:
            raise proto.map_transport_error(e, f"GET {path}") from e

    async def _get(self, path: str, timeout: Any = _DEFAULT) -> Any:
        return proto.decode_json(await self._get_raw(path, timeout))

    async def _post(self, path: str, body: Dict[str, Any], timeout: Any = _DEFAULT) -> Any:
        client = await self._http()
        try:
            resp = await client.post(self.base_url + path, json=body, timeout=self._request_timeout(timeout))
        except httpx.HTTPError as e:
            raise proto.map_transport_error(e, f"POST {path}") from e
        return proto.decode_json(resp)

    async def _stream(self, path: str, body: Dict[str, Any], chat: bool, raw: bool,
                      timeout: Any) -> AsyncIterator[Any]:
        client = await self._http()
        try:
            async with client.stream("POST", self.base_url + path, json=body,
                                     timeout=self._request_timeout(timeout)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise proto.error_from_response(resp.status_code, resp.text)
                parser = proto.SSEParser(resp.status_code)
                async for line in resp.aiter_lines():
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

    async def _discover_model(self) -> str:
        data = (await self._get("/v1/models")).get("data") or []
        if not data or not isinstance(data[0], dict) or "id" not in data[0]:
            raise MlxcelError(f"/v1/models listed no model: {data!r}")
        self._model_id = str(data[0]["id"])
        return self._model_id

    async def _ensure_model(self) -> None:
        if self._model_id is None:
            await self._discover_model()

    # --- API ---------------------------------------------------------------------
    @property
    def model(self) -> Optional[str]:
        """The served model id; None until ``start()`` or the first request discovered it."""
        return self._model_id

    async def models(self) -> List[Dict[str, Any]]:
        """The /v1/models list."""
        return list((await self._get("/v1/models")).get("data") or [])

    async def health(self) -> bool:
        """True when /health answers 200."""
        return (await self._get_raw("/health", 5.0)).status_code == 200

    async def generate(self, prompt: Union[str, List[int]], *, timeout: Any = _DEFAULT, **params: Any) -> Completion:
        """Completes a raw prompt via /v1/completions."""
        await self._ensure_model()
        body = self._completion_body(prompt, params, False)
        return proto.parse_completion(await self._post("/v1/completions", body, timeout))

    async def chat(self, messages: proto.Messages, *, timeout: Any = _DEFAULT, **params: Any) -> ChatCompletion:
        """One chat turn via /v1/chat/completions; a string is one user message."""
        await self._ensure_model()
        body = self._chat_body(messages, params, False)
        return proto.parse_chat_completion(await self._post("/v1/chat/completions", body, timeout))

    async def stream(self, prompt: Union[str, List[int]], *, raw: bool = False, timeout: Any = _DEFAULT,
                     **params: Any) -> AsyncIterator[Any]:
        """Streams a raw-prompt completion: text pieces (chunk dicts with ``raw=True``)."""
        await self._ensure_model()
        body = self._completion_body(prompt, params, True)
        async for item in self._stream("/v1/completions", body, False, raw, timeout):
            yield item

    async def chat_stream(self, messages: proto.Messages, *, raw: bool = False, timeout: Any = _DEFAULT,
                          **params: Any) -> AsyncIterator[Any]:
        """Streams a chat turn: content pieces (chunk dicts with ``raw=True``)."""
        await self._ensure_model()
        body = self._chat_body(messages, params, True)
        async for item in self._stream("/v1/chat/completions", body, True, raw, timeout):
            yield item

    async def tokenize(self, text: str, *, add_special: bool = False, with_pieces: bool = False) -> List[Any]:
        """Token ids of ``text`` (``with_pieces``: ``{"id", "piece"}`` dicts)."""
        body = {"content": text, "add_special": add_special, "with_pieces": with_pieces}
        return list((await self._post("/tokenize", body)).get("tokens") or [])

    async def detokenize(self, tokens: List[int]) -> str:
        """The text of token ids."""
        return str((await self._post("/detokenize", {"tokens": proto.check_tokens(tokens)})).get("content", ""))

    def openai_client(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` client for this server (call after ``start()`` in managed mode)."""
        if self.server is not None and not self._http_base:
            raise MlxcelError("the managed server is not started yet: await llm.start() first")
        openai, args = self._openai_kwargs()
        if self._uds:
            args["http_client"] = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=self._uds))
        args.update(kwargs)
        return openai.AsyncOpenAI(**args)

    def __repr__(self) -> str:
        where = self.socket_path or self.base_url or "(not started)"
        mode = f"managed pid={self.pid}" if self.managed else "connected"
        return f"<mlxcel.AsyncLLM {mode} {where} model={self._model_id!r}>"
