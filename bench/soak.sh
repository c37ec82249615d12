#!/usr/bin/env bash
# Soak: does mcp-edge's memory stay flat under steady load, abandoned SSE streams and a
# flapping backend? Loopback only, bounded in time (and in connections: < 300 at once).
#
#   bash bench/soak.sh              # ~5 min of load (+ ~1 min of build check, warm-up, quiet)
#   bash bench/soak.sh --quick      # ~1 min of load
#   DURATION=1800 bash bench/soak.sh   # seconds of load after warm-up
#
# Needs: h2load (Debian nghttp2-client), python3, ss (iproute2); builds the release
# `mcp-edge` and the `static_backend` example (CARGO_TARGET_DIR is honoured).
#
# What runs, for the whole duration, against one route with `upstreams = [a, b]`:
#   - backends a and b: bench/static_backend.rs (POST -> fixed JSON-RPC answer, GET -> SSE of
#     ~1 KiB events every 5 ms, or 16 KiB every 2 ms when asked by query; GET /healthz -> 200);
#     b is killed (SIGKILL) after 5-10 s up and restarted after 1-4 s down, over and over;
#   - mcp-edge with route limits (rate a bit below the offered load, so some 429s; max open
#     streams), default circuit breaker and retries, active health checks on /healthz,
#     sse.client_write_timeout = 5s, sse.max_stream_lifetime = 20s;
#   - steady load from 127.0.0.1: two h2load runs at fixed rates (h2: 8 connections x 60 req/s;
#     HTTP/1.1 keep-alive: 8 connections x 20 req/s) of a stateless 2026-07-28 tools/call;
#   - stream churn from 127.0.0.2 (its own limit principal): bench/soak_streams.py opens
#     ~8 GET streams/s and abandons them (reset or FIN mid-stream; or, on a fast stream, stops
#     reading so that client_write_timeout must cut it), plus 4 long readers that reconnect
#     when max_stream_lifetime (or a dying backend) ends their stream.
# bench/soak_monitor.py samples the proxy every 5 s (RSS, fds, threads, connections, access-log
# statuses) into samples.csv and prints the summary and the verdict "RSS flat: yes/no" (see its
# header for the rule). Phases: idle (proxy up, no load), warm-up (load, not judged), load,
# quiet (load stopped; do fds and connections return to the idle figures?).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    *) echo "usage: bench/soak.sh [--quick]   (env: DURATION, WARMUP seconds)" >&2; exit 2 ;;
  esac
done
if (( QUICK )); then DURATION=${DURATION:-60}; WARMUP=${WARMUP:-10}; else DURATION=${DURATION:-300}; WARMUP=${WARMUP:-30}; fi
QUIET=${QUIET:-20}          # seconds after the load stops (pool_idle_timeout is 10s)
PROXY_PORT=${PROXY_PORT:-18644}
PORT_A=${PORT_A:-19301}
PORT_B=${PORT_B:-19302}
ADMIN_PORT=${ADMIN_PORT:-19309}
for t in h2load python3 ss; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }; done

source bench/lib/common.sh
bench_build --bin mcp-edge --example static_backend
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/mcp-edge
BACKEND=$TARGET/release/examples/static_backend
BACKEND_ARGS=(5 1024)       # event every 5 ms, 1 KiB padding: ~200 KiB/s per stream

work=$(mktemp -d /tmp/mcp-edge-soak.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "raw data (samples.csv, proxy.log, h2load output) in $work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
phase() { echo "$1" >"$work/phase"; }
phase idle

# Test PKI (bench/lib/common.sh, as bench/run.sh): CA and ECDSA P-256 server certificate.
export BENCH_PUBLIC=https://localhost:$PROXY_PORT
bench_pki "$work/pki"

"$BACKEND" 127.0.0.1:$PORT_A "${BACKEND_ARGS[@]}" 2>/dev/null & pids+=($!)

cat >"$work/proxy.toml" <<TOML
[listener]
bind = "127.0.0.1:$PROXY_PORT"
public_url = "https://localhost:$PROXY_PORT"
allowed_hosts = ["localhost", "127.0.0.1"]
max_connections = 2000
[listener.tls]
cert = "$work/pki/server.pem"
key = "$work/pki/server.key"
[admin]
bind = "127.0.0.1:$ADMIN_PORT"
[upstream]
pool_idle_timeout = "10s"
# [upstream.circuit] and [upstream.retry]: defaults (5 failures open for 5s..60s; 2 retries
# of requests the backend cannot have seen, 20% budget).
[upstream.health_check]
enabled = true
path = "/healthz"
interval = "2s"
timeout = "1s"
[sse]
client_write_timeout = "5s"
max_stream_lifetime = "20s"
heartbeat_interval = "15s"
[log]
level = "info"
[[routes]]
path = "/mcp"
upstreams = ["http://127.0.0.1:$PORT_A/mcp", "http://127.0.0.1:$PORT_B/mcp"]
[routes.limits]
# Offered: ~640 POST/s from 127.0.0.1 (so ~6% get 429); ~8 GET/s from 127.0.0.2, ~35 open.
# GET streams count as requests in flight too, so max_open_streams sits below the cap.
requests_per_second = 600
burst = 100
max_concurrent_requests = 64
max_open_streams = 40
TOML
"$BIN" check --config "$work/proxy.toml" >"$work/check.out" 2>&1 || { cat "$work/check.out" >&2; exit 1; }
"$BIN" run --config "$work/proxy.toml" 2>"$work/proxy.log" & pids+=($!)
PROXY_PID=$!
bench_wait_port "$PROXY_PORT"

# Backend b flaps: up 5-10 s, SIGKILL, down 1-4 s. flap.log gets "<epoch> up|down" lines.
flapper() {
  local b="" s=""
  trap 'kill -9 $b $s 2>/dev/null; exit 0' TERM
  while :; do
    "$BACKEND" 127.0.0.1:$PORT_B "${BACKEND_ARGS[@]}" 2>>"$work/backend-b.err" & b=$!
    echo "$(date +%s.%N) up" >>"$work/flap.log"
    sleep "$(( 5 + RANDOM % 6 )).$(( RANDOM % 10 ))" & s=$!; wait $s; s=""
    kill -9 "$b" 2>/dev/null || true; wait "$b" 2>/dev/null || true; b=""
    echo "$(date +%s.%N) down" >>"$work/flap.log"
    sleep "$(( 1 + RANDOM % 3 )).$(( RANDOM % 10 ))" & s=$!; wait $s; s=""
  done
}
flapper & pids+=($!)
sleep 1

printf '%s' "$BENCH_BODY" >"$work/body.json"
H=("${BENCH_H[@]}")
URL=https://127.0.0.1:$PROXY_PORT/mcp
# Smoke test: one call answers 2xx through the proxy.
code=$(curl -sk -o /dev/null -w '%{http_code}' "${H[@]}" --data-binary @"$work/body.json" "$URL")
[ "$code" = 200 ] || { echo "smoke test: expected 200, got $code" >&2; tail -5 "$work/proxy.log" >&2; exit 1; }

python3 bench/soak_monitor.py sample --pid "$PROXY_PID" --dir "$work" --proxy-port "$PROXY_PORT" \
  --backend-ports "$PORT_A,$PORT_B" & pids+=($!)
MON_PID=$!
sleep 11   # two idle samples

echo "soak: ${WARMUP}s warm-up + ${DURATION}s load + ${QUIET}s quiet; proxy pid $PROXY_PID; data in $work"
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(uname -r); date: $(date -u '+%F %T') UTC; commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' + local changes'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
phase warmup
TOTAL=$(( WARMUP + DURATION ))
h2load -D "$TOTAL" -c 8 -m 4 --rps 60 -d "$work/body.json" "${H[@]}" "$URL" >"$work/h2load-h2.out" 2>&1 & pids+=($!)
L1=$!
h2load -D "$TOTAL" --h1 -c 8 --rps 20 -d "$work/body.json" "${H[@]}" "$URL" >"$work/h2load-h1.out" 2>&1 & pids+=($!)
L2=$!
python3 bench/soak_streams.py --port "$PROXY_PORT" --source 127.0.0.2 --duration "$TOTAL" \
  --rate 8 --readers 4 --hold 12 --stats "$work/streams.json" 2>"$work/streams.err" & pids+=($!)
L3=$!
sleep "$WARMUP"
phase load
wait "$L1" "$L2" "$L3" || echo "a load process exited with an error (see $work)" >&2
phase quiet
sleep "$QUIET"
kill "$MON_PID"; wait "$MON_PID" 2>/dev/null || true
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
grep -q '"level":"ERROR"' "$work/proxy.log" && echo "proxy logged errors: $(grep -c '"level":"ERROR"' "$work/proxy.log")"
echo
python3 bench/soak_monitor.py summary --dir "$work"
