#!/usr/bin/env python3
"""The independent reader of the GPU proof: pynvml (nvidia-ml-py), apart from Strike.

- `--readout FILE`: one JSON readout of every device (name, UUID, driver, power, total
  energy counter, memory, MIG mode, compute processes).
- `--samples FILE`: until SIGTERM/SIGINT, every `--interval-ms` (10), one JSON line per
  device: `{"t_ns": CLOCK_MONOTONIC ns, "index", "energy_mj", "power_mw"}`; every
  `--process-every-s` also `{"t_ns", "index", "pids": [...]}`. CLOCK_MONOTONIC is the clock
  of Strike's samples too.
"""

import argparse
import json
import signal
import sys
import time


def nvml():
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def call(f, *args):
    """A reading, or the error's name (a reading the device does not support)."""
    try:
        return f(*args), None
    except Exception as e:  # noqa: BLE001 (pynvml raises NVMLError subclasses)
        return None, f"{type(e).__name__}: {e}"


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def readout(path):
    n = nvml()
    out = {"driver": text(call(n.nvmlSystemGetDriverVersion)[0]), "nvml_version": text(call(n.nvmlSystemGetNVMLVersion)[0]), "devices": []}
    count = n.nvmlDeviceGetCount()
    for i in range(count):
        h = n.nvmlDeviceGetHandleByIndex(i)
        d = {"index": i}
        errors = {}
        for key, f in [
            ("name", n.nvmlDeviceGetName),
            ("uuid", n.nvmlDeviceGetUUID),
            ("power_mw", n.nvmlDeviceGetPowerUsage),
            ("power_limit_mw", n.nvmlDeviceGetEnforcedPowerLimit),
            ("energy_mj", n.nvmlDeviceGetTotalEnergyConsumption),
            ("mig_mode", n.nvmlDeviceGetMigMode),
            ("utilization", n.nvmlDeviceGetUtilizationRates),
            ("memory", n.nvmlDeviceGetMemoryInfo),
            ("processes", n.nvmlDeviceGetComputeRunningProcesses),
        ]:
            v, err = call(f, h)
            if err:
                errors[key] = err
                continue
            if key == "utilization":
                v = {"gpu_pct": v.gpu, "memory_pct": v.memory}
            elif key == "memory":
                v = {"total_bytes": v.total, "used_bytes": v.used}
            elif key == "processes":
                v = [{"pid": p.pid, "used_bytes": p.usedGpuMemory} for p in v]
            elif key == "mig_mode":
                v = {"current": v[0], "pending": v[1]}
            d[key] = text(v)
        d["errors"] = errors
        out["devices"].append(d)
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(f"nvml_reader: {count} device(s), driver {out['driver']}")


def samples(path, interval_s, process_every_s):
    n = nvml()
    handles = [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    next_t = time.monotonic()
    next_p = next_t
    with open(path, "w") as f:
        while not stop:
            for i, h in enumerate(handles):
                e, _ = call(n.nvmlDeviceGetTotalEnergyConsumption, h)
                p, _ = call(n.nvmlDeviceGetPowerUsage, h)
                f.write(json.dumps({"t_ns": time.monotonic_ns(), "index": i, "energy_mj": e, "power_mw": p}) + "\n")
            if time.monotonic() >= next_p:
                next_p += process_every_s
                for i, h in enumerate(handles):
                    procs, _ = call(n.nvmlDeviceGetComputeRunningProcesses, h)
                    pids = [q.pid for q in procs or []]
                    f.write(json.dumps({"t_ns": time.monotonic_ns(), "index": i, "pids": pids}) + "\n")
            next_t += interval_s
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()
        f.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readout")
    p.add_argument("--samples")
    p.add_argument("--interval-ms", type=float, default=10.0)
    p.add_argument("--process-every-s", type=float, default=1.0)
    a = p.parse_args()
    if a.readout:
        readout(a.readout)
    if a.samples:
        samples(a.samples, a.interval_ms / 1000.0, a.process_every_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
