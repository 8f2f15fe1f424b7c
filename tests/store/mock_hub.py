#!/usr/bin/env python3
"""A tiny Hugging Face hub look-alike on loopback, for the download tests.

Serves GET /api/models/{owner}/{name}[/revision/{rev}][?blobs=true] and
GET /{owner}/{name}/resolve/{rev}/{file} (with Range), for a few fake repos:

  test-org/tiny       config, tokenizer, one LFS safetensors (served through a 302 to /cdn/,
                      like the real hub), plus files a runtime must skip
  test-org/private    like tiny, but needs "Authorization: Bearer secret-token"
  test-org/badsum     the listed sha256 of model.safetensors is wrong
  test-org/truncated  model.safetensors always ends early (a short but clean response)
  test-org/flaky      the first request for each file drops the connection mid-body
  test-org/gguf-only  only a .gguf file and a README
  test-org/multi-gguf two .gguf quantizations
  test-org/headers-only, test-org/bad-etag   the API lists no sizes or hashes (like a
                      server without ?blobs=true): only the X-Linked-* headers can be checked;
                      bad-etag's X-Linked-Etag is wrong
  test-org/slow       model.safetensors trickles out in small chunks (for Ctrl-C tests)
  mlx-community/tiny-bare   a small repo for bare-name resolution

GET /_mock/log returns the requests seen (path, range, auth); GET /_mock/reset clears the
log and the flaky counters. Prints "PORT <n>" on stdout once listening.
"""
import argparse
import hashlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse, parse_qs

TOKEN = "secret-token"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_EXT = (".safetensors", ".gguf", ".bin", ".png", ".onnx")


def blob(seed, size):
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


def base_files(repo):
    return {
        "config.json": json.dumps({"model_type": "tiny", "hidden_size": 8, "repo": repo}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0", "model": {"type": "BPE"}}).encode(),
        "tokenizer_config.json": b'{"eos_token": "</s>"}',
        "model.safetensors": blob(repo + "/model", 200_000),
        "README.md": b"# fake model\n",
        "pytorch_model.bin": blob(repo + "/bin", 1000),
        "images/logo.png": blob(repo + "/png", 100),
        "onnx/model.onnx": blob(repo + "/onnx", 100),
    }


REPOS = {
    "test-org/tiny": base_files("test-org/tiny"),
    "test-org/private": base_files("test-org/private"),
    "test-org/badsum": {"config.json": b'{"model_type": "tiny"}',
                        "model.safetensors": blob("badsum", 50_000)},
    "test-org/truncated": {"config.json": b'{"model_type": "tiny"}',
                           "model.safetensors": blob("truncated", 100_000)},
    "test-org/flaky": {"config.json": b'{"model_type": "tiny"}',
                       "model.safetensors": blob("flaky", 300_000)},
    "test-org/multi-gguf": {"m-Q4_0.gguf": blob("q4", 3_000), "m-Q8_0.gguf": blob("q8", 5_000),
                            "README.md": b"# gguf\n"},
    "test-org/headers-only": {"config.json": b'{"model_type": "tiny"}',
                              "model.safetensors": blob("hdr", 30_000)},
    "test-org/bad-etag": {"config.json": b'{"model_type": "tiny"}',
                          "model.safetensors": blob("badetag", 30_000)},
    "test-org/slow": {"config.json": b'{"model_type": "tiny"}',
                      "model.safetensors": blob("slow", 400_000)},
    "test-org/gguf-only": {"model-Q4_0.gguf": blob("gguf", 4_000), "README.md": b"# gguf\n"},
    "mlx-community/tiny-bare": {"config.json": b'{"model_type": "tiny"}',
                                "model.safetensors": blob("bare", 1_000)},
}

LOCK = threading.Lock()
LOG = []
SEEN = {}  # flaky: path -> number of requests


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def listed_sha(repo, name):
    if repo == "test-org/badsum" and name == "model.safetensors":
        return "0" * 64
    if repo == "test-org/bad-etag" and name == "model.safetensors":
        return "f" * 64
    return sha256(REPOS[repo][name])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):  # quiet
        pass

    def send_json(self, status, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def authorized(self, repo):
        if repo != "test-org/private":
            return True
        auth = self.headers.get("Authorization", "")
        if auth == f"Bearer {TOKEN}":
            return True
        msg = "Invalid credentials in Authorization header" if auth else "Access to this repo requires a token"
        self.send_json(401, {"error": msg}, {"X-Error-Code": "RepoNotFound"})
        return False

    def do_GET(self):
        url = urlparse(self.path)
        path = unquote(url.path)
        with LOCK:
            LOG.append({"path": path, "range": self.headers.get("Range"),
                        "auth": self.headers.get("Authorization")})
        if path == "/_mock/log":
            with LOCK:
                return self.send_json(200, LOG)
        if path == "/_mock/reset":
            with LOCK:
                LOG.clear()
                SEEN.clear()
            return self.send_json(200, {"ok": True})
        parts = path.strip("/").split("/")
        if len(parts) >= 4 and parts[0] == "api" and parts[1] == "models":
            return self.api(parts[2] + "/" + parts[3], parts[4:], parse_qs(url.query))
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.resolve(parts[0] + "/" + parts[1], "/".join(parts[4:]))
        if len(parts) >= 4 and parts[0] == "cdn":
            return self.serve_file(parts[1] + "/" + parts[2], "/".join(parts[3:]))
        self.send_json(404, {"error": "Not found"})

    def api(self, repo, rest, query):
        if repo not in REPOS:
            return self.send_json(404, {"error": "Repository not found"},
                                  {"X-Error-Code": "RepoNotFound"})
        if not self.authorized(repo):
            return
        if rest and (rest[0] != "revision" or len(rest) < 2 or rest[1] not in ("main", COMMIT)):
            return self.send_json(404, {"error": "Revision not found"},
                                  {"X-Error-Code": "RevisionNotFound"})
        blobs = query.get("blobs", ["false"])[0] == "true"
        siblings = []
        for name, data in REPOS[repo].items():
            s = {"rfilename": name}
            if blobs and repo not in ("test-org/headers-only", "test-org/bad-etag"):
                s["size"] = len(data)
                if name.endswith(LFS_EXT):
                    s["lfs"] = {"sha256": listed_sha(repo, name), "size": len(data),
                                "pointerSize": 134}
            siblings.append(s)
        self.send_json(200, {"id": repo, "sha": COMMIT, "siblings": siblings})

    def resolve(self, repo, name):
        if repo not in REPOS:
            return self.send_json(404, {"error": "Repository not found"})
        if not self.authorized(repo):
            return
        files = REPOS[repo]
        if name not in files:
            return self.send_json(404, {"error": "Entry not found"},
                                  {"X-Error-Code": "EntryNotFound"})
        if repo == "test-org/tiny" and name.endswith(LFS_EXT):
            # Like the hub: LFS files redirect to a CDN; the size and hash ride on the 302.
            self.send_response(302)
            self.send_header("Location", f"/cdn/{repo}/{name}")
            self.send_header("X-Linked-Size", str(len(files[name])))
            self.send_header("X-Linked-Etag", f'"{listed_sha(repo, name)}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.serve_file(repo, name)

    def serve_file(self, repo, name):
        data = REPOS.get(repo, {}).get(name)
        if data is None:
            return self.send_json(404, {"error": "Entry not found"})
        total = len(data)
        start = 0
        end = total - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and repo != "test-org/truncated":
            a, _, b = rng[6:].partition("-")
            start = int(a) if a else 0
            end = int(b) if b else total - 1
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(end, total - 1)
            status = 206
        body = data[start:end + 1]
        if repo == "test-org/truncated" and name == "model.safetensors":
            body = body[: len(body) // 2]  # short, but with a matching Content-Length
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.send_header("Accept-Ranges", "bytes")
        if name.endswith(LFS_EXT):
            self.send_header("X-Linked-Size", str(total))
            self.send_header("X-Linked-Etag", f'"{listed_sha(repo, name)}"')
            self.send_header("ETag", f'"{listed_sha(repo, name)}"')
        else:
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.end_headers()
        key = f"{repo}/{name}"
        with LOCK:
            SEEN[key] = SEEN.get(key, 0) + 1
            first = SEEN[key] == 1
        if repo == "test-org/flaky" and name == "model.safetensors" and first:
            cut = int(len(body) * 0.4)
            self.wfile.write(body[:cut])
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True
            return
        if repo == "test-org/slow" and name == "model.safetensors":
            try:
                for i in range(0, len(body), 8192):
                    self.wfile.write(body[i:i + 8192])
                    self.wfile.flush()
                    time.sleep(0.02)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away (interrupted)
            return
        self.wfile.write(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
