#!/usr/bin/env python3
"""Runs browser.html in headless Chromium (Debian's `chromium`) with the
stock socket.io-client browser bundle against a Socket.IO v5 server.

    python3 browser_scenarios.py URL [SCENARIO...]   (URL like http://127.0.0.1:PORT)

Serves the page and node_modules/socket.io-client/dist/socket.io.min.js on a
free loopback port of its own, so the page's origin differs from the
server's and polling goes through CORS. The page POSTs one JSON object per
scenario back to this server, which prints each as a line, then
`browser_scenarios: N passed, N failed`; exits 1 if any failed (a scenario
the page never reported fails), 2 on bad arguments. Chromium is given 45 s
in all and killed after. Standard library only.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
FILES = {
    "/browser.html": (os.path.join(HERE, "browser.html"), "text/html; charset=utf-8"),
    "/socket.io.min.js": (
        os.path.join(HERE, "node_modules", "socket.io-client", "dist", "socket.io.min.js"),
        "text/javascript; charset=utf-8",
    ),
}
SCENARIOS = ["connect_auth", "event_ack", "binary", "polling"]
PAGE_CAP_S = 45.0


class Results:
    def __init__(self):
        self.cond = threading.Condition()
        self.lines = []
        self.done = False

    def add(self, line=None, done=False):
        with self.cond:
            if line is not None:
                self.lines.append(line)
            self.done = self.done or done
            self.cond.notify_all()


def handler_for(results):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path not in FILES:
                self.send_error(404)
                return
            name, kind = FILES[path]
            with open(name, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/line":
                results.add(json.loads(body))
            elif self.path == "/done":
                results.add(done=True)
            else:
                self.send_error(404)
                return
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


def main():
    args = sys.argv[1:]
    unknown = [n for n in args[1:] if n not in SCENARIOS]
    if not args or not args[0].startswith("http://") or unknown:
        print(f"usage: browser_scenarios.py URL [SCENARIO...]\nscenarios: {' '.join(SCENARIOS)}", file=sys.stderr)
        sys.exit(2)
    server_url, names = args[0].rstrip("/"), args[1:] or SCENARIOS
    missing = [path for path, _ in FILES.values() if not os.path.exists(path)]
    if missing:
        print(f"missing {', '.join(missing)}: run `npm ci --prefix tests/socketio`", file=sys.stderr)
        sys.exit(2)
    chromium = shutil.which("chromium")
    if not chromium:
        print("chromium is not installed: run `bash scripts/test.sh`, which installs it", file=sys.stderr)
        sys.exit(2)

    results = Results()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(results))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    page = (f"http://127.0.0.1:{httpd.server_address[1]}/browser.html"
            f"?server={quote(server_url, safe='')}&scenarios={','.join(names)}")
    profile = tempfile.mkdtemp(prefix="sio-chromium-")
    log = tempfile.TemporaryFile()
    browser = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--enable-logging=stderr", f"--user-data-dir={profile}", page],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    started = time.monotonic()
    try:
        with results.cond:
            results.cond.wait_for(lambda: results.done or browser.poll() is not None,
                                  PAGE_CAP_S)
    finally:
        browser.kill()
        browser.wait()
        httpd.shutdown()
        shutil.rmtree(profile, ignore_errors=True)

    reported = {line.get("scenario"): line for line in results.lines}
    failed = 0
    for name in names:
        line = reported.get(name) or {
            "scenario": name, "ok": False,
            "error": f"no result from the page after {time.monotonic() - started:.1f} s",
        }
        failed += not line.get("ok")
        print(json.dumps(line, ensure_ascii=False), flush=True)
    if failed:
        # Chromium's own log (page console messages included, the noise of
        # a machine without D-Bus left out) shows why.
        log.seek(0)
        lines = log.read().decode(errors="replace").splitlines()
        tail = [line for line in lines if "dbus" not in line][-20:]
        print("\n".join(tail), file=sys.stderr)
    print(f"browser_scenarios: {len(names) - failed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
