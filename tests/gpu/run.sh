#!/usr/bin/env bash
# The run half of the GPU proof (docs/GPU-PROOF.md): needs bash, python3 and the strike
# binary that `cargo xtask gpu-proof --prepare` staged; no cargo, no network.
#
#   bash tests/gpu/run.sh            # on the GPU machine (root): NVML, torch model, eBPF
#   GPU_PROOF_MODE=fake bash tests/gpu/run.sh   # anywhere as root: fake model, --gpu off
#
# Environment: OUT (results; default target/gpu-proof-out), GPU_PROOF_MODE (gpu | fake),
# STRIKE_BIN (default target/gpu-proof/strike), PYTHON (default python3), GPU_PROOF_PORT,
# GPU_PROOF_STRIKE_PORT, STRIKE_PREFIX (a command strike runs under). Writes everything to
# OUT, then runs check.py; exits with its status (non-zero when a check failed or a step
# could not run).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODE=${GPU_PROOF_MODE:-gpu}
OUT=${OUT:-$ROOT/target/gpu-proof-out}
STRIKE=${STRIKE_BIN:-$ROOT/target/gpu-proof/strike}
PY=${PYTHON:-python3}
PORT=${GPU_PROOF_PORT:-18080}
SPORT=${GPU_PROOF_STRIKE_PORT:-19464}
mkdir -p "$OUT"
NOTES=()
T0=$(date +%s)
log() { echo "gpu-proof [$(($(date +%s) - T0)) s]: $*" | tee -a "$OUT/run.log"; }
note() { NOTES+=("--note" "$*"); log "NOTE: $*"; }

SERVER_PID="" READER_PID="" STRIKE_PID=""
cleanup() {
	for p in $STRIKE_PID $READER_PID $SERVER_PID; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
}
trap cleanup EXIT

# 0. Where we are.
{
	echo "mode: $MODE"
	echo "date: $(date -u +%FT%TZ)"
	echo "uname: $(uname -a)"
	echo "id: $(id)"
	echo "python: $($PY --version 2>&1)"
	echo "strike: $("$STRIKE" --version 2>&1)"
	echo "btf: $(ls -la /sys/kernel/btf/vmlinux 2>&1)"
	command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1
	$PY -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -1
	$PY -c 'import aiohttp; print("aiohttp", aiohttp.__version__)' 2>&1 | tail -1
} >"$OUT/env.txt"
cat "$OUT/env.txt"
if [ ! -x "$STRIKE" ]; then
	note "no strike binary at $STRIKE (run cargo xtask gpu-proof --prepare on the build machine)"
fi

# 1. NVML readouts: strike check, then pynvml.
if [ "$MODE" = gpu ]; then
	GPU_FLAG=on
else
	GPU_FLAG=off
fi
if "$STRIKE" check --help >/dev/null 2>&1; then
	timeout 90 "$STRIKE" check --format json --gpu "$GPU_FLAG" --no-otlp --listen none \
		>"$OUT/strike_check.json" 2>"$OUT/strike_check.err"
	log "strike check: exit $? ($(head -c 200 "$OUT/strike_check.err" | tr '\n' ' '))"
else
	log "strike check: this binary has no check subcommand; skipped"
fi
if [ "$MODE" = gpu ]; then
	$PY "$HERE/nvml_reader.py" --readout "$OUT/nvml_devices.json" >>"$OUT/run.log" 2>&1 ||
		note "pynvml readout failed: $(tail -1 "$OUT/run.log")"
fi

# 2. The inference server.
start_server() {
	$PY "$HERE/server.py" --port "$PORT" --model "$1" --facts "$OUT/server_facts.json" \
		>"$OUT/server.log" 2>&1 &
	SERVER_PID=$!
	echo "$SERVER_PID" >"$OUT/server.pid"
	for _ in $(seq 1 1800); do
		if ! kill -0 "$SERVER_PID" 2>/dev/null; then
			return 1
		fi
		if $PY -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/health', timeout=1)" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}
MODEL=torch
[ "$MODE" = fake ] && MODEL=fake
if start_server "$MODEL"; then
	log "server: $MODEL model ready, pid $SERVER_PID: $(grep -o 'model ready.*' "$OUT/server.log" | head -c 400)"
else
	note "server with --model $MODEL did not start: $(tail -3 "$OUT/server.log" | tr '\n' ' ')"
	kill "$SERVER_PID" 2>/dev/null
	if [ "$MODEL" = torch ] && start_server fake; then
		note "fell back to --model fake (no GPU work by the server: attribution checks will fail)"
	else
		$PY "$HERE/check.py" --out "$OUT" --mode "$MODE" "${NOTES[@]}"
		exit 1
	fi
fi

# 3. The independent reader, then strike, then the load.
if [ "$MODE" = gpu ]; then
	$PY "$HERE/nvml_reader.py" --samples "$OUT/nvml_samples.jsonl" --interval-ms 10 \
		>>"$OUT/run.log" 2>&1 &
	READER_PID=$!
	sleep 0.5
fi
cat >"$OUT/strike.yaml" <<'EOF'
cost:
  gpu_price_per_hour: {H200: 3.50, H100: 2.50}
  default_gpu_price_per_hour: 3.00
  energy_price_per_kwh: 0.12
  pue: 1.2
EOF
# STRIKE_PREFIX: a command that starts strike (the e2e's setpriv to least privilege).
# shellcheck disable=SC2086
${STRIKE_PREFIX:-} "$STRIKE" run -c "$OUT/strike.yaml" --port "$PORT" --gpu "$GPU_FLAG" --gpu-interval-ms 100 \
	--no-otlp --listen "127.0.0.1:$SPORT" --output json --summary-file "$OUT/strike_summary.json" \
	>"$OUT/records.jsonl" 2>"$OUT/strike.log" &
STRIKE_PID=$!
$PY "$HERE/load.py" --server "http://127.0.0.1:$PORT" --strike-url "http://127.0.0.1:$SPORT" \
	--strike-log "$OUT/strike.log" --strike-pid "$STRIKE_PID" --ready-timeout-s 60 --out "$OUT" 2>&1 | tee -a "$OUT/run.log"
LOAD_RC=${PIPESTATUS[0]}
if ! kill -0 "$STRIKE_PID" 2>/dev/null; then
	wait "$STRIKE_PID"
	note "strike run exited early (status $?): $(grep -v '^strike: summary' "$OUT/strike.log" | head -5 | tr '\n' ' ')"
	STRIKE_PID=""
elif [ "$LOAD_RC" != 0 ]; then
	note "load failed (status $LOAD_RC)"
fi
if [ -n "$STRIKE_PID" ]; then
	kill -INT "$STRIKE_PID"
	wait "$STRIKE_PID"
	log "strike run: exit $?"
	STRIKE_PID=""
fi
if [ -n "$READER_PID" ]; then
	kill -TERM "$READER_PID"
	wait "$READER_PID"
	READER_PID=""
fi
# After strike stopped: this request is not one of the load's.
$PY -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$PORT/stats').read().decode())" \
	>"$OUT/server_stats.json" 2>&1
kill "$SERVER_PID" 2>/dev/null
wait "$SERVER_PID" 2>/dev/null
SERVER_PID=""
grep -E '^strike: (GPU|no GPU|running)|^  cost' "$OUT/strike.log" | tee -a "$OUT/run.log"

# 4. The checks.
$PY "$HERE/check.py" --out "$OUT" --mode "$MODE" "${NOTES[@]}" | tee "$OUT/checks.txt"
RC=${PIPESTATUS[0]}
log "done in $(($(date +%s) - T0)) s; results in $OUT"
exit "$RC"
