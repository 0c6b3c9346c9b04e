"""``dagnet view --serve``: the page on localhost, rebuilt when the spec (or a file it imports) changes.

The page asks ``/version`` once a second; the answer is the modification times
of the spec's folder's spec files, so saving the spec or a block file it imports
reloads the page, which keeps what was open (sessionStorage). Only localhost.
"""

from __future__ import annotations

import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _version(spec: Path) -> str:
    files = [spec, *spec.parent.rglob("*.yaml"), *spec.parent.rglob("*.yml"), *spec.parent.rglob("*.dag")]
    return str(max((f.stat().st_mtime_ns for f in files if f.is_file()), default=0))


def serve(spec: Path, dims: dict, overrides: dict, port: int = 8765, open_browser: bool = False,
          ready: threading.Event | None = None) -> int:
    from dagnet.view import view_html
    state = {"version": None, "html": b""}
    lock = threading.Lock()

    def current() -> bytes:
        with lock:
            version = _version(spec)
            if version != state["version"]:
                state["html"] = view_html(spec, dims, overrides, serve=True, version=version).encode("utf-8")
                state["version"] = version
            return state["html"]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):                                       # noqa: N802 - http.server's name
            if self.path.split("?")[0] == "/version":
                body, kind = _version(spec).encode(), "text/plain"
            elif self.path.split("?")[0] in ("/", "/index.html"):
                body, kind = current(), "text/html; charset=utf-8"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"serving {spec} at {url} (Ctrl-C to stop)", flush=True)
    current()
    if open_browser:
        webbrowser.open(url)
    if ready is not None:
        ready.url = url
        ready.server = server
        ready.set()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
