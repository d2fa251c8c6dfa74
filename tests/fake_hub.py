"""A local stand-in for the Hugging Face Hub's HTTP API, for tests that exercise the real
download path (``huggingface_hub.snapshot_download``) without the network: the model folders
under a directory are served as repos ``org/name`` at one commit. It answers only the calls a
download makes (repo info, the file tree, each file by HEAD and GET), and records each request
with its Authorization header."""

import hashlib
import http.server
import json
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Hub(http.server.BaseHTTPRequestHandler):
    root: Path
    requests: list

    def log_message(self, *args):
        pass

    def _repo(self, org, name):
        folder = self.root / org / name
        return folder if folder.is_dir() else None

    def _json(self, obj, code=200):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _files(self, folder):
        return sorted(p for p in folder.rglob("*") if p.is_file())

    def do_GET(self):
        self._serve(body=True)

    def do_HEAD(self):
        self._serve(body=False)

    def _serve(self, body):
        path = unquote(urlparse(self.path).path)
        self.requests.append((self.command, path, self.headers.get("authorization")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree"):
            folder = self._repo(parts[2], parts[3])
            if folder is None:
                return self._json({"error": "Repository not found"}, 404)
            files = self._files(folder)
            if parts[4] == "revision":
                return self._json(
                    {
                        "id": f"{parts[2]}/{parts[3]}",
                        "sha": COMMIT,
                        "siblings": [{"rfilename": str(p.relative_to(folder))} for p in files],
                    }
                )
            return self._json(
                [
                    {
                        "type": "file",
                        "path": str(p.relative_to(folder)),
                        "size": p.stat().st_size,
                        "oid": hashlib.sha1(p.read_bytes()).hexdigest(),
                    }
                    for p in files
                ]
            )
        if len(parts) >= 5 and parts[2] == "resolve":
            folder = self._repo(parts[0], parts[1])
            f = folder / "/".join(parts[4:]) if folder else None
            if f is None or not f.is_file():
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            data = f.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return
        self._json({"error": "not found"}, 404)


def serve(root) -> tuple[http.server.ThreadingHTTPServer, str, list]:
    """Start serving ``root/org/name`` folders: (server, endpoint URL, the list of requests)."""
    handler = type("Hub", (_Hub,), {"root": Path(root), "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}", handler.requests
