"""What LLM and AsyncLLM share: configuration, mode selection and request preparation."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import httpx

from . import _protocol as proto
from ._server import ManagedServer, ServerSpec
from .errors import MlxcelError

DEFAULT_TIMEOUT_S = 600.0
CONNECT_TIMEOUT_S = 10.0


def make_timeout(timeout: Optional[float]) -> httpx.Timeout:
    """``timeout`` bounds each network step (connect, each read, each write); None = no limit."""
    if timeout is None:
        return httpx.Timeout(None)
    if timeout <= 0:
        raise MlxcelError(f"timeout must be positive, got {timeout}")
    return httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S))


class ClientBase:
    """Mode selection and request bodies; subclasses add the (sync or async) I/O."""

    def __init__(
        self,
        model: Optional[str] = None,
        *,
        base_url: Optional[str] = None,
        binary: Optional[str] = None,
        host: str = "127.0.0.1",
        port: Optional[int] = None,
        server_args: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
        api_key: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT_S,
        startup_timeout: float = 120.0,
        log_file: Optional[str] = None,
    ) -> None:
        self.api_key = api_key
        self.timeout = timeout
        self._model_id: Optional[str] = None
        self._closed = False
        self.server: Optional[ManagedServer] = None
        if base_url is not None:
            # Connect mode: `model` (if given) is the id to send instead of the discovered one.
            if binary is not None or port is not None or server_args or env or log_file:
                raise MlxcelError("binary, port, server_args, env and log_file apply to managed mode only "
                                  "(leave base_url out to start a server)")
            self._http_base, self._uds = proto.parse_endpoint(base_url)
            self._model_id = model
        else:
            spec = ServerSpec(model=model, binary=binary, host=host, port=port, args=list(server_args), env=env,
                              api_key=api_key, startup_timeout=startup_timeout, log_file=log_file)
            self.server = ManagedServer(spec)
            self._http_base, self._uds = "", None  # known once the server is launched

    # --- introspection -------------------------------------------------------------
    @property
    def managed(self) -> bool:
        """True when this client started (and owns) its server."""
        return self.server is not None

    @property
    def base_url(self) -> str:
        """The server's HTTP base URL (``http://localhost`` for a Unix socket)."""
        return self._http_base

    @property
    def socket_path(self) -> Optional[str]:
        """The Unix socket path, or None over TCP."""
        return self._uds

    @property
    def pid(self) -> Optional[int]:
        """The managed server's process id (None in connect mode)."""
        return self.server.pid if self.server else None

    def server_log(self) -> str:
        """The managed server's log so far ('' in connect mode)."""
        return self.server.log() if self.server else ""

    def _adopt_server_address(self) -> None:
        assert self.server is not None
        self._http_base = self.server.base_url
        self._uds = self.server.unix_path

    def _transport_kwargs(self) -> Dict[str, Any]:
        return {"uds": self._uds} if self._uds else {}

    def _headers(self) -> Dict[str, str]:
        return proto.auth_headers(self.api_key)

    def _check_open(self) -> None:
        if self._closed:
            raise MlxcelError("this client is closed")

    def _request_timeout(self, timeout: Any) -> httpx.Timeout:
        return make_timeout(self.timeout if timeout is _DEFAULT else timeout)

    # --- request bodies ----------------------------------------------------------
    def _completion_body(self, prompt: Union[str, List[int]], params: Dict[str, Any], stream: bool) -> Dict[str, Any]:
        if not isinstance(prompt, (str, list)):
            raise MlxcelError(f"prompt must be a string or a list of token ids, got {type(prompt).__name__}")
        body = proto.build_body(self._model_id, params, {}, stream)
        body["prompt"] = prompt
        return body

    def _chat_body(self, messages: proto.Messages, params: Dict[str, Any], stream: bool) -> Dict[str, Any]:
        body = proto.build_body(self._model_id, params, {}, stream)
        body["messages"] = proto.normalize_messages(messages)
        return body

    def _openai_kwargs(self) -> Tuple[Any, Dict[str, Any]]:
        try:
            import openai  # type: ignore[import-not-found]
        except ImportError as e:
            raise MlxcelError("openai_client() needs the `openai` package, which is not installed "
                              "(pip install openai); the mlxcel client itself does not need it") from e
        return openai, {"base_url": self._http_base + "/v1", "api_key": self.api_key or "mlxcel"}


class _Default:
    def __repr__(self) -> str:
        return "<client default>"


_DEFAULT: Any = _Default()  # "use the client's timeout" (None means "no timeout")
