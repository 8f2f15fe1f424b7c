"""AsyncLLM against the real server: managed and connect modes, concurrency, streaming, errors."""

from __future__ import annotations

import asyncio
import gc
import os
import signal

import pytest
from conftest import process_gone

import mlxcel
from mlxcel._server import free_port

GREEDY = {"temperature": 0, "max_tokens": 64, "chat_template_kwargs": {"enable_thinking": False}}


@pytest.mark.asyncio
async def test_async_managed_lifecycle(binary, model_dir):
    llm = mlxcel.AsyncLLM(model_dir, binary=binary)
    assert llm.pid is None and llm.model is None  # nothing starts in the constructor
    async with llm:
        pid = llm.pid
        assert pid and llm.model and await llm.health()
        assert (await llm.chat("What is 12 + 30?", **GREEDY)).text == "42"
    assert process_gone(pid)
    with pytest.raises(mlxcel.MlxcelError, match="closed"):
        await llm.models()


@pytest.mark.asyncio
async def test_async_lazy_start_and_gc(binary, model_dir):
    llm = mlxcel.AsyncLLM(model_dir, binary=binary)
    assert (await llm.generate("Counting from 97: 97, 98,", temperature=0, max_tokens=4)).text  # starts it
    pid = llm.pid
    assert pid and not process_gone(pid)
    await llm._client.aclose()
    del llm

    gc.collect()
    assert process_gone(pid, 15.0)


@pytest.mark.asyncio
async def test_async_connect_mode(llm):
    async with mlxcel.AsyncLLM(base_url=llm.base_url) as client:
        assert not client.managed and client.model is None
        ids = await client.tokenize("What is 12 + 30?")
        assert await client.detokenize(ids) == "What is 12 + 30?"
        assert [m["id"] for m in await client.models()] == [llm.model]
        out = await client.chat("What is 12 + 30?", **GREEDY)
        assert out.text == "42" and out.finish_reason == "stop" and client.model == llm.model
        pieces = [p async for p in client.chat_stream("What is 12 + 30?", **GREEDY)]
        assert "".join(pieces) == "42"
        raw = [c async for c in client.stream("Counting from 97: 97, 98,", raw=True, temperature=0, max_tokens=4)]
        assert raw[-1]["choices"][0]["finish_reason"] == "length"
        text = "".join([p async for p in client.stream("Counting from 97: 97, 98,", temperature=0, max_tokens=4)])
        assert text == (await client.generate("Counting from 97: 97, 98,", temperature=0, max_tokens=4)).text


@pytest.mark.asyncio
async def test_async_concurrent_requests(llm):
    questions = [("What is 12 + 30?", "42"), ("What is 667 + 911?", "1578"),
                 ("Where is the capital of Romania?", "Bucharest"), ("What is 12 + 30?", "42")]
    async with mlxcel.AsyncLLM(base_url=llm.base_url) as client:
        outs = await asyncio.gather(*(client.chat(q, **GREEDY) for q, _ in questions))
        assert [o.text for o in outs] == [a for _, a in questions]

        async def collect(q):
            return "".join([p async for p in client.chat_stream(q, **GREEDY)])

        streamed = await asyncio.gather(*(collect(q) for q, _ in questions))
        assert streamed == [a for _, a in questions]


@pytest.mark.asyncio
async def test_async_errors(llm):
    async with mlxcel.AsyncLLM(base_url=llm.base_url) as client:
        with pytest.raises(mlxcel.MlxcelServerError) as ei:
            await client.chat("hi", max_tokens=0)
        assert ei.value.status == 400
        with pytest.raises(mlxcel.MlxcelServerError):
            [p async for p in client.chat_stream("hi", max_tokens=0)]
        with pytest.raises(mlxcel.MlxcelTimeoutError):
            await client.generate("The", max_tokens=300, temperature=3.0, seed=1, timeout=0.05)
    bad = mlxcel.AsyncLLM(base_url=f"http://127.0.0.1:{free_port('127.0.0.1')}")
    with pytest.raises(mlxcel.MlxcelConnectionError):
        await bad.chat("hi")
    await bad.aclose()


@pytest.mark.asyncio
async def test_async_startup_failure(binary, tmp_path):
    llm = mlxcel.AsyncLLM(str(tmp_path / "missing-model"), binary=binary)
    with pytest.raises(mlxcel.MlxcelStartupError) as ei:
        async with llm:
            pass
    assert "missing-model" in ei.value.log


@pytest.mark.asyncio
async def test_async_server_killed_mid_stream(binary, model_dir):
    async with mlxcel.AsyncLLM(model_dir, binary=binary) as llm:
        pid = llm.pid
        n = 0
        with pytest.raises(mlxcel.MlxcelConnectionError):
            async for _ in llm.stream("The", max_tokens=2000, temperature=3.0, seed=1):
                n += 1
                if n == 1:
                    os.kill(pid, signal.SIGKILL)
        assert n < 2000
    assert process_gone(pid)
