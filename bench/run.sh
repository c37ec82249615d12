#!/usr/bin/env bash
# Request rate and latency: direct to a backend versus through mcp-edge (HTTP/1.1 and h2),
# plus memory held by idle SSE streams. Loopback only, bounded in count and time.
# Needs: h2load (Debian nghttp2-client). Results go to stdout; copy them into bench/RESULTS.md.
#
#   bash bench/run.sh            # full run (~2 minutes)
#   N=5000 bash bench/run.sh     # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}          # requests per load run
C=${C:-32}             # client connections
STREAMS=${STREAMS:-1000}  # idle SSE streams for the memory run
command -v h2load >/dev/null || { echo "install h2load: apt-get install nghttp2-client" >&2; exit 1; }

cargo build --release --quiet --bin mcp-edge --example static_backend
BIN=target/release/mcp-edge
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

BACKEND=127.0.0.1:19100
DEMO_PORT=18443
PROXY_PORT=18444
target/release/examples/static_backend "$BACKEND" 1000 2>/dev/null & pids+=($!)

# The demo writes a dev PKI we reuse for the benchmark proxy in front of the static backend.
"$BIN" demo --bind 127.0.0.1:$DEMO_PORT --data-dir "$work/demo" >"$work/demo.out" 2>"$work/demo.err" & pids+=($!)
for _ in $(seq 100); do grep -q "is running" "$work/demo.out" 2>/dev/null && break; sleep 0.1; done
DEMO_BACKEND=$(grep -o 'http://127.0.0.1:[0-9]*/mcp' "$work/demo.out" | head -1)

cat >"$work/proxy.toml" <<TOML
[listener]
bind = "127.0.0.1:$PROXY_PORT"
public_url = "https://localhost:$PROXY_PORT"
allowed_hosts = ["localhost", "127.0.0.1"]
max_connections = 5000
[listener.tls]
cert = "$work/demo/server.pem"
key = "$work/demo/server.key"
[upstream]
pool_max_idle_per_host = ${POOL:-512}
[log]
level = "warn"
[[routes]]
path = "/mcp"
upstream = "http://$BACKEND/mcp"
TOML
"$BIN" run --config "$work/proxy.toml" 2>"$work/proxy.err" & pids+=($!)
PROXY_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PROXY_PORT) 2>/dev/null && break; sleep 0.1; done

printf '%s' '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}' >"$work/body.json"
H=(-H 'content-type: application/json' -H 'accept: application/json, text/event-stream'
   -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: add')

run() { # label, extra h2load args...
  local label=$1; shift
  local out
  out=$(h2load -n "$N" -c "$C" -d "$work/body.json" "${H[@]}" "$@" 2>&1)
  local rps lat ok
  rps=$(grep -o 'finished in [^,]*, [0-9.]* req/s' <<<"$out" | grep -o '[0-9.]* req/s')
  lat=$(grep '^time for request' <<<"$out" | awk '{print "mean " $6 ", sd " $7}')
  ok=$(grep -o '[0-9]* succeeded' <<<"$out" | head -1)
  printf '| %-44s | %14s | %-24s | %s |\n' "$label" "$rps" "$lat" "$ok"
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r); date: $(date -u +%F)"
echo "N=$N requests, C=$C connections per run"
echo
echo "| path | rate | latency | succeeded |"
echo "|---|---|---|---|"
run "static backend direct, h1 (plain HTTP)" --h1 "http://$BACKEND/mcp"
run "static backend via mcp-edge, h1 over TLS" --h1 "https://127.0.0.1:$PROXY_PORT/mcp"
run "static backend via mcp-edge, h2 over TLS (m=10)" -m 10 "https://127.0.0.1:$PROXY_PORT/mcp"
run "rmcp demo backend direct, h1 (plain HTTP)" --h1 "$DEMO_BACKEND"
run "rmcp demo backend via mcp-edge, h1 over TLS" --h1 "https://127.0.0.1:$DEMO_PORT/mcp"
run "rmcp demo backend via mcp-edge, h2 over TLS" -m 10 "https://127.0.0.1:$DEMO_PORT/mcp"

rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
echo
before=$(rss "$PROXY_PID")
# Idle SSE streams: h2load holds $STREAMS GET streams open on 100 connections for 10 s.
timeout 30 h2load -n "$STREAMS" -c 100 -m $(( (STREAMS + 99) / 100 )) -D 10 \
  -H 'accept: text/event-stream' "https://127.0.0.1:$PROXY_PORT/mcp" >/dev/null 2>&1 &
loadpid=$!
sleep 6
during=$(rss "$PROXY_PID")
# Every relayed GET stream holds one upstream connection: count them to prove the streams are open.
open_streams=$(ss -Htn state established "( dport = :${BACKEND##*:} )" | wc -l)
wait "$loadpid" || true
echo "proxy RSS: idle ${before} KiB; with ${open_streams} SSE streams open (upstream connections counted) ${during} KiB; per stream ~$(( (during - before) / (open_streams > 0 ? open_streams : 1) )) KiB"
