"""A local stand-in for the Hugging Face Hub's file API, on 127.0.0.1, for tests of the real `huggingface_hub` client.

Repos are folders `<root>/<owner>/<name>/`. `HEAD|GET /<owner>/<name>/resolve/<revision>/<file>` answers as the Hub
does: `X-Repo-Commit` (a fixed 40-hex commit), `ETag` (config files) or, for `.safetensors` files (LFS on the Hub),
`X-Linked-Etag` / `X-Linked-Size` and a 302 to `/cdn/<sha256>`, served with Range support. 404 with
`X-Error-Code: RepoNotFound` / `EntryNotFound` / `RevisionNotFound`; a repo with a `.token` file is private: 401
`RepoNotFound` unless `Authorization: Bearer <token>`. `cut[file] = n` ends the next n transfers of that file
halfway (the connection closes with bytes announced but not sent).
"""

import hashlib
import http.server
import os
import threading
import types

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _error(self, status, code):
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, body):
        state = self.server.state
        state.requests.append((self.command, self.path))
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[0] == "cdn" and len(parts) == 2 and parts[1] in state.blobs:
            return self._send_file(state.blobs[parts[1]], body)
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "RepoNotFound")
        owner, name, _, revision = parts[:4]
        filename = "/".join(parts[4:])
        repo = os.path.join(state.root, owner, name)
        if not os.path.isdir(repo):
            return self._error(404, "RepoNotFound")
        token_file = os.path.join(repo, ".token")
        if os.path.isfile(token_file):
            with open(token_file) as f:
                token = f.read().strip()
            if self.headers.get("Authorization") != f"Bearer {token}":
                return self._error(401, "RepoNotFound")
        if revision not in ("main", COMMIT):
            return self._error(404, "RevisionNotFound")
        path = os.path.join(repo, filename)
        if not os.path.isfile(path):
            return self._error(404, "EntryNotFound")
        with open(path, "rb") as f:
            data = f.read()
        if filename.endswith(".safetensors"):
            sha = hashlib.sha256(data).hexdigest()
            state.blobs[sha] = path
            self.send_response(302)
            self.send_header("Location", f"{state.url}/cdn/{sha}")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Content-Length", "0")
            return self.end_headers()
        self._send_file(path, body, etag=hashlib.sha1(data).hexdigest())

    def _send_file(self, path, body, etag=None):
        state = self.server.state
        with open(path, "rb") as f:
            data = f.read()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng[6:].split("-")[0]:
            start = int(rng[6:].split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{etag or hashlib.sha256(data).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        name = os.path.basename(path)
        if state.cut.get(name, 0) > 0:
            state.cut[name] -= 1
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data[start:])


class HubServer:
    """`with HubServer(root) as hub:` serves `root`; `.url` (for HF_ENDPOINT), `.requests`, `.cut`; `.stop()`."""

    def __init__(self, root):
        self.state = types.SimpleNamespace(root=str(root), requests=[], cut={}, blobs={})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self.state
        self.state.url = self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.requests, self.cut = self.state.requests, self.state.cut
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def __exit__(self, *exc):
        self.stop()
