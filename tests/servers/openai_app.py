#!/usr/bin/env python3
"""A deterministic OpenAI-compatible inference server on vLLM's HTTP stack.

FastAPI + uvicorn with uvloop and httptools: the stack that vLLM, SGLang and
TensorRT-LLM's OpenAI servers run on, with vLLM's response framing:

  * streams are `text/event-stream`, chunked, one `data: {json}\\n\\n` event per
    token; a chat stream starts with a role-only chunk whose content is "";
    the chunk with the last token carries `finish_reason`; a usage-only chunk
    (`choices: []`) follows only when `stream_options.include_usage` is true;
    every stream ends with `data: [DONE]\\n\\n`;
  * non-streaming responses are one JSON object with `usage`.

There is no model: every request generates exactly `max_tokens` tokens
(default 16), token i of a response is the text `tok{i} `, and the prompt's
token count is the number of whitespace-separated words in the prompt (for
chat: in every message's content, plus 3 per message for the template).
`--token-delay-ms` sleeps that long before each generated token.

With `--log FILE` (or STRIKE_APP_LOG), the server appends one JSON line per
finished request with what it counted itself: id, endpoint, stream,
include_usage, prompt_tokens, completion_tokens.  Tests compare streams that
carry no usage against this log.

With `--gzip`, responses are gzip-compressed for clients that send
`Accept-Encoding: gzip` (JSON bodies; Starlette does not compress event streams).

Run: python openai_app.py --host 127.0.0.1 --port 8000 [--log requests.jsonl] [--gzip]
Needs: pip install fastapi uvicorn uvloop httptools
"""

import argparse
import asyncio
import json
import os
import time
import uuid

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

MODEL = os.environ.get("STRIKE_APP_MODEL", "strike-test-model")


class Config:
    token_delay_s = 0.0
    log_file = None


def dumps(obj):
    # vLLM serialises with pydantic's model_dump_json: compact separators.
    return json.dumps(obj, separators=(",", ":"))


def log_request(entry):
    if Config.log_file is not None:
        Config.log_file.write(dumps(entry) + "\n")
        Config.log_file.flush()


def count_words(text):
    if isinstance(text, list):
        # content parts: [{"type": "text", "text": ...}] or a list of prompts
        return sum(count_words(p.get("text", "") if isinstance(p, dict) else p) for p in text)
    if not isinstance(text, str):
        return 0
    return len(text.split())


def chat_prompt_tokens(messages):
    return sum(3 + count_words(m.get("content", "")) for m in messages)


def token_text(i):
    return f"tok{i} "


def max_tokens_of(body):
    n = body.get("max_tokens")
    if n is None:
        n = body.get("max_completion_tokens")
    if n is None:
        n = 16
    return max(0, int(n))


def include_usage_of(body):
    opts = body.get("stream_options") or {}
    return bool(opts.get("include_usage"))


def usage(prompt_tokens, completion_tokens):
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }


async def generate(n):
    for i in range(n):
        if Config.token_delay_s > 0:
            await asyncio.sleep(Config.token_delay_s)
        yield i, token_text(i)


app = FastAPI()


@app.get("/health")
async def health():
    return JSONResponse({})


@app.get("/v1/models")
async def models():
    return {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "created": int(time.time()), "owned_by": "strike"}],
    }


@app.post("/v1/chat/completions")
async def chat_completions(request: Request):
    body = await request.json()
    prompt_tokens = chat_prompt_tokens(body.get("messages", []))
    n = max_tokens_of(body)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = body.get("model") or MODEL
    if not body.get("stream"):
        text = "".join([t async for _, t in generate(n)])
        log_request({"id": rid, "endpoint": "chat_completions", "stream": False, "include_usage": True,
                     "prompt_tokens": prompt_tokens, "completion_tokens": n})
        return JSONResponse({
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": None, "finish_reason": "length", "stop_reason": None,
            }],
            "usage": usage(prompt_tokens, n),
            "prompt_logprobs": None,
        })

    include_usage = include_usage_of(body)

    def chunk(delta, finish_reason):
        c = {
            "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            c["usage"] = None
        return f"data: {dumps(c)}\n\n"

    async def events():
        yield chunk({"role": "assistant", "content": ""}, None)
        async for i, text in generate(n):
            yield chunk({"content": text}, "length" if i == n - 1 else None)
        if n == 0:
            yield chunk({"content": ""}, "length")
        if include_usage:
            final = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [], "usage": usage(prompt_tokens, n)}
            yield f"data: {dumps(final)}\n\n"
        log_request({"id": rid, "endpoint": "chat_completions", "stream": True, "include_usage": include_usage,
                     "prompt_tokens": prompt_tokens, "completion_tokens": n})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.post("/v1/completions")
async def completions(request: Request):
    body = await request.json()
    prompt_tokens = count_words(body.get("prompt", ""))
    n = max_tokens_of(body)
    rid = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    model = body.get("model") or MODEL
    if not body.get("stream"):
        text = "".join([t async for _, t in generate(n)])
        log_request({"id": rid, "endpoint": "completions", "stream": False, "include_usage": True,
                     "prompt_tokens": prompt_tokens, "completion_tokens": n})
        return JSONResponse({
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "length",
                         "stop_reason": None, "prompt_logprobs": None}],
            "usage": usage(prompt_tokens, n),
        })

    include_usage = include_usage_of(body)

    def chunk(text, finish_reason):
        c = {
            "id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
                         "stop_reason": None}],
        }
        if include_usage:
            c["usage"] = None
        return f"data: {dumps(c)}\n\n"

    async def events():
        async for i, text in generate(n):
            yield chunk(text, "length" if i == n - 1 else None)
        if n == 0:
            yield chunk("", "length")
        if include_usage:
            final = {"id": rid, "object": "text_completion", "created": created, "model": model,
                     "choices": [], "usage": usage(prompt_tokens, n)}
            yield f"data: {dumps(final)}\n\n"
        log_request({"id": rid, "endpoint": "completions", "stream": True, "include_usage": include_usage,
                     "prompt_tokens": prompt_tokens, "completion_tokens": n})
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.post("/v1/embeddings")
async def embeddings(request: Request):
    body = await request.json()
    inputs = body.get("input", "")
    if isinstance(inputs, str):
        inputs = [inputs]
    prompt_tokens = sum(count_words(i) for i in inputs)
    rid = f"embd-{uuid.uuid4().hex}"
    log_request({"id": rid, "endpoint": "embeddings", "stream": False, "include_usage": True,
                 "prompt_tokens": prompt_tokens, "completion_tokens": 0})
    return JSONResponse({
        "id": rid, "object": "list", "created": int(time.time()), "model": body.get("model") or MODEL,
        "data": [{"index": i, "object": "embedding", "embedding": [0.25, -0.5, 0.125, 1.0]}
                 for i in range(len(inputs))],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens,
                  "completion_tokens": 0, "prompt_tokens_details": None},
    })


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--log", default=os.environ.get("STRIKE_APP_LOG"),
                    help="append one JSON line per finished request (default: $STRIKE_APP_LOG)")
    ap.add_argument("--token-delay-ms", type=float, default=0.0, help="sleep before each generated token")
    ap.add_argument("--gzip", action="store_true",
                    help="gzip responses to clients that accept it (Starlette's GZipMiddleware, "
                         "which leaves event streams alone), at any size")
    args = ap.parse_args()
    if args.gzip:
        from starlette.middleware.gzip import GZipMiddleware
        app.add_middleware(GZipMiddleware, minimum_size=0)
    Config.token_delay_s = args.token_delay_ms / 1000.0
    if args.log:
        Config.log_file = open(args.log, "a", encoding="utf-8")
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
