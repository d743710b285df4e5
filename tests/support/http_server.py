#!/usr/bin/env python3
"""A small HTTP server for the image specs, on 127.0.0.1 only.

Serves the files of --root with Range requests (206, or 416 past the end),
404s what is missing, and /redirect/NAME answers 302 to /NAME. Faults on
demand come from the JSON object in the file --control, read at each request
(so one server serves every spec of a file):
  "ignore_range": true   answers 200 with the whole file, whatever the Range;
  "drop_after": N        sends N bytes of the body and drops the connection,
                         for the first "drop_times" (default 1) answers after
                         the control file changed;
  "rate": B              sends at most about B bytes a second.
Every request is logged as one JSON line ({path, range, status}) to --log.
Prints the port it listens on, then serves until killed.
"""
import argparse
import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--control", required=True)
    args = ap.parse_args()
    state = {"text": None, "drops": 0}
    lock = threading.Lock()

    def control():
        """The faults asked for now, and whether this answer drops."""
        try:
            with open(args.control) as f:
                text = f.read()
        except FileNotFoundError:
            text = ""
        faults = json.loads(text or "{}")
        with lock:
            if text != state["text"]:
                state["text"] = text
                state["drops"] = faults.get("drop_times", 1) if "drop_after" in faults else 0
            drop = state["drops"] > 0
            if drop:
                state["drops"] -= 1
        return faults, drop

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):
            pass

        def record(self, status):
            with lock, open(args.log, "a") as f:
                f.write(json.dumps({"path": self.path, "range": self.headers.get("Range"),
                                    "status": status}) + "\n")

        def empty(self, status, headers):
            self.record(status)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            if self.path.startswith("/redirect/"):
                self.empty(302, {"Location": self.path[len("/redirect"):]})
                return
            path = os.path.join(args.root, os.path.basename(self.path))
            if not os.path.isfile(path):
                self.record(404)
                self.send_error(404)
                return
            with open(path, "rb") as f:
                data = f.read()
            faults, drop = control()
            start, status = 0, 200
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if m and not faults.get("ignore_range"):
                start = int(m.group(1))
                if start >= len(data):
                    self.empty(416, {"Content-Range": "bytes */%d" % len(data)})
                    return
                status = 206
            body = data[start:]
            self.record(status)
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            self.end_headers()
            if drop:
                body = body[:faults["drop_after"]]
            rate = faults.get("rate", 0)
            chunk = max(1, rate // 20) if rate else max(1, len(body))
            for i in range(0, len(body), chunk):
                self.wfile.write(body[i:i + chunk])
                self.wfile.flush()
                if rate:
                    time.sleep(0.05)
            if drop:
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
