#!/usr/bin/env python3
"""Loopback OTLP/HTTP sink for bench/run.sh --only observability.

Answers 200 (empty protobuf ExportTraceServiceResponse) to every POST /v1/traces (and /v1/metrics,
/v1/logs), counting requests and body bytes; writes "requests bytes" to STATS_FILE every second and
at exit, so the harness can check that spans arrived and that the sink kept up (a sink that falls
behind would show as export errors in the proxy's log, not as proxy CPU).

    python3 bench/otlp_sink.py 127.0.0.1:4318 STATS_FILE
"""
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

lock = threading.Lock()
counts = {"requests": 0, "bytes": 0, "other": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        with lock:
            if self.path.startswith("/v1/"):
                counts["requests"] += 1
                counts["bytes"] += len(body)
            else:
                counts["other"] += 1
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def write(path):
    with lock:
        line = f"{counts['requests']} {counts['bytes']} {counts['other']}\n"
    with open(path, "w") as f:
        f.write(line)


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    stats = sys.argv[2]
    srv = ThreadingHTTPServer((host, int(port)), Handler)
    srv.daemon_threads = True

    def stop(*_):
        write(stats)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)

    def tick():
        while True:
            write(stats)
            threading.Event().wait(1.0)

    threading.Thread(target=tick, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
