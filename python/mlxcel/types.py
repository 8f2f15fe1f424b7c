"""Result types of the mlxcel client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class Completion:
    """The first choice of a /v1/completions answer; ``str(c)`` is its text.

    ``raw`` holds the whole JSON answer (all choices when ``n`` > 1).
    """

    text: str
    finish_reason: Optional[str] = None  # "stop", "length", "tool_calls"
    usage: Optional[Dict[str, int]] = None  # prompt_tokens, completion_tokens, total_tokens
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        return self.text

    def json(self) -> Any:
        """The text parsed as JSON (for structured output); raises ValueError when it is not."""
        return json.loads(self.text)

    @property
    def texts(self) -> List[str]:
        """The text of every choice, in index order."""
        choices = sorted(self.raw.get("choices") or [], key=lambda c: c.get("index", 0))
        return [(c.get("message") or {}).get("content") or "" if "message" in c else c.get("text") or ""
                for c in choices]


@dataclass
class ChatCompletion(Completion):
    """The first choice of a /v1/chat/completions answer; ``text`` is the message content."""

    reasoning: Optional[str] = None  # message.reasoning_content (text inside <think>)
    tool_calls: Optional[List[Dict[str, Any]]] = None  # OpenAI tool calls; arguments are JSON strings
