#!/usr/bin/env python3
"""The checks of the GPU proof, over the files `tests/gpu/run.sh` wrote to OUT.

Pure functions of parsed inputs (unit-tested in `test_check.py`); `main` reads OUT, prints
a table and writes `OUT/summary.json`. Exit status 1 when a check failed (skipped checks
do not fail: a GPU check is skipped in `--mode fake`).

Inputs in OUT: `records.jsonl` (`strike run --output json`), `strike_summary.json`
(`--summary-file`), `client.jsonl` and `phases.json` (`load.py`), `server.pid`,
`nvml_samples.jsonl` (`nvml_reader.py --samples`), `strike_check.json` (`strike check
--format json`, when the binary has it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ENERGY_TOLERANCE = 0.02
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def result(name, status, detail, **values):
    return {"name": name, "status": status, "detail": detail, "values": values}


def passed(name, ok, detail, **values):
    return result(name, "pass" if ok else "fail", detail, **values)


# ---- requests ------------------------------------------------------------------------


def records_by_response_id(records):
    return {r.get("response_id"): r for r in records}


def check_records_exact(records, client, server_pid):
    """One record per request the client made, each with the client's numbers exactly."""
    by_id = records_by_response_id(records)
    problems = []
    for c in client:
        r = by_id.get(c.get("response_id"))
        if r is None:
            problems.append(f"{c.get('response_id')}: no record")
            continue
        usage = c.get("usage") or {}
        want = {
            "status": 200,
            "path": PATHS[c["api"]],
            "stream": c["stream"],
            "max_tokens": c["max_tokens"],
            "output_tokens": c["max_tokens"],
            "input_tokens": usage.get("prompt_tokens"),
            "token_source": "usage",
            "partial": False,
            "finish_reason": "length",
            "pid": server_pid,
        }
        if usage.get("completion_tokens") != c["max_tokens"]:
            problems.append(f"{c['response_id']}: the server gave {usage.get('completion_tokens')} tokens for max_tokens {c['max_tokens']}")
        for key, value in want.items():
            if r.get(key) != value:
                problems.append(f"{c['response_id']}: {key} {r.get(key)!r} != {value!r}")
    extra = len(records) - len(client)
    if extra:
        problems.append(f"{len(records)} records for {len(client)} requests")
    return passed(
        "records_exact",
        not problems and bool(client),
        f"{len(client)} requests, {len(records)} records" + (": " + "; ".join(problems[:5]) if problems else ", every field as the client saw it"),
        requests=len(client),
        records=len(records),
        problems=problems,
    )


def check_cost_fields(records):
    """Every record has gpu_seconds, gpu_energy_j and cost_usd > 0."""
    bad = [
        r.get("response_id")
        for r in records
        if not all((r.get(k) or 0) > 0 for k in ("gpu_seconds", "gpu_energy_j", "cost_usd"))
    ]
    return passed(
        "cost_fields_positive",
        not bad and bool(records),
        f"{len(records) - len(bad)} of {len(records)} records with gpu_seconds, gpu_energy_j, cost_usd > 0",
        without=bad,
    )


def check_invariant(cost, records, rel=1e-6):
    """measured = attributed + idle (summary), and the records' sums = attributed."""
    if not cost:
        return result("invariant", "fail", "no cost section in strike's summary")
    lines = []
    ok = True
    for unit, measured, attributed, idle in (
        ("usd", cost["measured_usd"], cost["attributed_usd"], cost["idle_usd"]),
        ("gpu_s", cost["measured_gpu_s"], cost["measured_gpu_s"] - cost["idle_gpu_s"], cost["idle_gpu_s"]),
        ("energy_j", cost["measured_energy_j"], cost["measured_energy_j"] - cost["idle_energy_j"], cost["idle_energy_j"]),
    ):
        field = {"usd": "cost_usd", "gpu_s": "gpu_seconds", "energy_j": "gpu_energy_j"}[unit]
        summed = sum(r.get(field) or 0 for r in records)
        tol = rel * max(abs(measured), 1e-12)
        good = abs(measured - attributed - idle) <= tol and abs(summed - attributed) <= max(tol, 1e-9 * len(records))
        ok &= good
        lines.append(f"{unit}: measured {measured:.9g} = attributed {attributed:.9g} + idle {idle:.9g}; records sum {summed:.9g}")
    return passed("invariant", ok, "; ".join(lines), cost=cost)


def check_long_vs_short(records, client):
    """In every concurrent pair, the long request (8x the output) is charged more."""
    by_id = records_by_response_id(records)
    pairs = {}
    for c in client:
        if c.get("pair") is not None:
            pairs.setdefault(c["pair"], {})[c["role"]] = by_id.get(c.get("response_id"))
    rows, ok = [], bool(pairs)
    for p, roles in sorted(pairs.items()):
        long_, short = roles.get("long"), roles.get("short")
        if not long_ or not short:
            ok = False
            rows.append(f"pair {p}: record missing")
            continue
        lc, sc = long_.get("cost_usd") or 0, short.get("cost_usd") or 0
        ok &= lc > sc > 0
        rows.append(f"pair {p}: long ${lc:.9f} ({long_.get('output_tokens')} tok) vs short ${sc:.9f} ({short.get('output_tokens')} tok) = {lc / sc if sc else float('inf'):.2f}x")
    return passed("long_costs_more", ok, "; ".join(rows) or "no pairs", pairs=rows)


def check_idle(cost, before, after, idle_phase, devices):
    """Idle cost appears: in the summary, and grows while nothing is in flight."""
    if not cost:
        return result("idle_cost", "fail", "no cost section in strike's summary")
    ok = cost.get("idle_usd", 0) > 0 and cost.get("idle_intervals", 0) > 0
    detail = f"summary: idle ${cost.get('idle_usd', 0):.9f}, {cost.get('idle_gpu_s', 0):.3f} GPU-s in {cost.get('idle_intervals', 0)} intervals"
    values = {}
    b = ((before or {}).get("session") or {}).get("cost")
    a = ((after or {}).get("session") or {}).get("cost")
    if b and a and idle_phase:
        window_s = (idle_phase["t1_ns"] - idle_phase["t0_ns"]) / 1e9
        grew_s = a["idle_gpu_s"] - b["idle_gpu_s"]
        # Strike publishes its status once a second: allow 2 s of the window unseen.
        need = max(window_s - 2.0, 0.5) * max(devices, 1)
        ok &= a["idle_usd"] > b["idle_usd"] and grew_s >= need
        detail += f"; during the {window_s:.1f} s idle window idle grew by {grew_s:.3f} GPU-s (need >= {need:.3f}), ${a['idle_usd'] - b['idle_usd']:.9f}"
        values = {"window_s": window_s, "idle_gpu_s_grew": grew_s}
    else:
        ok = False
        detail += "; no /v1/status cost around the idle window"
    return passed("idle_cost", ok, detail, **values)


# ---- energy against the independent reader ---------------------------------------------


def counter_series(samples):
    """Per device: sorted [(t_ns, energy_mj)] of the readings that have a counter."""
    out = {}
    for s in samples:
        if s.get("energy_mj") is not None:
            out.setdefault(s["index"], []).append((s["t_ns"], s["energy_mj"]))
    for v in out.values():
        v.sort()
    return out


def interpolate(series, t):
    """The counter at `t`, linear between the readings around it (clamped at the ends)."""
    if t <= series[0][0]:
        return series[0][1]
    if t >= series[-1][0]:
        return series[-1][1]
    lo, hi = 0, len(series) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if series[mid][0] <= t:
            lo = mid
        else:
            hi = mid
    (t0, e0), (t1, e1) = series[lo], series[hi]
    return e0 + (e1 - e0) * (t - t0) / (t1 - t0)


def reader_energy_j(samples, t0_ns, t1_ns):
    """Joules of every device between t0 and t1, from the energy counter."""
    return sum((interpolate(s, t1_ns) - interpolate(s, t0_ns)) / 1000.0 for s in counter_series(samples).values())


def reader_power_energy_j(samples, t0_ns, t1_ns):
    """The same from the power readings (trapezoids), for comparison."""
    total = 0.0
    per = {}
    for s in samples:
        if s.get("power_mw") is not None and t0_ns <= s["t_ns"] <= t1_ns:
            per.setdefault(s["index"], []).append((s["t_ns"], s["power_mw"]))
    for v in per.values():
        v.sort()
        total += sum((b[0] - a[0]) / 1e9 * (a[1] + b[1]) / 2000.0 for a, b in zip(v, v[1:]))
    return total


def check_energy(cost, samples, ready_ns, tolerance=ENERGY_TOLERANCE):
    """Strike's measured energy within `tolerance` of the reader's counter over Strike's
    sampled window: it opens at Strike's ready line (its sampler starts right after) and
    lasts measured_gpu_s / devices."""
    if not cost:
        return result("energy_vs_reader", "fail", "no cost section in strike's summary")
    series = counter_series(samples)
    if not series:
        return result("energy_vs_reader", "fail", "the independent reader has no energy counter readings")
    if ready_ns is None:
        return result("energy_vs_reader", "fail", "no strike ready time")
    devices = len(series)
    window_ns = int(cost["measured_gpu_s"] / devices * 1e9)
    t0, t1 = ready_ns, ready_ns + window_ns
    strike_j = cost["measured_energy_j"]
    reader_j = reader_energy_j(samples, t0, t1)
    power_j = reader_power_energy_j(samples, t0, t1)
    shift = 250_000_000
    early = reader_energy_j(samples, t0 - shift, t1 - shift)
    late = reader_energy_j(samples, t0 + shift, t1 + shift)
    diff = (strike_j - reader_j) / reader_j if reader_j else float("inf")
    return passed(
        "energy_vs_reader",
        abs(diff) <= tolerance,
        f"strike {strike_j:.1f} J vs reader counter {reader_j:.1f} J ({diff * 100:+.2f} %, limit {tolerance * 100:.0f} %) "
        f"over {window_ns / 1e9:.2f} s x {devices} device(s); reader power integral {power_j:.1f} J; "
        f"window shifted -/+250 ms: {early:.1f} / {late:.1f} J",
        strike_j=strike_j,
        reader_j=reader_j,
        reader_power_j=power_j,
        diff_pct=diff * 100,
        window_s=window_ns / 1e9,
        devices=devices,
        shifted_j=[early, late],
    )


def check_pid(records, server_pid, samples, check_report):
    """The serving process is matched by PID: the records' pid, and NVML's process list."""
    rec_pids = sorted({r.get("pid") for r in records})
    nvml_pids = sorted({p for s in samples if "pids" in s for p in s["pids"]})
    check_pids = sorted(
        {p.get("pid") for d in ((check_report or {}).get("gpu") or {}).get("devices", []) for p in d.get("processes", [])}
    )
    ok = rec_pids == [server_pid] and server_pid in nvml_pids
    return passed(
        "serving_pid",
        ok,
        f"server pid {server_pid}; records' pids {rec_pids}; NVML compute pids (reader) {nvml_pids}; strike check saw {check_pids or 'none'}",
        record_pids=rec_pids,
        nvml_pids=nvml_pids,
        check_pids=check_pids,
    )


def run_checks(inputs, mode):
    """Every check over parsed inputs. GPU checks are skipped in fake mode."""
    records, client = inputs["records"], inputs["client"]
    cost = (inputs.get("summary") or {}).get("cost")
    phases = inputs.get("phases") or {}
    out = [check_records_exact(records, client, inputs["server_pid"])]
    if mode == "fake":
        skip = "fake mode: no GPU"
        for name in ("cost_fields_positive", "invariant", "energy_vs_reader", "long_costs_more", "idle_cost", "serving_pid"):
            out.append(result(name, "skip", skip))
        out.append(
            passed(
                "no_gpu_fields",
                all(r.get("cost_usd") is None for r in records) and cost is None,
                "without a GPU source records carry no cost and the summary no cost section",
            )
        )
        return out
    devices = len(counter_series(inputs.get("samples") or [])) or 1
    out += [
        check_cost_fields(records),
        check_invariant(cost, records),
        check_energy(cost, inputs.get("samples") or [], phases.get("strike_ready_ns")),
        check_long_vs_short(records, client),
        check_idle(cost, phases.get("idle_status_before"), phases.get("idle_status_after"), phases.get("idle"), devices),
        check_pid(records, inputs["server_pid"], inputs.get("samples") or [], inputs.get("check")),
    ]
    return out


# ---- files --------------------------------------------------------------------------


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    return out


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_inputs(out):
    pid = None
    try:
        with open(os.path.join(out, "server.pid")) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        pass
    return {
        "records": read_jsonl(os.path.join(out, "records.jsonl")),
        "client": read_jsonl(os.path.join(out, "client.jsonl")),
        "summary": read_json(os.path.join(out, "strike_summary.json")),
        "phases": read_json(os.path.join(out, "phases.json")),
        "samples": read_jsonl(os.path.join(out, "nvml_samples.jsonl")),
        "check": read_json(os.path.join(out, "strike_check.json")),
        "server_pid": pid,
    }


def table(checks):
    lines = [f"{'check':<22} {'status':<6} detail"]
    for c in checks:
        lines.append(f"{c['name']:<22} {c['status'].upper():<6} {c['detail']}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=["gpu", "fake"], default="gpu")
    p.add_argument("--note", action="append", default=[], help="a line for the summary (what failed to run)")
    a = p.parse_args()
    inputs = load_inputs(a.out)
    checks = run_checks(inputs, a.mode)
    ok = all(c["status"] != "fail" for c in checks) and not a.note
    summary = {
        "ok": ok,
        "mode": a.mode,
        "checks": checks,
        "notes": a.note,
        "records": len(inputs["records"]),
        "requests": len(inputs["client"]),
        "cost": (inputs.get("summary") or {}).get("cost"),
        "per_request": [
            {k: r.get(k) for k in ("response_id", "path", "stream", "input_tokens", "output_tokens", "e2e_ms", "gpu_seconds", "gpu_energy_j", "cost_usd")}
            for r in inputs["records"]
        ],
    }
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(table(checks))
    for n in a.note:
        print(f"note: {n}")
    print(f"gpu-proof: {'PASS' if ok else 'FAIL'} ({a.mode} mode); {os.path.join(a.out, 'summary.json')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
