"""mlxcel: a pure-Python client for the mlxcel server (OpenAI-compatible HTTP API).

``LLM`` (sync) and ``AsyncLLM`` (asyncio) either start and own an ``mlxcel serve`` process
(managed mode) or talk to a running server (``base_url=``, HTTP or a Unix socket).
See docs/python.md.
"""

from .async_llm import AsyncLLM
from .errors import (MlxcelConnectionError, MlxcelError, MlxcelServerError, MlxcelStartupError,
                     MlxcelTimeoutError)
from .llm import LLM
from .types import ChatCompletion, Completion

__version__ = "0.1.0"

__all__ = [
    "LLM", "AsyncLLM", "Completion", "ChatCompletion", "MlxcelError", "MlxcelServerError",
    "MlxcelTimeoutError", "MlxcelConnectionError", "MlxcelStartupError", "__version__",
]
