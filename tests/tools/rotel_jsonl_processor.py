# Rotel (streamfold/rotel, PyPI "rotel") Python processor: append every received span
# and metric data point as one JSON line to $ROTEL_SINK (default
# rotel-sink.jsonl). Data passes through unchanged.
# Strike's copy (from shared/tools): also renders array attributes as JSON lists.
# Use:  rotel-agent start ... --otlp-with-trace-processor THIS.py --otlp-with-metrics-processor THIS.py
import json, os
SINK = os.environ.get("ROTEL_SINK", "rotel-sink.jsonl")

def _val(v):
    if v is None:
        return None
    inner = getattr(v, "value", v)          # AnyValue -> variant
    inner = getattr(inner, "value", inner)
    if hasattr(inner, "_0"):
        inner = inner._0
    if isinstance(inner, (bytes, bytearray)):
        return inner.hex()
    if isinstance(inner, (str, int, float, bool)) or inner is None:
        return inner
    if type(inner).__name__ == "ArrayValue":   # iterable of AnyValue
        return [_val(x) for x in inner]
    return str(inner)

def _attrs(kvs):
    return {kv.key: _val(kv.value) for kv in kvs}

def process_spans(resource_spans):
    res = _attrs(resource_spans.resource.attributes) if resource_spans.resource else {}
    with open(SINK, "a") as f:
        for ss in resource_spans.scope_spans:
            scope = ss.scope.name if ss.scope else None
            for sp in ss.spans:
                f.write(json.dumps({
                    "type": "span", "resource": res, "scope": scope, "name": sp.name,
                    "trace_id": bytes(sp.trace_id).hex(), "span_id": bytes(sp.span_id).hex(),
                    "parent_span_id": bytes(sp.parent_span_id).hex(), "kind": sp.kind,
                    "start": sp.start_time_unix_nano, "end": sp.end_time_unix_nano,
                    "attributes": _attrs(sp.attributes),
                    "events": [{"name": e.name, "t": e.time_unix_nano, "attributes": _attrs(e.attributes)}
                               for e in sp.events],
                }, default=str) + "\n")

def process_metrics(resource_metrics):
    res = _attrs(resource_metrics.resource.attributes) if resource_metrics.resource else {}
    with open(SINK, "a") as f:
        for sm in resource_metrics.scope_metrics:
            for m in sm.metrics:
                kind = type(m.data).__name__.replace("MetricData_", "")
                inner = m.data[0]
                for dp in inner.data_points:
                    rec = {"type": "metric", "resource": res, "name": m.name, "unit": m.unit,
                           "kind": kind, "attributes": _attrs(dp.attributes),
                           "time": dp.time_unix_nano}
                    if hasattr(dp, "value") and dp.value is not None:
                        rec["value"] = dp.value[0]
                    for k in ("count", "sum", "min", "max"):
                        if hasattr(dp, k):
                            rec[k] = getattr(dp, k)
                    if hasattr(dp, "bucket_counts"):
                        rec["bucket_counts"] = list(dp.bucket_counts)
                        rec["explicit_bounds"] = list(dp.explicit_bounds)
                    f.write(json.dumps(rec, default=str) + "\n")
