#!/usr/bin/env python3
"""A small OpenAI-compatible inference server for the GPU proof (`tests/gpu/run.sh`).

- HTTP: aiohttp (uvloop when installed). `POST /v1/chat/completions` and
  `POST /v1/completions`, streamed as vLLM streams them (`data: {json}\\n\\n` chunks, the
  last token's chunk carrying `finish_reason`, a usage chunk with `choices: []` when
  `stream_options.include_usage`, then `data: [DONE]`), or one JSON body with `usage`.
  `GET /health` (200 once the model is warm), `GET /v1/models`.
- Model, pluggable (`--model`):
  - `torch`: a Llama-shaped decoder (RMSNorm, RoPE, SiLU-gated MLP), randomly initialised
    from a seed, no weights downloaded, on CUDA in bf16, with a KV cache of fixed slots;
  - `fake`: deterministic tokens on the CPU after `--fake-step-ms` per step, no torch
    imported: the HTTP and SSE layer and the batching loop, testable without a GPU.
- Batching: one engine thread steps every active sequence together. Each step first
  prefills the newly arrived requests (one forward each, which also yields their first
  token), then decodes one token for all the others in one batched forward.
- Exactness: `max_tokens` is honoured exactly (no end-of-sequence token: `finish_reason`
  is always `length`); prompt tokens are the prompt's whitespace-separated words plus one
  BOS token; every generated token is one short ASCII word, sent as `" " + word`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import sys
import threading
import time
import uuid
import zlib

CONSONANTS = "bcdfghjklmnprstvz"
VOWELS = "aeiou"
SYLLABLES = [c + v for c in CONSONANTS for v in VOWELS]


def word(token_id: int) -> str:
    """The word of a token id: its base-85 digits as syllables (ASCII, never empty)."""
    n = len(SYLLABLES)
    out = SYLLABLES[token_id % n]
    token_id //= n
    while token_id:
        out += SYLLABLES[token_id % n]
        token_id //= n
    return out


class Tokenizer:
    """Words to ids by a stable hash; ids to words by `word`. Id 0 is BOS."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def encode(self, text: str) -> list[int]:
        return [0] + [1 + zlib.crc32(w.encode()) % (self.vocab - 1) for w in text.split()]

    def piece(self, token_id: int) -> str:
        return " " + word(token_id)


class FakeModel:
    """Deterministic next tokens, `step_ms` of sleep per forward; no torch."""

    name = "strike-gpu-proof-fake"

    def __init__(self, vocab: int, step_ms: float):
        self.vocab = vocab
        self.step_s = step_ms / 1000.0
        self.max_len = 1 << 16

    def prefill(self, slot: int, ids: list[int]) -> int:
        time.sleep(self.step_s)
        return (sum(ids) * 31 + len(ids)) % (self.vocab - 1) + 1

    def decode(self, slots: list[int], last: list[int], positions: list[int]) -> list[int]:
        time.sleep(self.step_s)
        return [(t * 31 + p) % (self.vocab - 1) + 1 for t, p in zip(last, positions)]


class TorchModel:
    """A randomly initialised Llama-shaped decoder with a slot KV cache (one slot per
    sequence in flight, `max_batch` slots of `max_len` positions)."""

    name = "strike-gpu-proof-llama"

    def __init__(self, cfg: dict, device: str, max_batch: int):
        import torch  # only here: `--model fake` never imports torch

        self.torch = torch
        torch.manual_seed(int(cfg.get("seed", 0)))
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
            cfg.get("dtype", "bfloat16")
        ]
        self.hidden = h = int(cfg["hidden_size"])
        self.heads = nh = int(cfg["num_attention_heads"])
        self.head_dim = hd = h // nh
        self.layers_n = n_layers = int(cfg["num_hidden_layers"])
        inter = int(cfg["intermediate_size"])
        self.vocab = v = int(cfg["vocab_size"])
        self.max_len = int(cfg.get("max_position_embeddings", 1024))
        self.eps = float(cfg.get("rms_norm_eps", 1e-5))
        std = float(cfg.get("initializer_range", 0.02))

        def param(*shape):
            return (torch.randn(*shape, device=device, dtype=torch.float32) * std).to(dtype)

        self.embed = param(v, h)
        self.layers = [
            {
                "ln1": torch.ones(h, device=device, dtype=dtype),
                "wqkv": param(h, 3 * h),
                "wo": param(h, h),
                "ln2": torch.ones(h, device=device, dtype=dtype),
                "wgu": param(h, 2 * inter),
                "wd": param(inter, h),
            }
            for _ in range(n_layers)
        ]
        self.norm = torch.ones(h, device=device, dtype=dtype)
        self.lm_head = param(h, v)
        self.k = torch.zeros(n_layers, max_batch, nh, self.max_len, hd, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        freqs = torch.outer(torch.arange(self.max_len, device=device, dtype=torch.float32), inv)
        self.cos = freqs.cos().to(dtype)
        self.sin = freqs.sin().to(dtype)
        self.device = device
        self.params = sum(t.numel() for layer in self.layers for t in layer.values()) + (
            self.embed.numel() + self.lm_head.numel()
        )

    def _rms(self, x, w):
        t = self.torch
        return (x.float() * t.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * w

    def _rope(self, x, pos):
        # x: [B, nh, T, hd]; pos: [B, T]
        cos = self.cos[pos].unsqueeze(1)
        sin = self.sin[pos].unsqueeze(1)
        x1, x2 = x[..., : self.head_dim // 2], x[..., self.head_dim // 2 :]
        return self.torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    def _forward(self, ids, pos, slots, prefill: bool):
        """ids, pos: [B, T] (T = 1 when decoding); slots: [B]. Returns next ids [B]."""
        t = self.torch
        f = t.nn.functional
        b, n = ids.shape
        x = self.embed[ids]
        for li, layer in enumerate(self.layers):
            hdn = self._rms(x, layer["ln1"])
            q, k, v = (hdn @ layer["wqkv"]).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k = self._rope(q, pos), self._rope(k, pos)
            if prefill:
                self.k[li, slots[0], :, :n] = k[0]
                self.v[li, slots[0], :, :n] = v[0]
                attn = f.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                p = pos[:, 0]
                self.k[li, slots, :, p] = k[:, :, 0]
                self.v[li, slots, :, p] = v[:, :, 0]
                span = int(p.max()) + 1
                keys = self.k[li, slots, :, :span]
                vals = self.v[li, slots, :, :span]
                mask = (t.arange(span, device=self.device)[None, :] <= p[:, None])[:, None, None, :]
                attn = f.scaled_dot_product_attention(q, keys, vals, attn_mask=mask)
            x = x + attn.transpose(1, 2).reshape(b, n, self.hidden) @ layer["wo"]
            hdn = self._rms(x, layer["ln2"])
            gate, up = (hdn @ layer["wgu"]).chunk(2, dim=-1)
            x = x + (f.silu(gate) * up) @ layer["wd"]
        logits = self._rms(x[:, -1], self.norm) @ self.lm_head
        return logits.argmax(-1)

    def prefill(self, slot: int, ids: list[int]) -> int:
        t = self.torch
        with t.inference_mode():
            ids_t = t.tensor([ids], device=self.device)
            pos = t.arange(len(ids), device=self.device)[None, :]
            out = self._forward(ids_t, pos, t.tensor([slot], device=self.device), prefill=True)
            return int(out[0])

    def decode(self, slots: list[int], last: list[int], positions: list[int]) -> list[int]:
        t = self.torch
        with t.inference_mode():
            ids_t = t.tensor(last, device=self.device)[:, None]
            pos = t.tensor(positions, device=self.device)[:, None]
            out = self._forward(ids_t, pos, t.tensor(slots, device=self.device), prefill=False)
            return out.tolist()


class Sequence:
    """One request in the engine: its prompt ids, tokens to make, and where to send them."""

    def __init__(self, ids, max_tokens, loop, out: asyncio.Queue):
        self.ids = ids
        self.max_tokens = max_tokens
        self.loop = loop
        self.out = out
        self.slot = -1
        self.made = 0
        self.last = 0

    def send(self, item):
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class Engine:
    """The batching loop, on its own thread: model calls block for milliseconds."""

    def __init__(self, model, max_batch: int):
        self.model = model
        self.max_batch = max_batch
        self.inbox: queue.Queue = queue.Queue()
        self.steps = 0
        self.batched_tokens = 0
        self.max_active = 0
        self.failed = None
        threading.Thread(target=self._run, name="engine", daemon=True).start()

    def submit(self, seq: Sequence):
        self.inbox.put(seq)

    def _run(self):
        active: list[Sequence] = []
        waiting: list[Sequence] = []
        free = list(range(self.max_batch))
        while True:
            try:
                block = not active and not waiting
                while True:
                    waiting.append(self.inbox.get(block=block))
                    block = False
            except queue.Empty:
                pass
            try:
                # Admit what fits; prefill yields each one's first token.
                while waiting and free:
                    seq = waiting.pop(0)
                    seq.slot = free.pop()
                    seq.last = self.model.prefill(seq.slot, seq.ids)
                    self._emit(seq, active, free, new=True)
                if active:
                    ready = [s for s in active if s.made < s.max_tokens]
                    nxt = self.model.decode(
                        [s.slot for s in ready],
                        [s.last for s in ready],
                        [len(s.ids) + s.made - 1 for s in ready],
                    )
                    self.steps += 1
                    self.batched_tokens += len(ready)
                    self.max_active = max(self.max_active, len(ready))
                    for s, tok in zip(ready, nxt):
                        s.last = tok
                        self._emit(s, active, free, new=False)
            except Exception as e:  # noqa: BLE001 (reported to every waiting client)
                self.failed = repr(e)
                for s in active + waiting:
                    s.send(("error", repr(e)))
                active.clear()
                waiting.clear()
                free = list(range(self.max_batch))

    def _emit(self, seq: Sequence, active: list, free: list, new: bool):
        seq.made += 1
        done = seq.made >= seq.max_tokens
        seq.send(("token", seq.last, done))
        if done:
            if not new:
                active.remove(seq)
            free.append(seq.slot)
        elif new:
            active.append(seq)


def chat_prompt(body: dict) -> str:
    parts = []
    for m in body.get("messages") or []:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"{m.get('role', 'user')}: {content or ''}")
    return "\n".join(parts)


def build_app(engine: Engine, tok: Tokenizer, model_name: str, ready: dict):
    from aiohttp import web

    async def health(_req):
        if ready.get("ok"):
            return web.json_response({"status": "ok", **ready})
        return web.json_response({"status": "starting"}, status=503)

    async def models(_req):
        return web.json_response(
            {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "strike"}]}
        )

    async def stats(_req):
        return web.json_response(
            {
                "steps": engine.steps,
                "batched_tokens": engine.batched_tokens,
                "max_active": engine.max_active,
                "failed": engine.failed,
                "pid": os.getpid(),
            }
        )

    def error(status, message):
        return web.json_response(
            {"error": {"message": message, "type": "invalid_request_error", "code": status}}, status=status
        )

    async def complete(request, chat: bool):
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return error(400, "the body is not JSON")
        prompt = chat_prompt(body) if chat else str(body.get("prompt", ""))
        ids = tok.encode(prompt)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 16))
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return error(400, "max_tokens must be a positive integer")
        if len(ids) + max_tokens > engine.model.max_len:
            return error(400, f"prompt ({len(ids)}) + max_tokens ({max_tokens}) > {engine.model.max_len}")
        stream = bool(body.get("stream"))
        usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        model = body.get("model") or model_name
        obj = "chat.completion" if chat else "text_completion"
        out: asyncio.Queue = asyncio.Queue()
        engine.submit(Sequence(ids, max_tokens, asyncio.get_running_loop(), out))
        usage = {
            "prompt_tokens": len(ids),
            "completion_tokens": max_tokens,
            "total_tokens": len(ids) + max_tokens,
        }

        def choice(text, finish):
            if chat:
                return {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

        if not stream:
            pieces = []
            while True:
                item = await out.get()
                if item[0] == "error":
                    return error(500, item[1])
                pieces.append(tok.piece(item[1]))
                if item[2]:
                    break
            text = "".join(pieces)
            c = (
                {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "length"}
                if chat
                else {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
            )
            return web.json_response(
                {"id": rid, "object": obj, "created": created, "model": model, "choices": [c], "usage": usage}
            )

        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"

        async def send(payload):
            await resp.write(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")

        if chat:
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            await send({"id": rid, "object": chunk_obj, "created": created, "model": model, "choices": [first]})
        while True:
            item = await out.get()
            if item[0] == "error":
                await send({"error": {"message": item[1], "type": "internal_error", "code": 500}})
                break
            _, token_id, done = item
            await send(
                {
                    "id": rid,
                    "object": chunk_obj,
                    "created": created,
                    "model": model,
                    "choices": [choice(tok.piece(token_id), "length" if done else None)],
                }
            )
            if done:
                if usage_wanted:
                    await send(
                        {"id": rid, "object": chunk_obj, "created": created, "model": model, "choices": [], "usage": usage}
                    )
                break
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def chat_route(request):
        return await complete(request, chat=True)

    async def completions_route(request):
        return await complete(request, chat=False)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    app.router.add_post("/v1/chat/completions", chat_route)
    app.router.add_post("/v1/completions", completions_route)
    return app


def load_model(args):
    """The model `--model` names, and facts about it for the log."""
    if args.model == "fake":
        return FakeModel(vocab=32000, step_ms=args.fake_step_ms), {"model": "fake", "step_ms": args.fake_step_ms}
    with open(args.model_config) as f:
        cfg = json.load(f)
    t = time.monotonic()
    model = TorchModel(cfg, args.device, args.max_batch)
    facts = {"model": "torch", "config": cfg, "params": model.params, "init_s": round(time.monotonic() - t, 3)}
    # Warm up (CUDA context, kernels, allocator) and measure a decode step at two batch sizes.
    torch = model.torch
    for batch in (1, 8):
        slots = list(range(batch))
        for s in slots:
            model.prefill(s, list(range(1, 33)))
        for _ in range(3):
            model.decode(slots, [1] * batch, [32] * batch)
        torch.cuda.synchronize()
        t0 = time.monotonic()
        steps = 20
        for i in range(steps):
            model.decode(slots, [1] * batch, [33 + i] * batch)
        torch.cuda.synchronize()
        facts[f"decode_step_ms_batch{batch}"] = round((time.monotonic() - t0) * 1000 / steps, 3)
    facts["device_name"] = torch.cuda.get_device_name(0)
    facts["torch"] = torch.__version__
    return model, facts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", choices=["torch", "fake"], default="torch")
    p.add_argument("--model-config", default=os.path.join(os.path.dirname(__file__), "model.json"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--fake-step-ms", type=float, default=5.0)
    p.add_argument("--facts", help="write the model's facts (size, warm-up step times) here as JSON")
    args = p.parse_args()

    try:
        import uvloop  # noqa: F401

        uvloop.install()
        loop_kind = "uvloop"
    except ImportError:
        loop_kind = "asyncio"
    model, facts = load_model(args)
    facts.update({"pid": os.getpid(), "loop": loop_kind, "max_batch": args.max_batch})
    if args.facts:
        with open(args.facts, "w") as f:
            json.dump(facts, f, indent=2)
    print(f"server: model ready: {json.dumps(facts)}", flush=True)
    engine = Engine(model, args.max_batch)
    from aiohttp import web

    app = build_app(engine, Tokenizer(32000 if args.model == "fake" else model.vocab), model.name, {"ok": True})
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=lambda *_: None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
