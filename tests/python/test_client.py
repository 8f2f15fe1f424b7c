"""LLM against the real server on the demo model: managed and connect modes, answers,
streaming, tokenize, structured output, server errors."""

from __future__ import annotations

import json
import os

import pytest
from conftest import DEMO_MODEL

import mlxcel

GREEDY = {"temperature": 0, "max_tokens": 64}
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}


def eval_rows(task: str, n: int):
    rows = [json.loads(line) for line in open(DEMO_MODEL / "eval.jsonl")]
    return [r for r in rows if r["task"] == task and r.get("hf_correct")][:n]


def test_managed_server_is_up(llm):
    assert llm.managed and llm.pid and llm.health()
    assert llm.base_url.startswith("http://127.0.0.1:")
    models = llm.models()  # the model id was discovered from this list
    assert [m["id"] for m in models] == [llm.model] and models[0]["object"] == "model"
    assert "listening on" in llm.server_log()


@pytest.mark.parametrize("row", eval_rows("add", 2) + eval_rows("capital", 1) + eval_rows("json", 1),
                         ids=lambda r: r["messages"][-1]["content"])
def test_chat_answers(llm, row):
    out = llm.chat(row["messages"], **GREEDY, **NO_THINK)
    assert out.text == row["expected"]
    assert out.finish_reason == "stop"
    assert out.usage["completion_tokens"] > 0 and out.raw["object"] == "chat.completion"


def test_chat_string_is_a_user_message(llm):
    assert llm.chat("What is 12 + 30?", **GREEDY, **NO_THINK).text == "42"


def test_chat_reasoning_is_split(llm):
    row = eval_rows("think", 1)[0]
    out = llm.chat(row["messages"], **GREEDY)
    assert out.text == row["expected"] and out.reasoning


def test_chat_tool_call(llm):
    row = eval_rows("tool_call", 1)[0]
    out = llm.chat(row["messages"], tools=row["tools"], **GREEDY, **NO_THINK)
    expected = json.loads(row["expected"].split("<tool_call>")[1].split("</tool_call>")[0])
    assert out.finish_reason == "tool_calls" and len(out.tool_calls) == 1
    call = out.tool_calls[0]["function"]
    assert call["name"] == expected["name"] and json.loads(call["arguments"]) == expected["arguments"]


def test_generate_raw_prompt(llm):
    row = eval_rows("plain", 1)[0]
    out = llm.generate(row["prompt"], temperature=0, max_tokens=len(llm.tokenize(row["expected"])))
    assert out.text == row["expected"] and out.finish_reason == "length"
    from_ids = llm.generate(llm.tokenize(row["prompt"]), temperature=0, max_tokens=3).text
    assert from_ids and out.text.startswith(from_ids)  # a prompt of token ids


def test_stream_matches_non_stream(llm):
    row = eval_rows("repeat", 1)[0]
    full = llm.chat(row["messages"], **GREEDY, **NO_THINK).text
    pieces = list(llm.chat_stream(row["messages"], **GREEDY, **NO_THINK))
    assert len(pieces) > 1 and "".join(pieces) == full == row["expected"]
    prompt = eval_rows("plain", 1)[0]["prompt"]
    streamed = "".join(llm.stream(prompt, temperature=0, max_tokens=8))
    assert streamed == llm.generate(prompt, temperature=0, max_tokens=8).text


def test_stream_raw_chunks(llm):
    chunks = list(llm.chat_stream("What is 12 + 30?", raw=True, stream_options={"include_usage": True},
                                  **GREEDY, **NO_THINK))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len({c["id"] for c in chunks}) == 1
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_stream_early_exit_then_more_requests(llm):
    it = llm.stream("Once upon a time", max_tokens=200, temperature=1.0, seed=3)
    first = next(it)
    assert isinstance(first, str)
    it.close()  # leaves the loop: the request is cancelled, the client keeps working
    assert llm.chat("What is 12 + 30?", **GREEDY, **NO_THINK).text == "42"


def test_tokenize_roundtrip(llm):
    ids = llm.tokenize("What is 12 + 30?")
    assert ids and all(isinstance(i, int) for i in ids)
    assert llm.detokenize(ids) == "What is 12 + 30?"
    pieces = llm.tokenize("hello world", with_pieces=True)
    assert "".join(p["piece"] for p in pieces) == "hello world"
    assert llm.detokenize(pieces) == "hello world"  # {"id", "piece"} dicts are accepted too


def test_structured_output_is_passed_through(llm):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    try:
        out = llm.chat("Format as JSON: name=Frank age=96", response_format=fmt, **GREEDY, **NO_THINK)
    except mlxcel.MlxcelServerError as e:  # a server without structured output says so
        assert e.status == 400 and "response_format" in (e.message + str(e.param))
        assert e.body["error"]["message"] == e.message
        return
    assert out.json()["name"] == "Frank"


def test_server_errors(llm):
    with pytest.raises(mlxcel.MlxcelServerError) as ei:
        llm.chat("hi", max_tokens=0)
    assert ei.value.status == 400 and ei.value.type == "invalid_request_error" and ei.value.param
    with pytest.raises(mlxcel.MlxcelServerError) as ei:  # a stream's error status surfaces on iteration
        list(llm.chat_stream("hi", max_tokens=0))
    assert ei.value.status == 400
    with pytest.raises(mlxcel.MlxcelServerError) as ei:
        llm.detokenize([10**9])
    assert ei.value.status == 400 and "vocabulary" in ei.value.message
    with pytest.raises(mlxcel.MlxcelServerError) as ei:
        llm.generate("x" * 40000, max_tokens=1)  # longer than the 2048-token context
    assert ei.value.status == 400


def test_connect_mode_tcp(llm):
    for url in (llm.base_url, llm.base_url + "/v1/", llm.base_url.replace("http://", "")):
        with mlxcel.LLM(base_url=url, timeout=30) as client:
            assert not client.managed and client.pid is None
            assert client.model == llm.model
            assert client.chat("What is 12 + 30?", **GREEDY, **NO_THINK).text == "42"
    assert llm.health()  # closing a connected client leaves the server running


def test_connect_mode_explicit_model_id(llm):
    with mlxcel.LLM(base_url=llm.base_url, model="anything") as client:
        assert client.model == "anything"  # sent as given; this server serves one model anyway
        assert client.generate("Counting from 97: 97, 98,", temperature=0, max_tokens=2).text


def test_managed_unix_socket_and_connect(binary, model_dir, tmp_path):
    sock = str(tmp_path / "mlxcel.sock")
    with mlxcel.LLM(model_dir, binary=binary, host=sock, startup_timeout=60) as managed:
        assert managed.socket_path == sock and os.path.exists(sock)
        assert managed.chat("What is 12 + 30?", **GREEDY, **NO_THINK).text == "42"
        for url in (sock, "unix:" + sock):
            with mlxcel.LLM(base_url=url) as client:
                assert client.model == managed.model
                assert "".join(client.chat_stream("What is 12 + 30?", **GREEDY, **NO_THINK)) == "42"
                assert client.detokenize(client.tokenize("abc")) == "abc"


def test_api_key(binary, model_dir):
    with mlxcel.LLM(model_dir, binary=binary, api_key="sesame", startup_timeout=60) as managed:
        assert managed.chat("What is 12 + 30?", **GREEDY, **NO_THINK).text == "42"
        with mlxcel.LLM(base_url=managed.base_url, model=managed.model) as anon:
            assert anon.health()  # /health is open
            with pytest.raises(mlxcel.MlxcelServerError) as ei:
                anon.chat("hi")
            assert ei.value.status == 401 and ei.value.code == "invalid_api_key"
        with mlxcel.LLM(base_url=managed.base_url, api_key="sesame") as keyed:
            assert keyed.models()


def test_extra_server_args(binary, model_dir):
    with mlxcel.LLM(model_dir, binary=binary, server_args=["--alias", "demo", "-c", "512"]) as managed:
        assert managed.model == "demo"
        with pytest.raises(mlxcel.MlxcelServerError) as ei:
            managed.generate("x" * 4000, max_tokens=1)
        assert "512" in ei.value.message
