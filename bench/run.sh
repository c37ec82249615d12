#!/usr/bin/env bash
# mcp-edge next to nginx, measured alternately in one run (issue 12). Loopback only, bounded in
# count and time; writes a dated section to bench/RESULTS.md.
#
#   bash bench/run.sh                      # every scenario (~20 min)
#   bash bench/run.sh --quick              # fewer rounds, shorter runs, smaller counts (< 2 min warm)
#   bash bench/run.sh --only keepalive,sse # a subset (names below)
#   bash bench/run.sh --only observability # issue 11: CPU/request with metrics off / on / OTLP
#   bash bench/run.sh --out /tmp/r.md      # write the section elsewhere
#   PIN=1 bash bench/run.sh                # proxies on CPU 1, clients and backend on CPU 0
#
# Scenarios (--only takes a comma-separated list):
#   keepalive   1. keep-alive tools/call POSTs: h1 (wrk + bench/lib/wrk_post.lua) and h2 (h2load),
#                  req/s and proxy CPU µs/request (mcp-edge also on its open route /open, to
#                  tell the bare path from auth + policy); then p50/p99/p99.9 at a fixed rate of half
#                  nginx's h1/h2 peak (h2load --rps with --log-file)
#   handshake   2. new TLS connections per second, full and resumed (bench_client handshake)
#   sse         3. per-event latency at 1 and 1,000 streams, direct vs each proxy; events/s at
#                  saturation (bench_client sse; the backend stamps each event's send time)
#   streams     4. 1,000 / 4,000 / 8,000 open SSE streams, one TLS connection each: RSS per
#                  stream, CPU while 1-per-second events flow, none lost
#   curve       5. the cost curve 10 -> 8,000 streams: event latency, request latency, RSS
#   rotation    6. certificate swap every second under keep-alive load: failed requests,
#                  mcp-edge (watches its files) vs nginx (`nginx -s reload` after each swap)
#   observability  (only when named) CPU/request of scenario 1 for mcp-edge with
#                  [metrics] enabled = false / true / + [telemetry.otlp] at sample_ratio 1.0
#
# What runs: bench/static_backend.rs (plain HTTP: JSON answer to POST, SSE to GET); nginx
# (bench/nginx/nginx.conf.in: TLS with the same ECDSA P-256 certificate, keep-alive upstream,
# proxy_buffering off, worker_processes auto); mcp-edge with the config of bench/lib/common.sh
# (route /mcp: ES256 JWT from a JWKS file, Origin check, Streamable HTTP inspection, one policy
# rule). Every client request carries the same token and Origin, to nginx too. The test PKI and
# the token are made at run time (bench_pki). Every load run must succeed (2xx) for >= 99% of
# its requests or the script stops: a harness that measures 401s measures nothing.
#
# CPU per request/handshake/event = utime+stime (/proc/PID/stat) of the proxy's processes only
# (nginx: master and every worker, summed) over the run / successful operations.
# Env: ROUNDS, DUR (s per keep-alive run), C (connections), M (h2 streams/connection), PIN;
# PERF=1 (PERF_SECS) adds a `perf record -g` of mcp-edge under the h1 load and its top 15.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/common.sh

QUICK=0; ONLY=""; OUTFILE=bench/RESULTS.md
while (( $# )); do
  case $1 in
    --quick) QUICK=1 ;;
    --only) ONLY=${2:?--only needs a list}; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    --out) OUTFILE=${2:?--out needs a file}; shift ;;
    --out=*) OUTFILE=${1#--out=} ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "usage: bench/run.sh [--quick] [--only SCENARIOS] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
ALL="keepalive handshake sse streams curve rotation"
SCEN=${ONLY:-$ALL}; SCEN=" ${SCEN//,/ } "
for s in $SCEN; do [[ " $ALL observability " == *" $s "* ]] || { echo "unknown scenario: $s (have: $ALL observability)" >&2; exit 2; }; done
want() { [[ "$SCEN" == *" $1 "* ]]; }

if (( QUICK )); then
  ROUNDS=${ROUNDS:-1}; DUR=${DUR:-2}; FIX_DUR=2; HS_DUR=1; SSE_HOLD=1.5; SAT_HOLD=1.5
  SWEEP_HOLD=2; PROBE_DUR=1; ROT_SECS=6; STREAMS_COUNTS="1000"; CURVE_COUNTS="1000"
else
  ROUNDS=${ROUNDS:-3}; DUR=${DUR:-8}; FIX_DUR=10; HS_DUR=4; SSE_HOLD=8; SAT_HOLD=5
  SWEEP_HOLD=10; PROBE_DUR=4; ROT_SECS=30; STREAMS_COUNTS="1000 4000 8000"; CURVE_COUNTS="10 100 1000 4000 8000"
fi
C=${C:-32}; M=${M:-10}
PIN=${PIN:-0}

bench_need h2load:nghttp2-client wrk:wrk nginx:nginx openssl:openssl xxd:xxd curl:curl python3:python3
bench_build --bin mcp-edge --example static_backend --example bench_client
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/mcp-edge
BACKEND_BIN=$TARGET/release/examples/static_backend
CLIENT=$TARGET/release/examples/bench_client
HZ=$(getconf CLK_TCK)

work=$(mktemp -d /tmp/mcp-edge-bench.XXXXXX)
pids=()
NGINX_MASTER=""
cleanup() {
  local p
  [ -n "$NGINX_MASTER" ] && kill -QUIT "$NGINX_MASTER" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -s "$work/FAILED" ] && { echo; echo "STOPPED: $(head -1 "$work/FAILED")"; echo "nothing was written to $OUTFILE"; } >&2
  echo "raw data and logs: $work"
}
trap cleanup EXIT
trap 'exit 130' INT; trap 'exit 1' TERM
# die works from command substitutions too: it records the reason and stops the main shell.
MAIN_PID=$$
die() {
  echo "bench/run.sh: $*" >&2
  echo "$*" >>"$work/FAILED"
  kill -TERM "$MAIN_PID" 2>/dev/null
  exit 1
}

BPORT=${BPORT:-19400}       # backend, plain HTTP
EPORT=${EPORT:-18744}       # mcp-edge
NPORT=${NPORT:-18745}       # nginx
EADMIN=${EADMIN:-19409}     # mcp-edge admin
BACKEND=127.0.0.1:$BPORT
export BENCH_PUBLIC=https://localhost:$EPORT

# Core layout: by default nothing is pinned; PIN=1 puts the proxies on CPU 1 and the load
# generators and the backend on CPU 0.
if [ "$PIN" = 1 ] && (( $(nproc) >= 2 )); then
  PX=(taskset -c 1); LD=(taskset -c 0)
  LAYOUT="pinned with taskset: proxy under test (mcp-edge, nginx master+workers) on CPU 1; load generators (wrk, h2load, bench_client) and the backend on CPU 0; $(nproc) CPUs"
else
  PX=(); LD=()
  LAYOUT="nothing pinned: load generator, proxy and backend share all $(nproc) CPUs (0-$(( $(nproc) - 1 )))"
fi

# ── Output ────────────────────────────────────────────────────────────────────────────────
SECTION=$work/section.md
: >"$SECTION"
md() { printf '%s\n' "$*" | tee -a "$SECTION"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0 == 0 || a == "nan" || b == "nan") print "—"; else printf "%.2f×", a/b }'; }
fmt0() { awk -v a="$1" 'BEGIN{ if (a == "nan" || a == "") print "—"; else printf "%.0f", a }'; }
fmt1() { awk -v a="$1" 'BEGIN{ if (a == "nan" || a == "") print "—"; else printf "%.1f", a }'; }
dash() { [ "$1" = nan ] && echo — || echo "$1"; }
ms() { awk -v a="$1" 'BEGIN{ if (a == "nan" || a == "") print "—"; else printf "%.2f", a/1000 }'; }

# ── Start-up ──────────────────────────────────────────────────────────────────────────────
bench_pki "$work/pki"
printf '%s' "$BENCH_BODY" >"$work/body.json"
printf '%s\n' "${BENCH_H[@]}" | grep -v '^-H$' >"$work/headers.txt"
printf 'authorization: Bearer %s\norigin: %s\n' "$TOKEN" "$BENCH_ORIGIN" >>"$work/headers.txt"
H_ALL=(); while IFS= read -r l; do H_ALL+=(-H "$l"); done <"$work/headers.txt"
export BENCH_BODY_FILE=$work/body.json BENCH_HEADERS_FILE=$work/headers.txt

# The certificate each proxy serves sits in a directory of its own, behind a `..data` symlink
# (the Kubernetes atomic-writer layout), so scenario 6 can swap cert and key in one rename.
tls_dir_init() { # DIR
  mkdir -p "$1/gen-0"
  cp "$work/pki/server.pem" "$work/pki/server.key" "$1/gen-0/"
  ln -s gen-0 "$1/..data"
  ln -s ..data/server.pem "$1/server.pem"; ln -s ..data/server.key "$1/server.key"
}
tls_dir_init "$work/tls-edge"; tls_dir_init "$work/tls-nginx"

"${LD[@]}" "$BACKEND_BIN" "$BACKEND" 1000 2>"$work/backend.err" & pids+=($!)
BACKEND_PID=$!
bench_wait_port "$BPORT"

edge_config() { # PORT ADMIN_PORT [EXTRA]
  bench_edge_config "$1" "$BACKEND" "$work/tls-edge" "$work/pki/jwks.json" "[admin]
bind = \"127.0.0.1:$2\"
${3:-}"
}
start_edge() { # CONFIG LOG -> EDGE_PID
  "$BIN" check --config "$1" >"$2.check" 2>&1 || { cat "$2.check" >&2; die "mcp-edge check refused $1"; }
  "${PX[@]}" "$BIN" run --config "$1" 2>"$2" & pids+=($!)
  EDGE_PID=$!
}
edge_config "$EPORT" "$EADMIN" >"$work/edge.toml"

nginx_conf() {
  mkdir -p "$work/nginx/tmp" "$work/nginx/logs"
  sed -e "s#@PREFIX@#$work/nginx#g" -e "s#@PORT@#$NPORT#g" -e "s#@BACKEND@#$BACKEND#g" \
      -e "s#@CERT@#$work/tls-nginx/server.pem#g" -e "s#@KEY@#$work/tls-nginx/server.key#g" \
      bench/nginx/nginx.conf.in >"$work/nginx/nginx.conf"
  nginx -t -q -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx/test.err" \
    || { cat "$work/nginx/test.err" >&2; die "nginx -t refused the config"; }
}
start_nginx() {
  "${PX[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>>"$work/nginx/stderr" &
  NGINX_MASTER=$!
  bench_wait_port "$NPORT"
}
stop_nginx() {
  [ -n "$NGINX_MASTER" ] || return 0
  kill -QUIT "$NGINX_MASTER" 2>/dev/null || true
  wait "$NGINX_MASTER" 2>/dev/null || true
  NGINX_MASTER=""
}
stop_edge() { kill "$EDGE_PID" 2>/dev/null || true; wait "$EDGE_PID" 2>/dev/null || true; }
nginx_pids() { echo "$NGINX_MASTER" $(pgrep -P "$NGINX_MASTER" 2>/dev/null || true); }
proxy_pids() { # TARGET
  case $1 in
    edge*) echo "$EDGE_PID" ;;
    nginx) nginx_pids ;;
    direct) echo "" ;;
  esac
}
fdcount() { local p n=0; for p in "$@"; do n=$((n + $(ls "/proc/$p/fd" 2>/dev/null | wc -l))); done; echo "$n"; }

nginx_conf
start_edge "$work/edge.toml" "$work/edge.log"
start_nginx
bench_wait_port "$EPORT"

url() { # TARGET [PROTO-less path suffix]
  case $1 in
    direct) echo "http://127.0.0.1:$BPORT/mcp${2:-}" ;;
    nginx) echo "https://127.0.0.1:$NPORT/mcp${2:-}" ;;
    edge-open) echo "https://127.0.0.1:$EPORT/open${2:-}" ;;
    edge*) echo "https://127.0.0.1:${EDGE_PORT_OF[$1]:-$EPORT}/mcp${2:-}" ;;
  esac
}
sse_url() { # TARGET QUERY
  case $1 in
    direct) echo "http://localhost:$BPORT/mcp?$2" ;;
    nginx) echo "https://localhost:$NPORT/mcp?$2" ;;
    edge*) echo "https://localhost:${EDGE_PORT_OF[$1]:-$EPORT}/mcp?$2" ;;
  esac
}
declare -A EDGE_PORT_OF=()

# ── Smoke tests: every path answers 200; mcp-edge really checks token, Origin and policy ──
curl_code() { curl -sk -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }
for t in direct nginx edge; do
  code=$(curl_code "${H_ALL[@]}" --data-binary @"$work/body.json" "$(url $t)")
  [ "$code" = 200 ] || die "smoke test: POST via $t answered $code, not 200 (logs in $work)"
done
H_NOAUTH=(); for h in "${BENCH_H[@]}"; do H_NOAUTH+=("$h"); done
code=$(curl_code "${H_NOAUTH[@]}" -H "origin: $BENCH_ORIGIN" --data-binary @"$work/body.json" "$(url edge)")
[ "$code" = 401 ] || die "smoke test: mcp-edge without a token answered $code, not 401: auth is not on"
code=$(curl_code "${H_NOAUTH[@]}" -H "authorization: Bearer $TOKEN" -H "origin: https://evil.example" --data-binary @"$work/body.json" "$(url edge)")
[ "$code" = 403 ] || die "smoke test: mcp-edge with a foreign Origin answered $code, not 403: the Origin check is not on"
sed 's/"name":"add"/"name":"sub"/' "$work/body.json" >"$work/body-sub.json"
code=$(curl_code -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
  -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: sub' \
  -H "authorization: Bearer $TOKEN" -H "origin: $BENCH_ORIGIN" --data-binary @"$work/body-sub.json" "$(url edge)")
[ "$code" = 403 ] || die "smoke test: mcp-edge answered $code, not 403, for a tool outside the policy: the policy is not on"
for t in direct nginx edge; do
  out=$(timeout 10 "$CLIENT" sse "$(sse_url $t 'ts=1&every_ms=50')" --streams 1 --hold 0.3 --ca "$work/pki/ca.pem" \
    -H "authorization: Bearer $TOKEN" -H "origin: $BENCH_ORIGIN" -H "mcp-protocol-version: 2026-07-28" 2>&1 | tail -1)
  grep -q '"streams_ok":1,' <<<"$out" && ! grep -q '"events":0,' <<<"$out" \
    || die "smoke test: no SSE events via $t: $out"
done
echo "smoke tests passed: 200 on every path; mcp-edge 401 without token, 403 foreign Origin, 403 tool outside policy; SSE events on every path"

# ── Load helpers ──────────────────────────────────────────────────────────────────────────
# wrk_run TARGET SECS -> "rps ok ticks p50_us p99_us p999_us"; aborts above 1% errors.
wrk_run() {
  local t=$1 secs=$2 pp t0 t1 out line req dur se ce re we te p50 p99 p999 ok err
  pp=$(proxy_pids "$t"); t0=$(bench_ticks $pp)
  out=$("${LD[@]}" wrk -t1 -c"$C" -d"${secs}s" --timeout 5s -s bench/lib/wrk_post.lua "$(url "$t")" 2>&1) || true
  t1=$(bench_ticks $pp)
  echo "$out" >>"$work/wrk.log"
  line=$(grep '^WRK ' <<<"$out") || die "wrk gave no result via $t: $out"
  eval "$(sed 's/^WRK //; s/\([a-z0-9_]*\)=/local \1=/g' <<<"$line")"
  ok=$((requests - status_errors)); err=$((status_errors + connect + read + write + timeout))
  (( ok > 0 && err * 100 <= requests )) || die "wrk via $t: $err errors in $requests requests (non-2xx $status_errors, socket $connect/$read/$write/$timeout): over 1%, stopping"
  awk -v ok="$ok" -v d="$duration_us" -v tk=$((t1 - t0)) -v a="$p50" -v b="$p99" -v c="$p999" \
    'BEGIN{printf "%.0f %d %d %d %d %d\n", ok/(d/1e6), ok, tk, a, b, c}'
}
# h2_run TARGET PROTO SECS [extra h2load args] -> "rps ok ticks"; aborts above 1% non-2xx.
h2_run() {
  local t=$1 p=$2 secs=$3; shift 3
  local pp t0 t1 out rps ok done_ a=()
  [ "$p" = h1 ] && a+=(--h1) || a+=(-m "$M")
  pp=$(proxy_pids "$t"); t0=$(bench_ticks $pp)
  out=$("${LD[@]}" h2load -D "$secs" -c "$C" "${a[@]}" -d "$work/body.json" "${H_ALL[@]}" "$@" "$(url "$t")" 2>&1) || true
  t1=$(bench_ticks $pp)
  echo "$out" >>"$work/h2load.log"
  done_=$(grep -o '[0-9][0-9]* done' <<<"$out" | head -1 | cut -d' ' -f1)
  ok=$(grep -o 'status codes: [0-9]* 2xx' <<<"$out" | grep -o '[0-9]* 2xx' | cut -d' ' -f1)
  rps=$(awk -v ok="${ok:-0}" -v s="$secs" 'BEGIN{printf "%.0f", ok/s}')
  (( ${ok:-0} > 0 && (${done_:-0} - ok) * 100 <= ${done_:-0} )) \
    || die "h2load $p via $t: ${ok:-0} of ${done_:-0} requests answered 2xx: over 1% failed, stopping. $(grep -E 'status codes|requests:' <<<"$out" | tr '\n' ' ')"
  echo "$rps $ok $((t1 - t0))"
}
us_per() { awk -v tk="$1" -v n="$2" -v hz="$HZ" 'BEGIN{ if (n > 0) printf "%.1f", tk * 1e6 / hz / n; else print "nan" }'; }
# Percentiles (µs) of the 2xx requests of an h2load --log-file: "p50 p99 p999 n".
log_pcts() {
  awk -F'\t' '$2 >= 200 && $2 < 300 {print $3}' "$1" | sort -n | awk '{v[NR]=$1} END{
    if (!NR) { print "nan nan nan 0"; exit }
    i50=int(NR*0.50+0.5); i99=int(NR*0.99+0.5); i999=int(NR*0.999+0.5)
    if (i50<1) i50=1; if (i99<1) i99=1; if (i999<1) i999=1; if (i999>NR) i999=NR
    print v[i50], v[i99], v[i999], NR }'
}
alternate() { # ROUND A B...: the targets in the round's order (rotated by one each round)
  local r=$1; shift; local a=("$@") n=$#; local i
  for ((i = 0; i < n; i++)); do printf '%s ' "${a[$(( (i + r) % n ))]}"; done
}

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%F %T')
T_START=$SECONDS
echo "machine: $(bench_machine); commit $(bench_commit); load average at start: $START_LOAD"
echo "core layout: $LAYOUT"
echo "raw data: $work"

# ── 1. keep-alive tools/call ──────────────────────────────────────────────────────────────
declare -A MED=()
s1_peaks() { # TARGETS... : fills $work/s1.tsv and MED[target.proto.{rps,us}]
  local targets=("$@") r p t rps ok tk p50 p99 p999
  printf 'round\tproto\ttarget\treq_s\tok\tticks\tcpu_us_per_req\n' >"$work/s1.tsv"
  # Warm-up: upstream pools filled, code paths hot.
  for t in "${targets[@]}"; do
    if (( QUICK )); then "${LD[@]}" h2load -n 500 -c "$C" -m "$M" -d "$work/body.json" "${H_ALL[@]}" "$(url "$t")" >/dev/null 2>&1 || true
    else wrk_run "$t" 1 >/dev/null; h2_run "$t" h2 1 >/dev/null; fi
  done
  for r in $(seq "$ROUNDS"); do
    for p in h1 h2; do
      for t in $(alternate "$r" "${targets[@]}"); do
        if [ "$p" = h1 ]; then read -r rps ok tk p50 p99 p999 < <(wrk_run "$t" "$DUR")
        else read -r rps ok tk < <(h2_run "$t" h2 "$DUR"); fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$p" "$t" "$rps" "$ok" "$tk" "$( [ "$t" = direct ] && echo nan || us_per "$tk" "$ok")" >>"$work/s1.tsv"
        echo "  round $r $p $t: $rps req/s$( [ "$t" = direct ] || echo ", $(us_per "$tk" "$ok") µs CPU/req")"
      done
    done
  done
  for t in "${targets[@]}"; do for p in h1 h2; do
    MED[$t.$p.rps]=$(awk -F'\t' -v t="$t" -v p="$p" '$3==t && $2==p {print $4}' "$work/s1.tsv" | bench_median)
    MED[$t.$p.us]=$(awk -F'\t' -v t="$t" -v p="$p" '$3==t && $2==p && $7!="nan" {print $7}' "$work/s1.tsv" | bench_median)
  done; done
}

if want keepalive; then
  echo; echo "== 1. keep-alive tools/call: $ROUNDS round(s) of ${DUR}s per target and protocol"
  s1_peaks direct nginx edge edge-open
  declare -A FIX=()
  for p in h1 h2; do
    rate=$(awk -v r="${MED[nginx.$p.rps]}" 'BEGIN{printf "%d", r/2}')
    per=$(awk -v r="$rate" -v c="$C" 'BEGIN{v=int(r/c); if (v<1) v=1; print v}')
    FIX[$p.rate]=$((per * C))
    for t in $(alternate 1 direct nginx edge); do
      a=(); [ "$p" = h1 ] && a+=(--h1) || a+=(-m "$M")
      rm -f "$work/fix-$p-$t.log"
      out=$("${LD[@]}" h2load -D "$FIX_DUR" -c "$C" "${a[@]}" --rps "$per" --log-file "$work/fix-$p-$t.log" \
        -d "$work/body.json" "${H_ALL[@]}" "$(url "$t")" 2>&1) || true
      echo "$out" >>"$work/h2load-fixed.log"
      read -r a50 a99 a999 n < <(log_pcts "$work/fix-$p-$t.log")
      started=$(grep -o '[0-9][0-9]* done' <<<"$out" | head -1 | cut -d' ' -f1)
      (( n > 0 && (${started:-0} - n) * 100 <= ${started:-0} )) || die "fixed rate $p via $t: $n of ${started:-0} answered 2xx"
      FIX[$p.$t]="$a50 $a99 $a999 $n"
      echo "  fixed $((per * C)) req/s $p $t: p50 $(ms "$a50") ms, p99 $(ms "$a99") ms, p99.9 $(ms "$a999") ms ($n requests)"
    done
  done
fi

# PERF=1: where mcp-edge's CPU goes under the h1 keep-alive load (auth + origin + policy route).
if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
  echo; echo "== perf: mcp-edge under wrk h1 load, ${PERF_SECS:-8}s"
  "${LD[@]}" wrk -t1 -c"$C" -d"$(( ${PERF_SECS:-8} + 3 ))s" -s bench/lib/wrk_post.lua "$(url edge)" >"$work/perf-wrk.out" 2>&1 & lp=$!
  sleep 1
  perf record -q -g -o "$work/perf.data" -p "$EDGE_PID" -- sleep "${PERF_SECS:-8}" >/dev/null 2>&1 || true
  wait "$lp" || true
  perf report -i "$work/perf.data" --no-children --stdio -g none --percent-limit 0.3 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -15 >"$work/perf-top15.txt" || true
  cat "$work/perf-top15.txt"
fi

# ── 2. new TLS connections per second ──────────────────────────────────────────────────────
if want handshake; then
  echo; echo "== 2. TLS handshakes: $ROUNDS round(s) of ${HS_DUR}s, full and resumed"
  printf 'round\tkind\ttarget\tper_s\tfull\tresumed\tfailed\tticks\tcpu_us_per_hs\n' >"$work/s2.tsv"
  port_of() { [ "$1" = nginx ] && echo "$NPORT" || echo "$EPORT"; }
  for r in $(seq "$ROUNDS"); do
    for kind in full resumed; do
      for t in $(alternate "$r" nginx edge); do
        ra=(); [ "$kind" = resumed ] && ra=(--resume)
        pp=$(proxy_pids "$t"); t0=$(bench_ticks $pp)
        j=$("${LD[@]}" "$CLIENT" handshake "127.0.0.1:$(port_of "$t")" --secs "$HS_DUR" --concurrency 8 --ca "$work/pki/ca.pem" "${ra[@]}")
        t1=$(bench_ticks $pp)
        read -r per f rs fl < <(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["per_s"], d["full"], d["resumed"], d["failed"])' "$j")
        (( f + rs > 0 && fl * 100 <= f + rs )) || die "handshakes via $t: $fl failed of $((f + rs))"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$kind" "$t" "$per" "$f" "$rs" "$fl" $((t1 - t0)) "$(us_per $((t1 - t0)) $((f + rs)))" >>"$work/s2.tsv"
        echo "  round $r $kind $t: $per/s (full $f, resumed $rs, failed $fl), $(us_per $((t1 - t0)) $((f + rs))) µs CPU/handshake"
      done
    done
  done
fi

# ── 3. SSE per-event latency ──────────────────────────────────────────────────────────────
SSE_H=(-H "authorization: Bearer $TOKEN" -H "origin: $BENCH_ORIGIN" -H "mcp-protocol-version: 2026-07-28")
# wait_ready OUT PID: until bench_client printed READY (3 min at most, or until it is gone).
wait_ready() {
  local i
  for ((i = 0; i < 1800; i++)); do
    grep -q '^READY' "$1" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  sleep 0.2; grep -q '^READY' "$1" 2>/dev/null
}
# sse_run TARGET STREAMS QUERY HOLD [TAG] -> JSON line of bench_client, plus "ticks rss" in $work/sse-TAG.proc
sse_run() {
  local t=$1 n=$2 q=$3 hold=$4 tag=${5:-x} pp out t0 t1 rss i
  pp=$(proxy_pids "$t")
  out=$work/sse-$tag-$t-$n.out
  "${LD[@]}" "$CLIENT" sse "$(sse_url "$t" "$q")" --streams "$n" --hold "$hold" --settle "$(awk -v n="$n" -v q="$QUICK" 'BEGIN{print (n >= 1000 ? (q ? 1 : 2) : 0.5)}')" --ca "$work/pki/ca.pem" "${SSE_H[@]}" \
    >"$out" 2>"$out.err" &
  local cp=$!
  wait_ready "$out" "$cp" || die "bench_client sse via $t ($n streams) never got ready: $(tail -3 "$out.err")"
  t0=$(bench_ticks $pp); sleep "$hold"; t1=$(bench_ticks $pp); rss=$(bench_rss $pp)
  wait "$cp" || die "bench_client sse via $t failed: $(tail -3 "$out.err")"
  echo "$((t1 - t0)) $rss" >"$out.proc"
  tail -1 "$out"
}
jget() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(" ".join(str(d[k]) for k in sys.argv[2:]))' "$@"; }

if want sse; then
  echo; echo "== 3. SSE per-event latency ($ROUNDS round(s))"
  printf 'round\tcase\ttarget\tstreams\tok\tevents_per_s\tp50_us\tp99_us\tp999_us\tended_early\tticks\tcpu_us_per_event\tclient_cpu_pct\n' >"$work/s3.tsv"
  for r in $(seq "$ROUNDS"); do
    for cs in "1 every_ms=10 one" "1000 every_ms=200 thousand" "50 every_ms=1 saturation"; do
      read -r n q name <<<"$cs"
      hold=$SSE_HOLD; [ "$name" = saturation ] && hold=$SAT_HOLD
      for t in $(alternate "$r" direct nginx edge); do
        j=$(sse_run "$t" "$n" "ts=1&$q" "$hold" "$name")
        read -r ok eps p50 p99 p999 early ev ccpu retr < <(jget "$j" streams_ok events_per_s lat_us_p50 lat_us_p99 lat_us_p999 ended_early events client_cpu_pct open_retries)
        RETRIES=$(( ${RETRIES:-0} + retr ))
        (( ok == n && early == 0 )) || die "SSE $name via $t: $ok of $n streams opened, $early ended early"
        read -r tk _ <"$work/sse-$name-$t-$n.out.proc"
        cpe=$( [ "$t" = direct ] && echo nan || us_per "$tk" "$ev")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$t" "$n" "$ok" "$eps" "$p50" "$p99" "$p999" "$early" "$tk" "$cpe" "$ccpu" >>"$work/s3.tsv"
        echo "  round $r $name ($n streams, $q) $t: $eps events/s, p50 $(ms "$p50") ms, p99 $(ms "$p99") ms, CPU $cpe µs/event"
      done
    done
  done
fi

# ── 4 + 5. open streams: RSS per stream, CPU, none lost; the cost curve ──────────────────────
SWEEP=""
want streams && SWEEP="$SWEEP $STREAMS_COUNTS"
want curve && SWEEP="$SWEEP $CURVE_COUNTS"
SWEEP=$(tr " " "\n" <<<"$SWEEP" | { grep . || true; } | sort -n | uniq | tr "\n" " ")
if [ -n "$SWEEP" ]; then
  echo; echo "== 4/5. open SSE streams: $SWEEP (one TLS connection each, 1 event/s each, ${SWEEP_HOLD}s measured)"
  # Fresh proxies, so the idle baseline is not inflated by the earlier scenarios' buffers.
  stop_edge; stop_nginx
  start_edge "$work/edge.toml" "$work/edge-sweep.log"; start_nginx; bench_wait_port "$EPORT"
  for t in nginx edge; do curl_code "${H_ALL[@]}" --data-binary @"$work/body.json" "$(url $t)" >/dev/null; done
  sleep 1
  declare -A BASE=() BASEFD=()
  for t in nginx edge; do pp=$(proxy_pids $t); BASE[$t]=$(bench_rss $pp); BASEFD[$t]=$(fdcount $pp); done
  echo "  idle RSS: nginx ${BASE[nginx]} KiB ($(wc -w <<<"$(nginx_pids)") processes), mcp-edge ${BASE[edge]} KiB"
  printf 'step\ttarget\tstreams\tok\tended_early\tmin_events\tevents_per_s\tp50_us\tp99_us\tmax_gap_p99_us\trss_kib\trss_per_stream_kib\tcpu_pct\tcpu_us_per_event\treq_p50_us\treq_p99_us\n' >"$work/s45.tsv"
  step=0
  for n in $SWEEP; do
    step=$((step + 1))
    for t in $(alternate "$step" direct nginx edge); do
      (( n > 4000 )) && [ "$t" = direct ] && (( QUICK )) && continue
      pp=$(proxy_pids "$t")
      # Hold long enough for the CPU window and then the request probe, streams still open.
      hold=$(awk -v a="$SWEEP_HOLD" -v b="$PROBE_DUR" 'BEGIN{print a + b + 1}')
      out=$work/sweep-$t-$n.out
      "${LD[@]}" "$CLIENT" sse "$(sse_url "$t" 'ts=1&every_ms=1000')" --streams "$n" --hold "$hold" --settle 1.5 \
        --ca "$work/pki/ca.pem" "${SSE_H[@]}" >"$out" 2>"$out.err" &
      cp=$!
      wait_ready "$out" "$cp" || die "bench_client: $n streams via $t never got ready: $(tail -3 "$out.err")"
      t0=$(bench_ticks $pp); sleep "$SWEEP_HOLD"; t1=$(bench_ticks $pp); rss=$(bench_rss $pp)
      # Request latency with the streams open: h2load --rps, 4 connections x 50 req/s, h1.
      rm -f "$work/probe-$t-$n.log"
      "${LD[@]}" h2load --h1 -D "$PROBE_DUR" -c 4 --rps 50 --log-file "$work/probe-$t-$n.log" -d "$work/body.json" \
        "${H_ALL[@]}" "$(url "$t")" >>"$work/h2load-probe.log" 2>&1 || true
      read -r q50 q99 _ qn < <(log_pcts "$work/probe-$t-$n.log")
      wait "$cp" || die "bench_client via $t ($n streams) failed: $(tail -3 "$out.err")"
      j=$(tail -1 "$out")
      read -r ok early mine eps p50 p99 gap ev retr < <(jget "$j" streams_ok ended_early min_events_per_stream events_per_s lat_us_p50 lat_us_p99 max_gap_us_p99 events open_retries)
      RETRIES=$(( ${RETRIES:-0} + retr ))
      if [ "$t" = direct ]; then rss=nan; per=nan; cpu=nan; cpe=nan
      else
        per=$(awk -v a="$rss" -v b="${BASE[$t]}" -v n="$n" 'BEGIN{printf "%.1f", (a-b)/n}')
        cpu=$(awk -v tk=$((t1 - t0)) -v hz="$HZ" -v s="$SWEEP_HOLD" 'BEGIN{printf "%.1f", tk*100/hz/s}')
        cpe=$(us_per $((t1 - t0)) "$ev")
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$step" "$t" "$n" "$ok" "$early" "$mine" "$eps" "$p50" "$p99" "$gap" "$rss" "$per" "$cpu" "$cpe" "$q50" "$q99" >>"$work/s45.tsv"
      echo "  $n streams $t: $ok open, $early ended early, min $mine events/stream, event p50 $(ms "$p50") p99 $(ms "$p99") ms, max gap p99 $(ms "$gap") ms, RSS $rss KiB ($per KiB/stream), CPU $cpu%, request p50 $(ms "$q50") p99 $(ms "$q99") ms"
      (( ok == n )) || die "$n streams via $t: only $ok opened"
      # Let the closed streams drain before the next step (fds back near the idle count).
      if [ "$t" != direct ]; then
        for i in $(seq 100); do (( $(fdcount $pp) <= ${BASEFD[$t]} + 64 )) && break; sleep 0.2; done
      else sleep 1; fi
    done
  done
fi

# ── 6. certificate rotation under load ───────────────────────────────────────────────────
serial_of() { openssl x509 -noout -serial -in "$1" | cut -d= -f2; }
served_serial() { # PORT
  timeout 3 openssl s_client -connect "127.0.0.1:$1" -servername localhost </dev/null 2>/dev/null \
    | openssl x509 -noout -serial 2>/dev/null | cut -d= -f2
}
swap_cert() { # DIR GEN PAIR(server|server-b): atomic switch of ..data to a new generation
  mkdir -p "$1/gen-$2"
  cp "$work/pki/$3.pem" "$1/gen-$2/server.pem"; cp "$work/pki/$3.key" "$1/gen-$2/server.key"
  ln -sfn "gen-$2" "$1/..data.tmp"; mv -T "$1/..data.tmp" "$1/..data"
}
if want rotation; then
  echo; echo "== 6. certificate swap every second for ${ROT_SECS}s under keep-alive load (wrk h1 c=$C + h2load h2 c=8 m=$M)"
  printf 'target\th1_requests\th1_ok\th1_errors\th2_requests\th2_ok\th2_failed\tswaps\tserved_new\n' >"$work/s6.tsv"
  SA=$(serial_of "$work/pki/server.pem"); SB=$(serial_of "$work/pki/server-b.pem")
  gen=0
  for t in $(alternate 1 nginx edge); do
    [ "$t" = nginx ] && dir=$work/tls-nginx port=$NPORT || dir=$work/tls-edge port=$EPORT
    secs=$((ROT_SECS + 2))
    "${LD[@]}" wrk -t1 -c"$C" -d"${secs}s" --timeout 5s -s bench/lib/wrk_post.lua "$(url "$t")" >"$work/rot-$t-wrk.out" 2>&1 &
    wp=$!
    "${LD[@]}" h2load -D "$secs" -c 8 -m "$M" -d "$work/body.json" "${H_ALL[@]}" "$(url "$t")" >"$work/rot-$t-h2.out" 2>&1 &
    hp=$!
    sleep 1
    swaps=0; newok=0
    for i in $(seq "$ROT_SECS"); do
      gen=$((gen + 1))
      if (( i % 2 )); then pair=server-b; want_serial=$SB; else pair=server; want_serial=$SA; fi
      swap_cert "$dir" "$gen" "$pair"
      [ "$t" = nginx ] && nginx -s reload -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>>"$work/nginx/reload.err"
      swaps=$((swaps + 1))
      sleep 0.7
      [ "$(served_serial "$port")" = "$want_serial" ] && newok=$((newok + 1))
      sleep 0.25
    done
    wait "$wp" || true; wait "$hp" || true
    line=$(grep '^WRK ' "$work/rot-$t-wrk.out") || die "wrk gave no result in the rotation run via $t"
    eval "$(sed 's/^WRK //; s/\([a-z0-9_]*\)=/\1=/g' <<<"$line")"
    h1err=$((status_errors + connect + read + write + timeout))
    # done (answered or failed); requests still in flight when h2load stops are not counted.
    h2req=$(grep -o '[0-9][0-9]* done' "$work/rot-$t-h2.out" | head -1 | cut -d' ' -f1)
    h2ok=$(grep -o 'status codes: [0-9]* 2xx' "$work/rot-$t-h2.out" | grep -o '[0-9]* 2xx' | cut -d' ' -f1)
    h2fail=$(( ${h2req:-0} - ${h2ok:-0} ))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$requests" $((requests - status_errors)) "$h1err" "${h2req:-0}" "${h2ok:-0}" "$h2fail" "$swaps" "$newok" >>"$work/s6.tsv"
    echo "  $t: h1 $requests requests, $h1err errors (non-2xx $status_errors, socket connect/read/write/timeout $connect/$read/$write/$timeout); h2 ${h2req:-0} started, $h2fail not 2xx; new certificate served 0.7 s after $newok of $swaps swaps"
    # Back to the first certificate for whatever follows.
    gen=$((gen + 1)); swap_cert "$dir" "$gen" server
    [ "$t" = nginx ] && nginx -s reload -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>>"$work/nginx/reload.err"
    sleep 1
  done
fi

# ── Observability cost (issue 11) ────────────────────────────────────────────────────────
OBS_NOTE=""
if want observability; then
  echo; echo "== observability: CPU/request of scenario 1 with metrics off / on / OTLP tracing"
  OPORT_OFF=18746; OPORT_OTEL=18747; OTLP_PORT=19410
  obs_targets=()
  EDGE_MAIN_PID=$EDGE_PID
  probe_cfg() { # EXTRA -> 0 if this build accepts it
    edge_config 18799 19499 "$1" >"$work/probe.toml"
    "$2" check --config "$work/probe.toml" >"$work/probe.check" 2>&1
  }
  if probe_cfg "[metrics]
enabled = false" "$BIN"; then
    edge_config "$OPORT_OFF" 19411 "[metrics]
enabled = false" >"$work/edge-metrics-off.toml"
    start_edge "$work/edge-metrics-off.toml" "$work/edge-metrics-off.log"; EDGE_OFF_PID=$EDGE_PID
    EDGE_PORT_OF[edge-metrics-off]=$OPORT_OFF
    obs_targets+=(edge-metrics-off)
  else
    OBS_NOTE="$OBS_NOTE This build has no \`[metrics] enabled\` key (mcp-edge check: $(grep -m1 -o 'unknown field[^,]*' "$work/probe.check" || head -c 200 "$work/probe.check")); metrics-off skipped."
    echo "  skipped metrics off: this build does not know [metrics] enabled"
  fi
  obs_targets+=(edge)
  # A second binary with --features otel, in its own target directory.
  OTEL_TARGET=${CARGO_TARGET_DIR:-target}-otel
  if CARGO_TARGET_DIR=$OTEL_TARGET bench_build --features otel --bin mcp-edge >"$work/otel-build.log" 2>&1; then
    OTEL_BIN=$OTEL_TARGET/release/mcp-edge
    python3 bench/otlp_sink.py "127.0.0.1:$OTLP_PORT" "$work/otlp.stats" & pids+=($!); OTLP_PID=$!
    bench_wait_port "$OTLP_PORT"
    otel_extra="[telemetry.otlp]
endpoint = \"http://127.0.0.1:$OTLP_PORT\"
protocol = \"http/protobuf\"
sample_ratio = 1.0"
    edge_config "$OPORT_OTEL" 19412 "$otel_extra" >"$work/edge-otel.toml"
    saved_bin=$BIN; BIN=$OTEL_BIN
    start_edge "$work/edge-otel.toml" "$work/edge-otel.log"; EDGE_OTEL_PID=$EDGE_PID
    BIN=$saved_bin
    EDGE_PORT_OF[edge-otel]=$OPORT_OTEL
    obs_targets+=(edge-otel)
  else
    OBS_NOTE="$OBS_NOTE \`cargo build --release --features otel\` failed ($(grep -m1 -E 'error|does not' "$work/otel-build.log" | head -c 200)); OTLP tracing skipped."
    echo "  skipped OTLP tracing: no otel feature in this tree ($(grep -m1 -E 'error|does not' "$work/otel-build.log" | head -c 160))"
  fi
  for t in "${obs_targets[@]}"; do [ "$t" = edge ] || bench_wait_port "${EDGE_PORT_OF[$t]}"; done
  obs_pid() { case $1 in edge-metrics-off) echo "$EDGE_OFF_PID" ;; edge-otel) echo "$EDGE_OTEL_PID" ;; *) echo "$EDGE_MAIN_PID" ;; esac; }
  printf 'round\tproto\ttarget\treq_s\tok\tticks\tcpu_us_per_req\n' >"$work/obs.tsv"
  for t in "${obs_targets[@]}"; do
    code=$(curl_code "${H_ALL[@]}" --data-binary @"$work/body.json" "$(url "$t")")
    [ "$code" = 200 ] || die "observability: $t answered $code"
  done
  orounds=$(( ROUNDS < 3 ? 3 : ROUNDS ))
  if (( ${#obs_targets[@]} < 2 )); then
    echo "  nothing to compare against metrics on: no rounds run"; orounds=0
  fi
  saved_edge=$EDGE_PID
  for ((r = 1; r <= orounds; r++)); do
    for p in h1 h2; do
      for t in $(alternate "$r" "${obs_targets[@]}"); do
        EDGE_PID=$(obs_pid "$t")
        if [ "$p" = h1 ]; then read -r rps ok tk _ < <(wrk_run "$t" "$DUR"); else read -r rps ok tk < <(h2_run "$t" h2 "$DUR"); fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$p" "$t" "$rps" "$ok" "$tk" "$(us_per "$tk" "$ok")" >>"$work/obs.tsv"
        echo "  round $r $p $t: $rps req/s$( [ "$t" = direct ] || echo ", $(us_per "$tk" "$ok") µs CPU/req")"
      done
    done
  done
  EDGE_PID=$saved_edge
  [ -n "${OTLP_PID:-}" ] && OTLP_STATS=$(cat "$work/otlp.stats" 2>/dev/null || echo "0 0 0")
fi

# ── Section for bench/RESULTS.md ──────────────────────────────────────────────────────────
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$((SECONDS - T_START))
{
echo
echo "## $(date -u +%F) — bench/run.sh$( ((QUICK)) && echo ' --quick (QUICK: few rounds, short runs; not for publishing)')${ONLY:+ --only $ONLY}"
echo
echo "**Machine.** $(bench_machine); load average $START_LOAD at the start, $END_LOAD at the end"
echo "(\`/proc/loadavg\`; anything above ~0.5 before the run means other work shared the cores)."
echo "**Commit** \`$(bench_commit)\` ($(git rev-parse --abbrev-ref HEAD)); $(nginx -v 2>&1 | sed 's#nginx version: ##'), $(wrk -v 2>&1 | head -1 | awk '{print $1" "$2}'), h2load $(h2load --version 2>&1 | awk '/h2load/{print $2; exit}'); release build (\`debug = \"line-tables-only\"\`)."
echo "**Started** $STARTED UTC, $ELAPSED s. **Core layout:** $LAYOUT."
if awk -v a="${START_LOAD%% *}" -v b="${END_LOAD%% *}" 'BEGIN{exit !(a > 1.0 || b > 1.5)}'; then
  echo "**Shared machine:** load average ${START_LOAD%% *} at the start, ${END_LOAD%% *} at the end on $(nproc) CPUs: other work"
  echo "ran beside the benchmark, so the figures are noisy; not for publishing."
fi
echo
echo "mcp-edge: route \`/mcp\` with ES256 JWT auth (\`jwks_file\`, scope \`mcp:tools\`), \`allowed_origins\`,"
echo "Streamable HTTP inspection and one policy rule (\`allow_tools = [\"add\"]\`); \`log.level = \"warn\"\`."
echo "nginx: TLS termination only (bench/nginx/nginx.conf.in: \`worker_processes auto\`, keep-alive upstream"
echo "pool of 512, \`proxy_buffering off\`). Both serve the same ECDSA P-256 certificate; every request"
echo "carries the same token and Origin. Backend: bench/static_backend.rs, plain HTTP; \"direct\" is"
echo "the client talking to it without TLS. CPU = utime+stime of the proxy's processes (nginx: master"
echo "and all workers) over the run; µs per successful request, handshake or event."
} >>"$SECTION"

if want keepalive; then
  {
  echo
  echo "### 1. Keep-alive \`tools/call\` (medians of $ROUNDS × ${DUR}s, $C connections; h2 $M streams each)"
  echo
  echo "| protocol | path | req/s | vs nginx | vs direct | proxy CPU µs/req | vs nginx |"
  echo "|---|---|---|---|---|---|---|"
  for p in h1 h2; do for t in direct nginx edge edge-open; do
    name=$t; [ "$t" = edge ] && name="mcp-edge (auth+origin+policy)"; [ "$t" = edge-open ] && name="mcp-edge, open route (no auth/policy)"
    echo "| $p | $name | $(fmt0 "${MED[$t.$p.rps]}") | $(ratio "${MED[$t.$p.rps]}" "${MED[nginx.$p.rps]}") | $(ratio "${MED[$t.$p.rps]}" "${MED[direct.$p.rps]}") | $(fmt1 "${MED[$t.$p.us]}") | $( [ "$t" = direct ] && echo — || ratio "${MED[$t.$p.us]}" "${MED[nginx.$p.us]}") |"
  done; done
  echo
  echo "h1: wrk 1 thread (bench/lib/wrk_post.lua); h2: h2load 1 thread. Fixed rate = half nginx's"
  echo "median peak, \`h2load --rps\` per connection with \`--log-file\` percentiles (${FIX_DUR}s). h2load"
  echo "paces each connection's requests by a timer, but a request waits for a free stream/connection"
  echo "when the server is slow, so a stall is under-counted (partial coordinated omission); at half"
  echo "of the peak the queues stay short. A path whose \"rate ÷ its peak\" is near or above 1 was"
  echo "overloaded at that rate: its percentiles are queueing, not proxy latency."
  echo
  echo "| protocol | rate | path | rate ÷ its peak | p50 ms | p99 ms | p99.9 ms | p99 − nginx p99 |"
  echo "|---|---|---|---|---|---|---|---|"
  for p in h1 h2; do
    read -r _ n99 _ _ <<<"${FIX[$p.nginx]}"
    for t in direct nginx edge; do
      read -r a50 a99 a999 _ <<<"${FIX[$p.$t]}"
      d=$(awk -v a="$a99" -v b="$n99" 'BEGIN{printf "%+.2f ms", (a-b)/1000}')
      echo "| $p | ${FIX[$p.rate]}/s | $t | $(awk -v a="${FIX[$p.rate]}" -v b="${MED[$t.$p.rps]}" 'BEGIN{ if (b+0 > 0) printf "%.2f", a/b; else print "—" }') | $(ms "$a50") | $(ms "$a99") | $(ms "$a999") | $( [ "$t" = nginx ] && echo — || echo "$d") |"
    done
  done
  } >>"$SECTION"
fi

if [ -s "$work/perf-top15.txt" ]; then
  {
  echo
  echo "\`perf report --no-children\` top 15 (self time) of mcp-edge under the h1 load, ${PERF_SECS:-8}s:"
  echo
  echo '```'
  cat "$work/perf-top15.txt"
  echo '```'
  } >>"$SECTION"
fi

if want handshake; then
  {
  echo
  echo "### 2. New TLS connections (bench_client handshake, 8 concurrent, medians of $ROUNDS × ${HS_DUR}s)"
  echo
  echo "Each connection: TCP connect, TLS 1.3 handshake (client offers X25519 only; rustls client),"
  echo "\`GET /bench-handshake\` with \`connection: close\` (404 from the proxy itself, no backend),"
  echo "read to the end. \"full\": the client keeps no session; \"resumed\": it keeps the tickets and"
  echo "resumes (the full/resumed columns are what rustls reported)."
  echo
  echo "| kind | proxy | handshakes/s | vs nginx | full | resumed | proxy CPU µs/handshake | vs nginx |"
  echo "|---|---|---|---|---|---|---|---|"
  for kind in full resumed; do
    for t in nginx edge; do
      col() { awk -F'\t' -v k="$kind" -v t="$t" -v c="$1" '$2==k && $3==t {print $c}' "$work/s2.tsv" | bench_median; }
      colsum() { awk -F'\t' -v k="$kind" -v t="$t" -v c="$1" '$2==k && $3==t {s+=$c} END{print s+0}' "$work/s2.tsv"; }
      ncol() { awk -F'\t' -v k="$kind" -v c="$1" '$2==k && $3=="nginx" {print $c}' "$work/s2.tsv" | bench_median; }
      echo "| $kind | $t | $(fmt0 "$(col 4)") | $(ratio "$(col 4)" "$(ncol 4)") | $(colsum 5) | $(colsum 6) | $(fmt1 "$(col 9)") | $(ratio "$(col 9)" "$(ncol 9)") |"
    done
  done
  } >>"$SECTION"
fi

if want sse; then
  {
  echo
  echo "### 3. SSE per-event latency (bench_client sse, HTTP/1.1 + TLS, one connection per stream; medians of $ROUNDS)"
  echo
  echo "The backend stamps each event with its send time (\`?ts=1\`); the client subtracts it from the"
  echo "receive time (same clock). \"added\" = proxy percentile − direct percentile. one: 1 stream,"
  echo "100 events/s, ${SSE_HOLD}s; thousand: 1,000 streams × 5 events/s, ${SSE_HOLD}s; saturation: 50"
  echo "streams asking for an event every 1 ms (50k/s offered), ${SAT_HOLD}s: what each path delivers."
  echo "The client (one thread) shares the cores: a client CPU near 100% means the client, not the"
  echo "proxy, set the pace and the latency."
  echo
  echo "| case | path | events/s | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | proxy CPU µs/event | client CPU % |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for name in one thousand saturation; do
    col() { awk -F'\t' -v n="$name" -v t="$1" -v c="$2" '$2==n && $3==t && $c!="nan" {print $c}' "$work/s3.tsv" | bench_median; }
    for t in direct nginx edge; do
      add50=$(awk -v a="$(col $t 7)" -v b="$(col direct 7)" 'BEGIN{printf "%+.3f", (a-b)/1000}')
      add99=$(awk -v a="$(col $t 8)" -v b="$(col direct 8)" 'BEGIN{printf "%+.3f", (a-b)/1000}')
      [ "$t" = direct ] && add50=— add99=—
      echo "| $name | $t | $(fmt0 "$(col $t 6)") | $(ms "$(col $t 7)") | $(ms "$(col $t 8)") | $(ms "$(col $t 9)") | $add50 | $add99 | $(fmt1 "$(col $t 12)") | $(fmt0 "$(col $t 13)") |"
    done
  done
  } >>"$SECTION"
fi

if [ -n "$SWEEP" ]; then
  {
  echo
  echo "### 4/5. Open SSE streams and the cost curve (one TLS connection per stream, 1 event/s each)"
  echo
  echo "Fresh proxies for this part; idle RSS: nginx ${BASE[nginx]} KiB (master + workers, summed),"
  echo "mcp-edge ${BASE[edge]} KiB. RSS per stream = (RSS with the streams open − idle) ÷ streams. CPU over"
  echo "${SWEEP_HOLD}s while the events flow. \"lost\": streams not opened or ended early; \"min ev\": fewest"
  echo "events one stream got in the window; \"gap p99\": 99th percentile over streams of the largest gap"
  echo "between two events (1 s expected). Request p50/p99: h2load --h1 4 connections × 50 req/s"
  echo "(${PROBE_DUR}s) of the \`tools/call\`, with the streams still open."
  echo
  echo "Events expected per stream in the window: about $(awk -v a="$SWEEP_HOLD" -v b="$PROBE_DUR" 'BEGIN{print a + b + 1}')."
  echo
  echo "| streams | path | lost | min ev | event p50 ms | event p99 ms | gap p99 ms | RSS MiB | KiB/stream | vs nginx | CPU % | req p50 ms | req p99 ms |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for n in $SWEEP; do
    for t in direct nginx edge; do
      row=$(awk -F'\t' -v n="$n" -v t="$t" '$3==n && $2==t' "$work/s45.tsv")
      [ -n "$row" ] || continue
      IFS=$'\t' read -r _ _ _ ok early mine eps p50 p99 gap rss per cpu cpe q50 q99 <<<"$row"
      nper=$(awk -F'\t' -v n="$n" '$3==n && $2=="nginx" {print $12}' "$work/s45.tsv")
      echo "| $n | $t | $((n - ok + early)) | $mine | $(ms "$p50") | $(ms "$p99") | $(ms "$gap") | $(awk -v r="$rss" 'BEGIN{ if (r=="nan") print "—"; else printf "%.1f", r/1024 }') | $(dash "$per") | $( [ "$t" = edge ] && ratio "$per" "$nper" || echo —) | $(dash "$cpu") | $(ms "$q50") | $(ms "$q99") |"
    done
  done
  } >>"$SECTION"
fi

if want rotation; then
  {
  echo
  echo "### 6. Certificate swap every second for ${ROT_SECS}s under load"
  echo
  echo "Load: wrk h1 $C keep-alive connections and h2load h2 8 connections × $M streams, together."
  echo "Each swap renames a \`..data\` symlink to a new directory holding the other certificate and key"
  echo "(atomic for both files). mcp-edge picks it up itself (\`[certs] watch\`); nginx gets"
  echo "\`nginx -s reload\` after each swap. \"new cert served\": an \`openssl s_client\` 0.7 s after the"
  echo "swap saw the new serial."
  echo
  echo "| proxy | h1 requests | h1 failed | h2 requests | h2 failed | swaps | new cert served |"
  echo "|---|---|---|---|---|---|---|"
  while IFS=$'\t' read -r t hr hok herr h2r h2ok h2f sw nw; do
    [ "$t" = target ] && continue
    echo "| $t | $hr | $herr | $h2r | $h2f | $sw | $nw |"
  done <"$work/s6.tsv"
  } >>"$SECTION"
fi

if want observability; then
  {
  echo
  echo "### Observability cost (issue 11): mcp-edge CPU per request, scenario 1 load (medians of $orounds × ${DUR}s)"
  echo
  # Cost = CPU per request over the baseline: metrics off when this build has the key, else on.
  basev=edge; [[ " ${obs_targets[*]} " == *" edge-metrics-off "* ]] && basev=edge-metrics-off
  if (( orounds )); then
  echo "Cost = CPU per request ÷ the baseline's − 1 (baseline: $( [ "$basev" = edge ] && echo "metrics on" || echo "metrics off")); \"paired\" is the"
  echo "median of the per-round ratios (the two runs of a round are seconds apart)."
  echo
  echo "| protocol | variant | req/s | CPU µs/req | cost (medians) | cost (paired) |"
  echo "|---|---|---|---|---|---|"
  fi
  (( orounds )) && for p in h1 h2; do
    base=$(awk -F'\t' -v p="$p" -v b="$basev" '$2==p && $3==b {print $7}' "$work/obs.tsv" | bench_median)
    for t in "${obs_targets[@]}"; do
      rps=$(awk -F'\t' -v p="$p" -v t="$t" '$2==p && $3==t {print $4}' "$work/obs.tsv" | bench_median)
      us=$(awk -F'\t' -v p="$p" -v t="$t" '$2==p && $3==t {print $7}' "$work/obs.tsv" | bench_median)
      paired=$(awk -F'\t' -v p="$p" -v t="$t" -v b="$basev" '$2==p && $3==t {v[$1]=$7} $2==p && $3==b {w[$1]=$7} END{for (r in v) if (w[r] > 0) print v[r]/w[r]}' "$work/obs.tsv" | bench_median)
      name=$t; [ "$t" = edge ] && name="metrics on (default)"; [ "$t" = edge-metrics-off ] && name="metrics off"; [ "$t" = edge-otel ] && name="metrics on + OTLP traces, sample_ratio 1.0"
      echo "| $p | $name | $(fmt0 "$rps") | $(fmt1 "$us") | $(awk -v a="$us" -v b="$base" 'BEGIN{printf "%+.1f%%", (a/b-1)*100}') | $(awk -v a="$paired" 'BEGIN{printf "%+.1f%%", (a-1)*100}') |"
    done
  done
  [ -n "${OTLP_STATS:-}" ] && echo && echo "OTLP sink (bench/otlp_sink.py): $(awk '{print $1" export requests, "$2" bytes"}' <<<"$OTLP_STATS")."
  [ -n "$OBS_NOTE" ] && echo && echo "Skipped:$OBS_NOTE"
  } >>"$SECTION"
fi

{ want sse || [ -n "$SWEEP" ]; } && { echo; echo "Stream opens that bench_client had to retry (a connection failing before any answer; two retries allowed, a third failure stops the run): ${RETRIES:-0}."; } >>"$SECTION"
{ echo; echo "Raw data of this run stayed in \`$work\` (not committed)."; } >>"$SECTION"
cat "$SECTION" >>"$OUTFILE"
echo
echo "==== section appended to $OUTFILE ===="
cat "$SECTION"
