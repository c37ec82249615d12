#!/usr/bin/env bash
# Before/after comparison of two mcp-edge builds, in one run, alternating: requests/s and proxy
# CPU per request on two routes (open; token auth + origin + policy), HTTP/1.1 and h2.
# Loopback only, bounded in count and time. Needs h2load (Debian nghttp2-client) and openssl.
# Start-up (test PKI, ES256 issuer with a JWKS file, token, config) is bench/lib/common.sh's.
#
#   bash bench/compare.sh BEFORE_BIN AFTER_BIN [STATIC_BACKEND_BIN]
#   ROUNDS=5 N=20000 C=32 M=10 bash bench/compare.sh target-a/release/mcp-edge target-b/release/mcp-edge
#
# Each build runs as its own proxy process (both idle except the one under load), in front of
# one shared static backend (bench/static_backend.rs). For every round, scenario and protocol
# both builds get one h2load run; the order alternates between rounds (odd rounds before
# first, even rounds after first). CPU per request is the utime+stime delta of the proxy
# process (/proc/PID/stat fields 14 and 15, clock ticks) over the h2load run divided by the
# requests that succeeded. Raw lines go to stdout (and $OUT/raw.tsv), then medians.
#
# OTLP=1 runs both builds with `[telemetry.otlp]` at sample_ratio 1.0, exporting every span to
# one loopback sink (bench/otlp_sink.py, on $OTLP_PORT): the cost of tracing between two builds
# (both must be built with `--features otel`).
#
# PERF=1 additionally records `perf record -g` of the AFTER proxy for $PERF_SECS s under
# auth+policy h1 load and prints `perf report --no-children` (top of it) to $OUT/perf-after.txt
# (and the same for BEFORE into perf-before.txt).
set -euo pipefail
BEFORE=${1:?usage: compare.sh BEFORE_BIN AFTER_BIN [STATIC_BACKEND_BIN]}
AFTER=${2:?usage: compare.sh BEFORE_BIN AFTER_BIN [STATIC_BACKEND_BIN]}
BACKEND_BIN=${3:-$(dirname "$BEFORE")/examples/static_backend}
N=${N:-20000}          # requests per h2load run
C=${C:-32}             # client connections
M=${M:-10}             # h2 streams per connection
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-2000} # requests per (build, scenario, protocol) before measuring
PERF=${PERF:-0}
OTLP=${OTLP:-0}
OTLP_PORT=${OTLP_PORT:-19480}
PERF_SECS=${PERF_SECS:-10}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
command -v h2load >/dev/null || { echo "install h2load: apt-get install nghttp2-client" >&2; exit 1; }
for b in "$BEFORE" "$AFTER" "$BACKEND_BIN"; do [ -x "$b" ] || { echo "not executable: $b" >&2; exit 1; }; done

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

BACKEND=127.0.0.1:${BACKEND_PORT:-19200}
PORT_BEFORE=${PORT_BEFORE:-18544}
PORT_AFTER=${PORT_AFTER:-18545}
# Both proxies claim the same public_url, so one token (aud = public_url + /mcp) fits both.
PUBLIC=https://localhost:$PORT_BEFORE

"$BACKEND_BIN" "$BACKEND" 1000 2>/dev/null & pids+=($!)

# Test PKI, ES256 issuer (JWKS file), token and the config under test: bench/lib/common.sh, as
# bench/run.sh. Route /open: no auth; route /mcp: token + Origin + policy.
source "$(dirname "$0")/lib/common.sh"
export BENCH_PUBLIC=$PUBLIC
bench_pki "$work/pki"
ORIGIN=$BENCH_ORIGIN
EXTRA=""
if [ "$OTLP" = 1 ]; then
  command -v python3 >/dev/null || { echo "OTLP=1 needs python3 (bench/otlp_sink.py)" >&2; exit 1; }
  python3 "$(dirname "$0")/otlp_sink.py" "127.0.0.1:$OTLP_PORT" "$OUT/otlp.stats" & pids+=($!)
  bench_wait_port "$OTLP_PORT"
  EXTRA="[telemetry.otlp]
endpoint = \"http://127.0.0.1:$OTLP_PORT\"
protocol = \"http/protobuf\"
sample_ratio = 1.0"
fi
config() { # port
  bench_edge_config "$1" "$BACKEND" "$work/pki" "$work/pki/jwks.json" "$EXTRA"
}
config "$PORT_BEFORE" >"$work/before.toml"
config "$PORT_AFTER" >"$work/after.toml"
"$BEFORE" check --config "$work/before.toml" >"$OUT/check-before.txt" 2>&1 || { cat "$OUT/check-before.txt" >&2; exit 1; }
"$AFTER" check --config "$work/after.toml" >"$OUT/check-after.txt" 2>&1 || { cat "$OUT/check-after.txt" >&2; exit 1; }

"$BEFORE" run --config "$work/before.toml" 2>"$OUT/proxy-before.err" & pids+=($!); PID_before=$!
"$AFTER" run --config "$work/after.toml" 2>"$OUT/proxy-after.err" & pids+=($!); PID_after=$!
for port in "$PORT_BEFORE" "$PORT_AFTER"; do bench_wait_port "$port"; done

printf '%s' "$BENCH_BODY" >"$work/body.json"
H=("${BENCH_H[@]}")
H_AUTH=(-H "authorization: Bearer $TOKEN" -H "origin: $ORIGIN")

url() { # build scenario
  local port; [ "$1" = before ] && port=$PORT_BEFORE || port=$PORT_AFTER
  [ "$2" = open ] && echo "https://127.0.0.1:$port/open" || echo "https://127.0.0.1:$port/mcp"
}
load_args() { # scenario proto
  local a=(-d "$work/body.json" "${H[@]}")
  [ "$1" = auth ] && a+=("${H_AUTH[@]}")
  [ "$2" = h1 ] && a+=(--h1) || a+=(-m "$M")
  printf '%s\n' "${a[@]}"
}
ticks() { bench_ticks "$1"; }  # utime+stime (fields 14, 15)
HZ=$(getconf CLK_TCK)

# Every request must succeed on every build before anything is timed.
for b in before after; do
  for s in open auth; do
    mapfile -t A < <(load_args "$s" h1)
    out=$(h2load -n 10 -c 1 "${A[@]}" "$(url $b $s)" 2>&1)
    grep -q 'status codes: 10 2xx' <<<"$out" || { echo "smoke test failed: $b $s" >&2; echo "$out" >&2; exit 1; }
  done
  # The auth route really checks: no token is 401, a tool the rule does not grant is 403.
  u=$(url $b auth)
  code=$(curl -sk -o /dev/null -w '%{http_code}' "${H[@]}" -H "origin: $ORIGIN" --data-binary @"$work/body.json" "$u")
  [ "$code" = 401 ] || { echo "expected 401 without a token from $b, got $code" >&2; exit 1; }
  sed 's/"name":"add"/"name":"sub"/' "$work/body.json" >"$work/body-sub.json"
  code=$(curl -sk -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28' \
    -H 'mcp-method: tools/call' -H 'mcp-name: sub' "${H_AUTH[@]}" --data-binary @"$work/body-sub.json" "$u")
  [ "$code" = 403 ] || { echo "expected 403 for a tool outside the policy from $b, got $code" >&2; exit 1; }
done

one() { # build scenario proto n -> prints "rps ok ticks"
  local b=$1 s=$2 p=$3 n=$4 pid out t0 t1 rps ok
  [ "$b" = before ] && pid=$PID_before || pid=$PID_after
  mapfile -t A < <(load_args "$s" "$p")
  t0=$(ticks "$pid")
  out=$(h2load -n "$n" -c "$C" "${A[@]}" "$(url "$b" "$s")" 2>&1)
  t1=$(ticks "$pid")
  rps=$(grep -o 'finished in [^,]*, [0-9.]* req/s' <<<"$out" | grep -o '[0-9.]* req/s' | cut -d' ' -f1)
  ok=$(grep -o '[0-9]* succeeded' <<<"$out" | head -1 | cut -d' ' -f1)
  grep -q "status codes: $ok 2xx" <<<"$out" || { echo "non-2xx answers: $b $s $p" >&2; echo "$out" >&2; exit 1; }
  echo "$rps $ok $((t1 - t0))"
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r); date: $(date -u '+%F %T') UTC"
echo "before: $BEFORE ($("$BEFORE" --version 2>/dev/null || true))"
echo "after:  $AFTER ($("$AFTER" --version 2>/dev/null || true))"
echo "N=$N C=$C M=$M ROUNDS=$ROUNDS CLK_TCK=$HZ; load at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for b in before after; do for s in open auth; do for p in h1 h2; do one "$b" "$s" "$p" "$WARMUP" >/dev/null; done; done; done

printf 'round\tscenario\tproto\tbuild\treq_s\tsucceeded\tcpu_ticks\tcpu_us_per_req\tload1\n' | tee "$OUT/raw.tsv"
for r in $(seq "$ROUNDS"); do
  if (( r % 2 )); then order=(before after); else order=(after before); fi
  for s in open auth; do
    for p in h1 h2; do
      for b in "${order[@]}"; do
        read -r rps ok tk < <(one "$b" "$s" "$p" "$N")
        us=$(awk -v t="$tk" -v hz="$HZ" -v n="$ok" 'BEGIN{printf "%.1f", t * 1e6 / hz / n}')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$p" "$b" "$rps" "$ok" "$tk" "$us" \
          "$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/raw.tsv"
      done
    done
  done
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$OTLP" = 1 ] && echo "OTLP sink (requests, bytes, other): $(cat "$OUT/otlp.stats" 2>/dev/null || echo none)"

echo
echo "| scenario | protocol | before req/s | after req/s | after/before | before CPU µs/req | after CPU µs/req | after/before |"
echo "|---|---|---|---|---|---|---|---|"
median() { bench_median; }
for s in open auth; do
  for p in h1 h2; do
    col() { awk -F'\t' -v s="$s" -v p="$p" -v b="$1" -v c="$2" '$2==s && $3==p && $4==b {print $c}' "$OUT/raw.tsv" | median; }
    rb=$(col before 5); ra=$(col after 5); cb=$(col before 8); ca=$(col after 8)
    awk -v s="$s" -v p="$p" -v rb="$rb" -v ra="$ra" -v cb="$cb" -v ca="$ca" \
      'BEGIN{printf "| %s | %s | %.0f | %.0f | %.3f | %.1f | %.1f | %.3f |\n", s, p, rb, ra, ra/rb, cb, ca, ca/cb}'
  done
done

if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
  for b in after before; do
    [ "$b" = before ] && pid=$PID_before || pid=$PID_after
    mapfile -t A < <(load_args auth h1)
    h2load -D $((PERF_SECS + 4)) -c "$C" "${A[@]}" "$(url "$b" auth)" >/dev/null 2>&1 & lp=$!
    sleep 2
    perf record -q -g -o "$OUT/perf-$b.data" -p "$pid" -- sleep "$PERF_SECS" >/dev/null 2>&1 || true
    wait "$lp" || true
    perf report -i "$OUT/perf-$b.data" --no-children --stdio 2>/dev/null | grep -v '^$' | head -200 >"$OUT/perf-$b.txt" || true
    perf report -i "$OUT/perf-$b.data" --no-children --stdio -g none --percent-limit 0.7 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -40 >"$OUT/perf-$b-flat.txt" || true
    echo; echo "perf ($b, auth+policy h1, ${PERF_SECS}s): top symbols, self time"; cat "$OUT/perf-$b-flat.txt"
  done
fi
echo; echo "raw results and logs in $OUT"
