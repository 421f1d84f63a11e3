#!/usr/bin/env python3
"""The load of the GPU proof: waits for `strike run` to be ready, then in phases:

1. `lead_idle`: nothing in flight;
2. `sequential`: one request of each kind (chat/completions × stream/JSON), max_tokens 16;
3. `pairs`: a long (128 tokens) and a short (16) chat stream started together, `--pairs` times;
4. `burst`: 8 concurrent requests of mixed kinds and lengths;
5. `idle`: nothing in flight for `--idle-s`, with Strike's `/v1/status` read at both ends;
6. `tail`: two more requests, then `tail_idle`.

Writes `client.jsonl` (one line per request: what was asked, what came back, CLOCK_MONOTONIC
ns at start and end) and `phases.json` (each phase's start and end, Strike's ready time).
"""

import argparse
import asyncio
import json
import os
import sys
import time

import aiohttp

PROMPT_WORDS = "the quick brown fox jumps over a lazy dog while GPUs hum in the rack".split()


def now_ns():
    return time.monotonic_ns()


async def one(session, base, tag, api, stream, max_tokens, words, pair=None, role=None):
    prompt = " ".join(PROMPT_WORDS[i % len(PROMPT_WORDS)] for i in range(words))
    if api == "chat":
        url = f"{base}/v1/chat/completions"
        body = {"model": "proof", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    else:
        url = f"{base}/v1/completions"
        body = {"model": "proof", "prompt": prompt, "max_tokens": max_tokens}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    rec = {"tag": tag, "api": api, "stream": stream, "max_tokens": max_tokens, "prompt_words": words, "pair": pair, "role": role}
    rec["t0_ns"] = now_ns()
    async with session.post(url, json=body) as resp:
        rec["status"] = resp.status
        if stream:
            events, content, usage, rid, finish, done = 0, 0, None, None, None, False
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    data = event.decode()[len("data: "):]
                    events += 1
                    if data == "[DONE]":
                        done = True
                        continue
                    j = json.loads(data)
                    rid = rid or j.get("id")
                    if j.get("usage"):
                        usage = j["usage"]
                    for c in j.get("choices", []):
                        piece = c.get("delta", {}).get("content") if api == "chat" else c.get("text")
                        if piece:
                            content += 1
                        finish = c.get("finish_reason") or finish
            rec.update(response_id=rid, usage=usage, content_events=content, events=events, finish_reason=finish, done=done)
        else:
            j = await resp.json()
            rec.update(response_id=j.get("id"), usage=j.get("usage"), finish_reason=j["choices"][0].get("finish_reason"))
    rec["t1_ns"] = now_ns()
    return rec


async def status(session, url):
    if not url:
        return None
    try:
        async with session.get(f"{url}/v1/status") as r:
            return await r.json()
    except (aiohttp.ClientError, ValueError) as e:
        return {"error": repr(e)}


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def wait_ready(log, timeout_s, pid=None):
    """CLOCK_MONOTONIC ns when `strike: running` appeared in `log` (polled every 2 ms);
    None when it did not in time, or strike exited."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and (pid is None or alive(pid)):
        try:
            with open(log, errors="replace") as f:
                if "strike: running" in f.read():
                    return now_ns()
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    return None


async def run(a):
    phases = {}
    if a.strike_log:
        phases["strike_ready_ns"] = wait_ready(a.strike_log, a.ready_timeout_s, a.strike_pid)
        if phases["strike_ready_ns"] is None:
            # The load still runs: the server's GPU work and the reader's energy are shown.
            phases["error"] = f"strike not ready (exited, or not within {a.ready_timeout_s} s)"
    records = []
    base = a.server
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as s:

        async def phase(name, coro):
            t0 = now_ns()
            got = await coro
            phases[name] = {"t0_ns": t0, "t1_ns": now_ns()}
            return got

        async def sleep(s_):
            await asyncio.sleep(s_)
            return []

        await phase("lead_idle", sleep(a.lead_idle_s))

        async def sequential():
            out = []
            for api in ("chat", "completions"):
                for stream in (True, False):
                    out.append(await one(s, base, "sequential", api, stream, 16, 12))
            return out

        records += await phase("sequential", sequential())

        async def pairs():
            out = []
            for p in range(a.pairs):
                got = await asyncio.gather(
                    one(s, base, "pair", "chat", True, 128, 24, pair=p, role="long"),
                    one(s, base, "pair", "chat", True, 16, 24, pair=p, role="short"),
                )
                out += got
            return out

        records += await phase("pairs", pairs())

        async def burst():
            kinds = [("chat", True), ("completions", True), ("chat", False), ("completions", False)]
            return list(
                await asyncio.gather(
                    *(one(s, base, "burst", *kinds[i % 4], 16 + 8 * i, 8 + 4 * i) for i in range(8))
                )
            )

        records += await phase("burst", burst())
        await asyncio.sleep(0.3)
        phases["idle_status_before"] = await status(s, a.strike_url)
        await phase("idle", sleep(a.idle_s))
        phases["idle_status_after"] = await status(s, a.strike_url)

        async def tail():
            return [
                await one(s, base, "tail", "chat", True, 32, 16),
                await one(s, base, "tail", "completions", False, 32, 16),
            ]

        records += await phase("tail", tail())
        await phase("tail_idle", sleep(a.tail_idle_s))
    return phases, records


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="http://127.0.0.1:PORT")
    p.add_argument("--strike-url", help="Strike's endpoint, http://127.0.0.1:PORT")
    p.add_argument("--strike-log", help="strike's stderr, to wait for its ready line")
    p.add_argument("--strike-pid", type=int, help="stop waiting for the ready line when it exits")
    p.add_argument("--ready-timeout-s", type=float, default=90)
    p.add_argument("--out", required=True)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--lead-idle-s", type=float, default=2.0)
    p.add_argument("--idle-s", type=float, default=4.0)
    p.add_argument("--tail-idle-s", type=float, default=1.5)
    a = p.parse_args()
    phases, records = asyncio.run(run(a))
    with open(f"{a.out}/phases.json", "w") as f:
        json.dump(phases, f, indent=2)
    with open(f"{a.out}/client.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    print(f"load: {len(records)} requests" + (f"; {phases['error']}" if "error" in phases else ""))
    return 1 if "error" in phases else 0


if __name__ == "__main__":
    sys.exit(main())
