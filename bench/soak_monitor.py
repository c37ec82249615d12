#!/usr/bin/env python3
"""Sampler and summary for bench/soak.sh.

  soak_monitor.py sample --pid PID --dir DIR [--interval 5]
      Every --interval seconds appends one row to DIR/samples.csv: the proxy's RSS (VmRSS),
      open fds (/proc/PID/fd), threads, CPU ticks; its established client connections and
      upstream connections (ss); whether the flapping backend is up (DIR/flap.log); the access
      log lines (DIR/proxy.log, JSON) written since the previous row, counted by status and
      stream outcome (and cumulatively by status, error and outcome into
      DIR/access-detail.json); and the stream churn's counters (DIR/streams.json). The phase
      (idle/warmup/load/quiet) is read from DIR/phase. Runs until SIGTERM.

  soak_monitor.py summary --dir DIR
      Prints the figures: RSS at the start of the load phase (after warm-up), min, max, end,
      least-squares slope over the second half of the load phase, fds and connections at each
      phase boundary, request totals, non-2xx breakdown, stream outcomes, and the verdict.

RSS is called flat when end - start <= max(2 MiB, 5% of start) and the second-half slope is
<= max(100 KiB/min, 0.5% of start per minute).
"""
import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter

COLUMNS = [
    "t_s", "phase", "rss_kib", "fds", "threads", "cpu_ticks", "client_conns", "upstream_conns",
    "b_up", "post", "post_2xx", "post_429", "post_502", "post_503", "post_504", "post_other",
    "get", "get_200", "get_429", "get_other", "out_client_write_timeout", "out_client_closed",
    "out_lifetime", "out_upstream_error", "out_complete", "out_other", "log_warn_error",
    "streams_opened", "stall_reaped", "stall_not_reaped", "streams_in_progress",
]


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def count_conns(filt):
    try:
        out = subprocess.run(["ss", "-Htn", "state", "established", filt],
                             capture_output=True, text=True, timeout=5).stdout
        return len([l for l in out.splitlines() if l.strip()])
    except Exception:  # noqa: BLE001
        return -1


class LogTail:
    """Reads the lines appended to the proxy log since the last call."""

    def __init__(self, path):
        self.path, self.off, self.partial = path, 0, b""

    def new_lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except FileNotFoundError:
            return []
        self.off += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return lines


def classify(lines, row, detail):
    """Counts access-log lines into the row; every non-2xx POST and every GET stream also into
    detail, keyed "METHOD status error=... outcome=..."."""
    for raw in lines:
        if not raw.startswith(b"{"):
            continue
        try:
            ev = json.loads(raw)
        except ValueError:
            continue
        if ev.get("target") != "access":
            if ev.get("level") in ("WARN", "ERROR"):
                row["log_warn_error"] += 1
            continue
        status, method, outcome = ev.get("status"), ev.get("method"), ev.get("outcome")
        if method != "POST" or not 200 <= status < 300:
            detail[f"{method} {status} error={ev.get('error')} outcome={outcome}"] += 1
        if method == "POST":
            row["post"] += 1
            key = ("post_2xx" if 200 <= status < 300 else
                   f"post_{status}" if status in (429, 502, 503, 504) else "post_other")
            row[key] += 1
        elif method == "GET":
            row["get"] += 1
            row["get_200" if status == 200 else "get_429" if status == 429 else "get_other"] += 1
            if status == 200:
                key = f"out_{outcome}"
                row[key if key in row else "out_other"] += 1


def sample(args):
    d = args.dir
    ports = args.backend_ports.split(",")
    up_filter = "( " + " or ".join(f"dport = :{p}" for p in ports) + " )"
    cli_filter = f"( sport = :{args.proxy_port} )"
    tail = LogTail(os.path.join(d, "proxy.log"))
    path = os.path.join(d, "samples.csv")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    detail = Counter()
    t0 = time.monotonic()
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        while not stop:
            row = dict.fromkeys(COLUMNS, 0)
            try:
                st = proc_status(args.pid)
                row["rss_kib"] = int(st["VmRSS"].split()[0])
                row["threads"] = int(st["Threads"])
                row["fds"] = len(os.listdir(f"/proc/{args.pid}/fd"))
                row["cpu_ticks"] = cpu_ticks(args.pid)
            except (FileNotFoundError, ProcessLookupError):
                print("soak_monitor: proxy process is gone", file=sys.stderr)
                break
            row["t_s"] = round(time.monotonic() - t0, 1)
            row["phase"] = read(os.path.join(d, "phase"), "idle").strip()
            row["client_conns"] = count_conns(cli_filter)
            row["upstream_conns"] = count_conns(up_filter)
            flap = read(os.path.join(d, "flap.log"), "").split()
            row["b_up"] = 1 if flap and flap[-1] == "up" else 0
            classify(tail.new_lines(), row, detail)
            with open(os.path.join(d, "access-detail.json.tmp"), "w") as df:
                json.dump(dict(detail.most_common()), df, indent=0)
            os.replace(os.path.join(d, "access-detail.json.tmp"), os.path.join(d, "access-detail.json"))
            try:
                s = json.loads(read(os.path.join(d, "streams.json"), "{}"))
            except ValueError:
                s = {}
            row["streams_opened"] = s.get("opened", 0)
            row["stall_reaped"] = s.get("stall_reaped", 0)
            row["stall_not_reaped"] = s.get("stall_not_reaped", 0) + s.get("stall_silent", 0)
            row["streams_in_progress"] = s.get("in_progress", 0)
            w.writerow(row)
            f.flush()
            # Sleep to the next multiple of the interval, waking early on SIGTERM.
            nxt = t0 + args.interval * (int((time.monotonic() - t0) / args.interval) + 1)
            while not stop and time.monotonic() < nxt:
                time.sleep(min(0.2, max(0.0, nxt - time.monotonic())))


def read(path, default):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return default


def slope_per_min(rows):
    xs = [float(r["t_s"]) / 60 for r in rows]
    ys = [float(r["rss_kib"]) for r in rows]
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def h2load_summary(path):
    text = read(path, "")
    out = {}
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        out.update(zip(["total", "started", "done", "succeeded", "failed", "errored", "timeout"],
                       map(int, m.groups())))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out.update(zip(["2xx", "3xx", "4xx", "5xx"], map(int, m.groups())))
    m = re.search(r"finished in ([0-9.]+)s, ([0-9.]+) req/s", text)
    if m:
        out["secs"], out["rps"] = float(m.group(1)), float(m.group(2))
    return out


def summary(args):
    d = args.dir
    with open(os.path.join(d, "samples.csv")) as f:
        rows = list(csv.DictReader(f))
    by = lambda ph: [r for r in rows if r["phase"] == ph]  # noqa: E731
    idle, load, quiet = by("idle"), by("load"), by("quiet")
    if len(load) < 4:
        sys.exit("soak_monitor: fewer than 4 samples in the load phase; nothing to summarise")
    rss = [int(r["rss_kib"]) for r in load]
    start, end = load[0], load[-1]
    half = load[len(load) // 2:]
    slope = slope_per_min(half)
    slope_all = slope_per_min(load)
    delta = int(end["rss_kib"]) - int(start["rss_kib"])
    s0 = int(start["rss_kib"])
    flat = delta <= max(2048, 0.05 * s0) and slope <= max(100, 0.005 * s0)
    mins = (float(end["t_s"]) - float(start["t_s"])) / 60
    tot = Counter()
    for r in rows:
        for k in COLUMNS[9:27]:
            tot[k] += int(r[k])
    streams = json.loads(read(os.path.join(d, "streams.json"), "{}") or "{}")
    flaps = sum(1 for l in read(os.path.join(d, "flap.log"), "").splitlines() if l.endswith("down"))

    def at(r):
        return (f"t={float(r['t_s']):.0f}s rss {int(r['rss_kib'])} KiB, fds {r['fds']}, "
                f"threads {r['threads']}, client conns {r['client_conns']}, "
                f"upstream conns {r['upstream_conns']}")

    print(f"samples: {len(rows)} every ~5 s ({len(idle)} idle, {len(by('warmup'))} warm-up, "
          f"{len(load)} load, {len(quiet)} quiet); load phase {mins:.1f} min; "
          f"backend b killed {flaps} times")
    if idle:
        print(f"idle before load:      {at(idle[-1])}")
    print(f"load start (warm):     {at(start)}")
    print(f"load end:              {at(end)}")
    if quiet:
        print(f"after quiet period:    {at(quiet[-1])}")
    print(f"RSS during load: start {s0} KiB, min {min(rss)}, max {max(rss)}, end {end['rss_kib']} "
          f"KiB; slope {slope:+.0f} KiB/min (second half), {slope_all:+.0f} KiB/min (whole load phase)")
    fds = [int(r["fds"]) for r in load]
    print(f"fds during load: start {start['fds']}, min {min(fds)}, max {max(fds)}, end {end['fds']}")
    cpu = (int(end["cpu_ticks"]) - int(start["cpu_ticks"])) / os.sysconf("SC_CLK_TCK")
    print(f"proxy CPU during load phase: {cpu:.0f} s over {mins * 60:.0f} s")
    for name in ("h2", "h1"):
        h = h2load_summary(os.path.join(d, f"h2load-{name}.out"))
        if h:
            print(f"h2load {name}: {h.get('total', '?')} requests in {h.get('secs', '?')} s "
                  f"({h.get('rps', '?')} req/s): {h.get('2xx', '?')} 2xx, {h.get('4xx', '?')} 4xx, "
                  f"{h.get('5xx', '?')} 5xx; failed {h.get('failed', '?')}, errored "
                  f"{h.get('errored', '?')}, timeout {h.get('timeout', '?')}")
    p = tot["post"]
    print(f"access log POST (all phases): {p} total, {tot['post_2xx']} 2xx, 429 {tot['post_429']}, "
          f"502 {tot['post_502']}, 503 {tot['post_503']}, 504 {tot['post_504']}, other {tot['post_other']}"
          + (f"; non-2xx {100 * (p - tot['post_2xx']) / p:.2f}%" if p else ""))
    print(f"access log GET streams: {tot['get']} total, 200 {tot['get_200']}, 429 {tot['get_429']}, "
          f"other {tot['get_other']}; ended by client_write_timeout {tot['out_client_write_timeout']}, "
          f"client_closed {tot['out_client_closed']}, lifetime {tot['out_lifetime']}, upstream_error "
          f"{tot['out_upstream_error']}, complete {tot['out_complete']}, other {tot['out_other']}")
    detail = json.loads(read(os.path.join(d, "access-detail.json"), "{}") or "{}")
    print("access log, non-2xx POSTs and GET streams by status, error and outcome:")
    for k, v in detail.items():
        print(f"  {v:8d}  {k}")
    print(f"proxy log WARN/ERROR lines (non-access): {tot['log_warn_error']}")
    msgs = Counter()
    with open(os.path.join(d, "proxy.log"), "rb") as f:
        for raw in f:
            if b'"target":"access"' in raw or not raw.startswith(b"{"):
                continue
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            msgs[f"{ev.get('level')} {ev.get('target')}: {ev.get('message')}"] += 1
    print("proxy log, other messages (level target: message):")
    for k, v in msgs.most_common(20):
        print(f"  {v:8d}  {k}")
    print("stream churn (client side): " + ", ".join(f"{k} {v}" for k, v in sorted(streams.items())))
    print(f"RSS flat: {'yes' if flat else 'no'} (end − warm-up start = {delta:+d} KiB, "
          f"slope {slope:+.0f} KiB/min)")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--proxy-port", required=True)
    s.add_argument("--backend-ports", required=True)
    s.add_argument("--interval", type=float, default=5.0)
    m = sub.add_parser("summary")
    m.add_argument("--dir", required=True)
    args = p.parse_args()
    sample(args) if args.cmd == "sample" else summary(args)


if __name__ == "__main__":
    main()
