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

Beside the OpenAI API it answers in the shapes of TGI's native `/generate[_stream]`,
Triton's `/v2/models/{m}/generate[_stream]`, vLLM's `/v1/rerank` and `/score`, and
Anthropic's `/v1/messages/count_tokens`; these log the trace id of the request's
`traceparent` as their id when it has one (TGI, Triton and count_tokens answer with none). `HEAD /health`, `DELETE /v1/cache` (204) and
`GET /v1/models/{m}` with `If-None-Match` (304) answer without a body; `/v1/realtime`
upgrades to a WebSocket (101) and echoes one message.

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
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse

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


def trace_id(request, fallback):
    """The trace id of the request's `traceparent`: the log's key for shapes without an id."""
    parts = request.headers.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else fallback


# ---- TGI's native API: /generate, /generate_stream (TGI 3 framing: `data:` without a space)


def tgi_parts(body):
    params = body.get("parameters") or {}
    n = max(0, int(params.get("max_new_tokens") or 16))
    prompt_tokens = count_words(body.get("inputs", ""))
    return params, n, prompt_tokens


def tgi_details(params, n, prompt_tokens):
    d = {"finish_reason": "length", "generated_tokens": n, "seed": None}
    if params.get("decoder_input_details"):
        d["prefill"] = [{"id": i, "text": "w", "logprob": None} for i in range(prompt_tokens)]
    return d


@app.post("/generate")
async def tgi_generate(request: Request):
    body = await request.json()
    params, n, prompt_tokens = tgi_parts(body)
    text = "".join([t async for _, t in generate(n)])
    key = trace_id(request, uuid.uuid4().hex)
    log_request({"id": key, "endpoint": "tgi_generate", "stream": False, "include_usage": True,
                 "prompt_tokens": prompt_tokens, "completion_tokens": n})
    out = {"generated_text": text}
    if params.get("details"):
        out["details"] = tgi_details(params, n, prompt_tokens)
        out["details"]["tokens"] = []
    return JSONResponse(out, headers={"x-prompt-tokens": str(prompt_tokens), "x-generated-tokens": str(n)})


@app.post("/generate_stream")
async def tgi_generate_stream(request: Request):
    body = await request.json()
    params, n, prompt_tokens = tgi_parts(body)
    key = trace_id(request, uuid.uuid4().hex)

    async def events():
        text = ""
        async for i, t in generate(n):
            text += t
            last = i == n - 1
            ev = {"index": i + 1, "token": {"id": i, "text": t, "logprob": -0.5, "special": False},
                  "generated_text": text if last else None,
                  "details": tgi_details(params, n, prompt_tokens) if last else None}
            yield f"data:{dumps(ev)}\n\n"
        log_request({"id": key, "endpoint": "tgi_generate", "stream": True, "include_usage": True,
                     "prompt_tokens": prompt_tokens, "completion_tokens": n})

    return StreamingResponse(events(), media_type="text/event-stream")


# ---- Triton's generate extension (TensorRT-LLM backend fields)


def triton_parts(body):
    params = body.get("parameters") or {}
    n = body.get("max_tokens", params.get("max_tokens", 16))
    counts = bool(body.get("return_num_input_tokens") or params.get("return_num_input_tokens"))
    return max(0, int(n)), count_words(body.get("text_input", "")), counts


@app.post("/v2/models/{model}/generate")
async def triton_generate(model: str, request: Request):
    body = await request.json()
    n, prompt_tokens, counts = triton_parts(body)
    text = "".join([t async for _, t in generate(n)])
    key = trace_id(request, uuid.uuid4().hex)
    log_request({"id": key, "endpoint": "triton_generate", "stream": False, "include_usage": counts,
                 "prompt_tokens": prompt_tokens, "completion_tokens": n})
    out = {"model_name": model, "model_version": "1", "sequence_end": False, "sequence_id": 0,
           "sequence_start": False, "text_output": text}
    if counts:
        out.update(num_input_tokens=prompt_tokens, num_output_tokens=n)
    return JSONResponse(out)


@app.post("/v2/models/{model}/generate_stream")
async def triton_generate_stream(model: str, request: Request):
    body = await request.json()
    n, prompt_tokens, counts = triton_parts(body)
    key = trace_id(request, uuid.uuid4().hex)

    async def events():
        async for i, t in generate(n):
            ev = {"model_name": model, "model_version": "1", "text_output": t}
            if counts:
                ev.update(num_input_tokens=prompt_tokens, num_output_tokens=i + 1)
            yield f"data: {dumps(ev)}\n\n"
        log_request({"id": key, "endpoint": "triton_generate", "stream": True, "include_usage": counts,
                     "prompt_tokens": prompt_tokens, "completion_tokens": n})

    return StreamingResponse(events(), media_type="text/event-stream")


# ---- Rerank and score (vLLM's shapes), Anthropic's count_tokens


def texts_of(v):
    if isinstance(v, list):
        return [d.get("text", "") if isinstance(d, dict) else d for d in v]
    return [v] if isinstance(v, str) else []


@app.post("/v1/rerank")
@app.post("/rerank")
async def rerank(request: Request):
    body = await request.json()
    docs = texts_of(body.get("documents", []))
    tokens = count_words(body.get("query", "")) + sum(count_words(d) for d in docs)
    rid = f"rerank-{uuid.uuid4().hex}"
    log_request({"id": trace_id(request, rid), "endpoint": "rerank", "stream": False, "include_usage": True,
                 "prompt_tokens": tokens, "completion_tokens": 0})
    return JSONResponse({
        "id": rid, "model": body.get("model") or MODEL, "usage": {"total_tokens": tokens},
        "results": [{"index": i, "document": {"text": d}, "relevance_score": 1.0 / (i + 1)}
                    for i, d in enumerate(docs)],
    })


@app.post("/score")
@app.post("/v1/score")
async def score(request: Request):
    body = await request.json()
    left, right = texts_of(body.get("text_1", "")), texts_of(body.get("text_2", ""))
    tokens = sum(count_words(t) for t in left + right)
    rid = f"score-{uuid.uuid4().hex}"
    log_request({"id": trace_id(request, rid), "endpoint": "score", "stream": False, "include_usage": True,
                 "prompt_tokens": tokens, "completion_tokens": 0})
    return JSONResponse({
        "id": rid, "object": "list", "created": int(time.time()), "model": body.get("model") or MODEL,
        "data": [{"index": i, "object": "score", "score": 0.5} for i in range(len(right))],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    })


@app.post("/v1/messages/count_tokens")
async def count_tokens(request: Request):
    body = await request.json()
    tokens = chat_prompt_tokens(body.get("messages", []))
    log_request({"id": trace_id(request, uuid.uuid4().hex), "endpoint": "count_tokens", "stream": False,
                 "include_usage": True, "prompt_tokens": tokens, "completion_tokens": 0})
    return JSONResponse({"input_tokens": tokens})


# ---- Bodiless responses: HEAD, 204, 304


@app.head("/health")
async def health_head():
    return Response(status_code=200, headers={"content-length": "2", "content-type": "application/json"})


@app.delete("/v1/cache")
async def clear_cache():
    return Response(status_code=204)


@app.get("/v1/models/{model}")
async def model_info(model: str, request: Request):
    etag = '"strike-models-1"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"etag": etag})
    return JSONResponse({"id": model, "object": "model", "owned_by": "strike"}, headers={"etag": etag})


# ---- A WebSocket (the Realtime API's transport): `101 Switching Protocols`, then frames


@app.websocket("/v1/realtime")
async def realtime(ws: WebSocket):
    await ws.accept()
    message = await ws.receive_text()
    await ws.send_text(dumps({"type": "echo", "text": message}))
    await ws.close()


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
