"""Unit tests of check.py over synthetic inputs: `python3 -m unittest discover -s tests/gpu`."""

import copy
import unittest

import check

PID = 4242


def client_and_records():
    client, records = [], []
    specs = [("chat", True, 16, None, None), ("completions", False, 16, None, None),
             ("chat", True, 128, 0, "long"), ("chat", True, 16, 0, "short")]
    for i, (api, stream, n, pair, role) in enumerate(specs):
        rid = f"id-{i}"
        client.append({"api": api, "stream": stream, "max_tokens": n, "pair": pair, "role": role,
                       "response_id": rid, "usage": {"prompt_tokens": 10 + i, "completion_tokens": n}})
        gpu_s = 0.01 * n
        records.append({"response_id": rid, "status": 200, "path": check.PATHS[api], "stream": stream,
                        "max_tokens": n, "output_tokens": n, "input_tokens": 10 + i, "token_source": "usage",
                        "partial": False, "finish_reason": "length", "pid": PID,
                        "gpu_seconds": gpu_s, "gpu_energy_j": 300 * gpu_s, "cost_usd": 1e-6 * n})
    return client, records


def cost_of(records, idle_usd=1e-4, idle_s=2.0, idle_j=150.0):
    a_usd = sum(r["cost_usd"] for r in records)
    a_s = sum(r["gpu_seconds"] for r in records)
    a_j = sum(r["gpu_energy_j"] for r in records)
    return {"measured_usd": a_usd + idle_usd, "attributed_usd": a_usd, "idle_usd": idle_usd,
            "measured_gpu_s": a_s + idle_s, "idle_gpu_s": idle_s, "measured_energy_j": a_j + idle_j,
            "idle_energy_j": idle_j, "intervals": 50, "idle_intervals": 20}


def reader(t0_ns, seconds, watts, pids=(PID,)):
    """10 ms samples of one device at constant power, from 1 s before t0 to 1 s after."""
    out, e = [], 1_000_000.0
    step = 10_000_000
    t = t0_ns - 1_000_000_000
    while t <= t0_ns + int((seconds + 1) * 1e9):
        out.append({"t_ns": t, "index": 0, "energy_mj": int(e), "power_mw": watts * 1000})
        e += watts * step / 1e6
        t += step
    out.append({"t_ns": t0_ns, "index": 0, "pids": list(pids)})
    return out


class Records(unittest.TestCase):
    def test_exact_records_pass(self):
        client, records = client_and_records()
        self.assertEqual(check.check_records_exact(records, client, PID)["status"], "pass")

    def test_a_wrong_count_or_a_missing_record_fails(self):
        client, records = client_and_records()
        bad = copy.deepcopy(records)
        bad[1]["output_tokens"] = 15
        r = check.check_records_exact(bad, client, PID)
        self.assertEqual(r["status"], "fail")
        self.assertIn("output_tokens 15 != 16", r["detail"])
        self.assertEqual(check.check_records_exact(records[1:], client, PID)["status"], "fail")
        self.assertEqual(check.check_records_exact(records + [records[0]], client, PID)["status"], "fail")
        self.assertEqual(check.check_records_exact(records, client, PID + 1)["status"], "fail")
        self.assertEqual(check.check_records_exact([], [], PID)["status"], "fail", "no requests is no proof")

    def test_cost_fields(self):
        _, records = client_and_records()
        self.assertEqual(check.check_cost_fields(records)["status"], "pass")
        records[2]["gpu_energy_j"] = 0.0
        records[3]["cost_usd"] = None
        r = check.check_cost_fields(records)
        self.assertEqual((r["status"], r["values"]["without"]), ("fail", ["id-2", "id-3"]))


class Invariant(unittest.TestCase):
    def test_holds(self):
        _, records = client_and_records()
        self.assertEqual(check.check_invariant(cost_of(records), records)["status"], "pass")

    def test_broken_sum_or_missing_section_fails(self):
        _, records = client_and_records()
        cost = cost_of(records)
        cost["measured_usd"] *= 1.01
        self.assertEqual(check.check_invariant(cost, records)["status"], "fail")
        self.assertEqual(check.check_invariant(cost_of(records), records[1:])["status"], "fail")
        self.assertEqual(check.check_invariant(None, records)["status"], "fail")


class Energy(unittest.TestCase):
    T0 = 50_000_000_000

    def test_within_two_percent(self):
        samples = reader(self.T0, 10.0, 200)
        cost = {"measured_gpu_s": 10.0, "measured_energy_j": 2000.0 * 1.015}
        r = check.check_energy(cost, samples, self.T0)
        self.assertEqual(r["status"], "pass", r["detail"])
        self.assertAlmostEqual(r["values"]["reader_j"], 2000.0, delta=0.5)
        self.assertAlmostEqual(r["values"]["reader_power_j"], 2000.0, delta=5)

    def test_off_by_more_fails(self):
        samples = reader(self.T0, 10.0, 200)
        for j in (2000.0 * 1.03, 2000.0 * 0.97):
            r = check.check_energy({"measured_gpu_s": 10.0, "measured_energy_j": j}, samples, self.T0)
            self.assertEqual(r["status"], "fail", r["detail"])

    def test_no_counter_or_no_ready_time_fails(self):
        samples = [dict(s, energy_mj=None) for s in reader(self.T0, 1.0, 200) if "pids" not in s]
        cost = {"measured_gpu_s": 1.0, "measured_energy_j": 200.0}
        self.assertEqual(check.check_energy(cost, samples, self.T0)["status"], "fail")
        self.assertEqual(check.check_energy(cost, reader(self.T0, 1.0, 200), None)["status"], "fail")

    def test_interpolation(self):
        s = [(0, 0), (10, 100)]
        self.assertEqual(check.interpolate(s, 5), 50)
        self.assertEqual(check.interpolate(s, -1), 0)
        self.assertEqual(check.interpolate(s, 11), 100)


class Attribution(unittest.TestCase):
    def test_long_costs_more(self):
        client, records = client_and_records()
        self.assertEqual(check.check_long_vs_short(records, client)["status"], "pass")
        records[2]["cost_usd"] = records[3]["cost_usd"]
        self.assertEqual(check.check_long_vs_short(records, client)["status"], "fail")
        self.assertEqual(check.check_long_vs_short(records, client[:2])["status"], "fail", "no pairs")

    def test_idle_cost_grows_while_idle(self):
        _, records = client_and_records()
        cost = cost_of(records)
        phase = {"t0_ns": 0, "t1_ns": 4_000_000_000}
        before = {"session": {"cost": {"idle_usd": 1e-5, "idle_gpu_s": 1.0}}}
        after = {"session": {"cost": {"idle_usd": 5e-5, "idle_gpu_s": 4.5}}}
        self.assertEqual(check.check_idle(cost, before, after, phase, 1)["status"], "pass")
        flat = {"session": {"cost": {"idle_usd": 1.1e-5, "idle_gpu_s": 1.2}}}
        self.assertEqual(check.check_idle(cost, before, flat, phase, 1)["status"], "fail")
        self.assertEqual(check.check_idle(cost, None, None, phase, 1)["status"], "fail")
        self.assertEqual(check.check_idle(dict(cost, idle_usd=0.0), before, after, phase, 1)["status"], "fail")

    def test_serving_pid(self):
        _, records = client_and_records()
        samples = reader(0, 0.1, 100)
        report = {"gpu": {"devices": [{"processes": [{"pid": PID}]}]}}
        r = check.check_pid(records, PID, samples, report)
        self.assertEqual(r["status"], "pass", r["detail"])
        self.assertEqual(check.check_pid(records, PID, reader(0, 0.1, 100, pids=(7,)), None)["status"], "fail")


class Modes(unittest.TestCase):
    def test_fake_mode_skips_the_gpu_checks(self):
        client, records = client_and_records()
        for r in records:
            for k in ("gpu_seconds", "gpu_energy_j", "cost_usd"):
                r[k] = None
        got = check.run_checks({"records": records, "client": client, "server_pid": PID, "summary": {}}, "fake")
        status = {c["name"]: c["status"] for c in got}
        self.assertEqual(status["records_exact"], "pass")
        self.assertEqual(status["no_gpu_fields"], "pass")
        self.assertEqual(status["energy_vs_reader"], "skip")

    def test_gpu_mode_runs_everything(self):
        client, records = client_and_records()
        t0 = 50_000_000_000
        cost = cost_of(records)
        samples = reader(t0, cost["measured_gpu_s"], 200)
        cost["measured_energy_j"] = 200 * cost["measured_gpu_s"]
        cost["idle_energy_j"] = cost["measured_energy_j"] - sum(r["gpu_energy_j"] for r in records)
        phases = {"strike_ready_ns": t0, "idle": {"t0_ns": 0, "t1_ns": 4_000_000_000},
                  "idle_status_before": {"session": {"cost": {"idle_usd": 0.0, "idle_gpu_s": 0.0}}},
                  "idle_status_after": {"session": {"cost": {"idle_usd": 1e-5, "idle_gpu_s": 3.0}}}}
        got = check.run_checks({"records": records, "client": client, "server_pid": PID, "summary": {"cost": cost},
                                "phases": phases, "samples": samples, "check": None}, "gpu")
        self.assertEqual([c["name"] for c in got if c["status"] != "pass"], [], check.table(got))


if __name__ == "__main__":
    unittest.main()
