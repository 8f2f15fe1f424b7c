"""Client pieces that need no server: addresses, SSE parsing, errors, results, arguments."""

from __future__ import annotations

import sys
import types

import pytest

import mlxcel
from mlxcel import _protocol as proto
from mlxcel._server import find_binary, server_command


@pytest.mark.parametrize("url,expected", [
    ("http://127.0.0.1:8080", ("http://127.0.0.1:8080", None)),
    ("http://127.0.0.1:8080/", ("http://127.0.0.1:8080", None)),
    ("http://127.0.0.1:8080/v1", ("http://127.0.0.1:8080", None)),
    ("https://example.com/v1/", ("https://example.com", None)),
    ("localhost:9000", ("http://localhost:9000", None)),
    ("/tmp/mlxcel.sock", ("http://localhost", "/tmp/mlxcel.sock")),
    ("unix:/tmp/a.sock", ("http://localhost", "/tmp/a.sock")),
    ("unix:///tmp/a", ("http://localhost", "/tmp/a")),
    ("./rel.sock", ("http://localhost", "./rel.sock")),
])
def test_parse_endpoint(url, expected):
    assert proto.parse_endpoint(url) == expected


@pytest.mark.parametrize("url", ["", "ftp://host", "unix:"])
def test_parse_endpoint_rejects(url):
    with pytest.raises(mlxcel.MlxcelError):
        proto.parse_endpoint(url)


def test_sse_parser_events_and_done():
    p = proto.SSEParser(200)
    assert p.feed("") is None
    assert p.feed(": comment") is None
    ev = p.feed('data: {"choices": [{"index": 0, "delta": {"content": "4"}}]}')
    assert proto.delta_text(ev, chat=True) == "4"
    assert proto.delta_text({"choices": [{"index": 0, "text": "x"}]}, chat=False) == "x"
    assert proto.delta_text({"choices": [{"index": 1, "text": "x"}]}, chat=False) == ""
    assert proto.delta_text({"choices": [], "usage": {}}, chat=True) == ""
    with pytest.raises(mlxcel.MlxcelConnectionError):
        p.finish()
    assert p.feed("data: [DONE]") is None and p.done
    p.finish()


def test_sse_error_event_raises_server_error():
    p = proto.SSEParser(200)
    with pytest.raises(mlxcel.MlxcelServerError) as ei:
        p.feed('data: {"error": {"message": "generation timed out after 1 s", "type": "server_error", '
               '"param": null, "code": "timeout"}}')
    assert ei.value.code == "timeout" and "timed out" in ei.value.message and ei.value.status == 200
    with pytest.raises(mlxcel.MlxcelError):
        proto.SSEParser(200).feed("data: {not json")


def test_server_error_fields():
    e = proto.error_from_response(400, '{"error": {"message": "bad", "type": "invalid_request_error", '
                                        '"param": "max_tokens", "code": null}}')
    assert (e.status, e.message, e.type, e.param) == (400, "bad", "invalid_request_error", "max_tokens")
    assert e.body["error"]["message"] == "bad" and "400" in str(e) and "bad" in str(e)
    e = proto.error_from_response(502, "<html>bad gateway</html>")
    assert e.status == 502 and e.body == "<html>bad gateway</html>" and e.type is None


def test_error_hierarchy():
    for cls in (mlxcel.MlxcelServerError, mlxcel.MlxcelTimeoutError, mlxcel.MlxcelConnectionError,
                mlxcel.MlxcelStartupError):
        assert issubclass(cls, mlxcel.MlxcelError)
    assert issubclass(mlxcel.MlxcelTimeoutError, TimeoutError)


def test_messages_and_tokens():
    assert proto.normalize_messages("hi") == [{"role": "user", "content": "hi"}]
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert proto.normalize_messages(msgs) == msgs
    with pytest.raises(mlxcel.MlxcelError):
        proto.normalize_messages([{"content": "no role"}])
    assert proto.check_tokens([1, {"id": 2, "piece": "x"}]) == [1, 2]
    with pytest.raises(mlxcel.MlxcelError):
        proto.check_tokens([1, "2"])


def test_body_drops_none_and_keeps_extra_fields():
    llm = mlxcel.LLM(base_url="http://127.0.0.1:9", model="m")
    body = llm._chat_body("hi", {"max_tokens": 5, "temperature": None,
                                 "chat_template_kwargs": {"enable_thinking": False}}, stream=True)
    assert body == {"model": "m", "max_tokens": 5, "chat_template_kwargs": {"enable_thinking": False},
                    "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(mlxcel.MlxcelError):
        llm._completion_body(42, {}, False)
    llm.close()


def test_completion_results():
    c = proto.parse_chat_completion({"choices": [
        {"index": 1, "message": {"content": "b"}, "finish_reason": "length"},
        {"index": 0, "message": {"role": "assistant", "content": '{"a": 1}', "reasoning_content": "r"},
         "finish_reason": "stop"}]})
    # choice 0 comes first in the server's answers; texts sorts by index in any case
    assert c.texts == ['{"a": 1}', "b"]
    c = proto.parse_completion({"choices": [{"index": 0, "text": "[1, 2]", "finish_reason": "stop"}],
                                "usage": {"total_tokens": 3}})
    assert str(c) == "[1, 2]" and c.json() == [1, 2] and c.usage == {"total_tokens": 3}


def test_connect_mode_rejects_managed_arguments():
    with pytest.raises(mlxcel.MlxcelError, match="managed mode only"):
        mlxcel.LLM(base_url="http://127.0.0.1:9", binary="/bin/true")
    with pytest.raises(mlxcel.MlxcelError, match="timeout"):
        mlxcel.LLM(base_url="http://127.0.0.1:9", timeout=0).models()


def test_binary_lookup(monkeypatch, tmp_path):
    with pytest.raises(mlxcel.MlxcelError, match="not found"):
        find_binary(str(tmp_path / "nope"))
    monkeypatch.setenv("MLXCEL_BIN", str(tmp_path / "missing-mlxcel"))
    with pytest.raises(mlxcel.MlxcelError, match="MLXCEL_BIN|not found"):
        mlxcel.LLM("m")
    monkeypatch.delenv("MLXCEL_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(mlxcel.MlxcelError, match="no mlxcel binary"):
        find_binary(None)
    exe = tmp_path / "mlxcel-server"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert find_binary(None) == str(exe)
    assert server_command(str(exe)) == [str(exe)]
    assert server_command("/x/mlxcel") == ["/x/mlxcel", "serve"]


def test_openai_client_without_openai(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
    llm = mlxcel.LLM(base_url="http://127.0.0.1:9")
    with pytest.raises(mlxcel.MlxcelError, match="openai"):
        llm.openai_client()
    llm.close()


def test_openai_client_arguments(monkeypatch):
    fake = types.ModuleType("openai")
    fake.OpenAI = lambda **kw: ("sync", kw)
    fake.AsyncOpenAI = lambda **kw: ("async", kw)
    monkeypatch.setitem(sys.modules, "openai", fake)
    kind, kw = mlxcel.LLM(base_url="http://127.0.0.1:9/v1", api_key="k").openai_client(max_retries=0)
    assert kind == "sync" and kw == {"base_url": "http://127.0.0.1:9/v1", "api_key": "k", "max_retries": 0}
    kind, kw = mlxcel.AsyncLLM(base_url="/tmp/x.sock").openai_client()
    assert kind == "async" and kw["base_url"] == "http://localhost/v1" and "http_client" in kw
