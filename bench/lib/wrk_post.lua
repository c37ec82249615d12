-- wrk script of bench/run.sh: POST the file $BENCH_BODY_FILE with the headers of
-- $BENCH_HEADERS_FILE (one "name: value" a line); at the end one line on stdout:
-- WRK requests=.. duration_us=.. status_errors=.. connect=.. read=.. write=.. timeout=.. p50=.. p99=.. p999=..
-- (wrk's latencies are closed-loop: coordinated omission is not corrected; bench/run.sh takes
-- its fixed-rate percentiles from h2load --rps instead).
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
for line in io.lines(os.getenv("BENCH_HEADERS_FILE")) do
  local k, v = line:match("^([^:]+):%s*(.-)%s*$")
  if k then wrk.headers[k] = v end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d status_errors=%d connect=%d read=%d write=%d timeout=%d p50=%d p99=%d p999=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
