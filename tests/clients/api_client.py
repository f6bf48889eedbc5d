#!/usr/bin/env python3
"""A client of `stockade serve` written against docs/openapi.json with the standard library only
(http.client, json, hashlib, os, socket): what an agent platform in Python would do.

It creates a sandbox, runs commands in both forms, streams one, moves files both ways, runs one
in the background with stdin, and deletes the sandbox; every answer is checked. It exits 0 when
everything matched, 1 at the first mismatch (saying which), 2 on a usage error.

    api_client.py --url http://127.0.0.1:PORT --token TOKEN
    api_client.py --unix-socket /path/api.sock --token TOKEN
    (or STOCKADE_API_URL, STOCKADE_API_SOCKET and STOCKADE_API_TOKEN in the environment)
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import urllib.parse

# Every read waits at most this long: a hang guard, never a speed claim.
TIMEOUT_S = 180

CHECKS = 0


class Mismatch(Exception):
    pass


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        raise Mismatch(what)


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (the server tells its clients apart by their uid)."""

    def __init__(self, path):
        super().__init__("localhost", timeout=TIMEOUT_S)
        self.path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT_S)
        sock.connect(self.path)
        self.sock = sock


class Api:
    def __init__(self, url, socket_path, token):
        self.socket_path = socket_path
        self.token = token
        if url:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme != "http" or parsed.hostname is None:
                raise SystemExit(f"--url must be http://HOST:PORT, not {url!r}")
            self.host = parsed.hostname
            self.port = parsed.port or 80

    def connection(self):
        if self.socket_path:
            return UnixConnection(self.socket_path)
        return http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)

    def headers(self, extra=None, auth=True):
        h = {}
        if auth:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(extra or {})
        return h

    def request(self, method, path, body=None, headers=None, auth=True):
        """One request on its own connection: (status, headers, body bytes)."""
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=self.headers(headers, auth))
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.headers, data
        finally:
            conn.close()

    def json(self, method, path, value=None, expect=200, auth=True):
        body = None
        headers = {}
        if value is not None:
            body = json.dumps(value).encode()
            headers["Content-Type"] = "application/json"
        status, hdrs, data = self.request(method, path, body, headers, auth)
        check(
            status == expect,
            f"{method} {path}: status {status}, expected {expect}: {data[:500]!r}",
        )
        if not data:
            return None
        check(
            hdrs.get("Content-Type", "").startswith("application/json"),
            f"{method} {path}: content type {hdrs.get('Content-Type')!r}",
        )
        return json.loads(data)


def check_error(value, what):
    """Every error is {"error": {"code", "message"}} and nothing else."""
    check(isinstance(value, dict) and set(value) == {"error"}, f"{what}: not an error: {value!r}")
    inner = value["error"]
    check(
        isinstance(inner, dict) and set(inner) == {"code", "message"},
        f"{what}: error keys {sorted(inner)!r}",
    )
    check(
        all(isinstance(inner[k], str) and inner[k] for k in ("code", "message")),
        f"{what}: empty code or message: {inner!r}",
    )


# The keys every result has: the schema's `required` (docs/exec-result.schema.json).
SCHEMA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "exec-result.schema.json")
with open(SCHEMA) as f:
    RESULT_KEYS = set(json.load(f)["required"])


def check_result(result, stdout, sandbox, what):
    check(set(result) == RESULT_KEYS, f"{what}: result keys differ: {sorted(set(result) ^ RESULT_KEYS)}")
    check(result["outcome"] == "completed", f"{what}: outcome {result['outcome']!r}: {result['error']!r}")
    check(result["exit_code"] == 0, f"{what}: exit code {result['exit_code']!r}")
    check(result["stdout"] == stdout, f"{what}: stdout {result['stdout']!r}, expected {stdout!r}")
    check(result["session"] == sandbox, f"{what}: session {result['session']!r}")
    digest = hashlib.sha256(stdout.encode()).hexdigest()
    check(result["stdout_sha256"] == digest, f"{what}: stdout digest does not match its text")
    check(isinstance(result["audit_id"], str) and result["audit_id"], f"{what}: no audit id")


def read_events(resp):
    """The ndjson events of a streaming response, one at a time, as they arrive."""
    while True:
        line = resp.readline()
        if not line:
            return
        check(line.endswith(b"\n"), f"an event line without its newline: {line!r}")
        yield json.loads(line)


def run(api):
    # Liveness and the document need no token.
    status, _, body = api.request("GET", "/healthz", auth=False)
    check(status == 200 and body == b"ok\n", f"/healthz: {status} {body!r}")
    doc = api.json("GET", "/v1/openapi.json", auth=False)
    check("/v1/sandboxes/{id}/exec" in doc["paths"], "the OpenAPI document lacks the exec route")
    check_error(api.json("GET", "/v1/version", expect=401, auth=False), "no token")
    version = api.json("GET", "/v1/version")
    check(version["api"] == "v1" and version["backend"] == "docker", f"version: {version!r}")

    created = api.json("POST", "/v1/sandboxes", {"labels": {"client": "python"}}, expect=201)
    sid = created["id"]
    check(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", sid), f"sandbox id {sid!r}")
    for key in ("profile", "created_at", "expires_at"):
        check(key in created, f"the created sandbox lacks {key}")
    check(created["labels"] == {"client": "python"}, f"labels: {created['labels']!r}")
    base = f"/v1/sandboxes/{sid}"
    listed = api.json("GET", "/v1/sandboxes")["sandboxes"]
    check(sid in [s["id"] for s in listed], "the new sandbox is not listed")

    # Both forms of a command, and stdin.
    result = api.json("POST", f"{base}/exec", {"argv": ["python3", "-c", "print('hi there')"]})
    check_result(result, "hi there\n", sid, "argv form")
    result = api.json("POST", f"{base}/exec", {"command": "echo a; echo b"})
    check_result(result, "a\nb\n", sid, "shell form")
    result = api.json("POST", f"{base}/exec", {"argv": ["cat"], "stdin": "fed on stdin"})
    check_result(result, "fed on stdin", sid, "stdin")

    # Streaming: the first line arrives while the command still runs (the sandbox says busy
    # before the stream's end has come), and the last is the result.
    conn = api.connection()
    try:
        conn.request(
            "POST",
            f"{base}/exec",
            body=json.dumps({"command": "echo first; sleep 6; echo second"}).encode(),
            headers=api.headers(
                {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
            ),
        )
        resp = conn.getresponse()
        check(resp.status == 200, f"stream: status {resp.status}")
        check(
            resp.headers.get("Content-Type", "").startswith("application/x-ndjson"),
            f"stream: content type {resp.headers.get('Content-Type')!r}",
        )
        events = read_events(resp)
        first = next(events)
        check(first == {"type": "stdout", "data": "first\n"}, f"first event: {first!r}")
        during = api.json("GET", base)
        check(during["busy"] is True, f"the sandbox is not busy while its command streams: {during!r}")
        rest = list(events)
    finally:
        conn.close()
    check(rest and rest[-1]["type"] == "exit", f"the stream does not end with its exit: {rest!r}")
    text = "".join(e["data"] for e in [first] + rest[:-1] if e["type"] == "stdout")
    check(text == "first\nsecond\n", f"streamed stdout {text!r}")
    final = dict(rest[-1])
    del final["type"]
    check_result(final, "first\nsecond\n", sid, "stream exit event")
    after = api.json("GET", base)
    check(after["busy"] is False, "the sandbox is still busy after its command ended")

    # Files, byte-exact both ways (NUL bytes and all).
    payload = b"\0\0head\0" + os.urandom(1 << 20) + b"\0tail"
    digest = hashlib.sha256(payload).hexdigest()
    quoted = urllib.parse.quote("/workspace/py data.bin")
    status, _, body = api.request(
        "PUT",
        f"{base}/files?path={quoted}",
        body=payload,
        headers={"Content-Type": "application/octet-stream"},
    )
    check(status == 201, f"PUT file: {status} {body[:300]!r}")
    copied = json.loads(body)
    check(copied["bytes"] == len(payload) and copied["sha256"] == digest, f"PUT file: {copied!r}")
    status, _, body = api.request("GET", f"{base}/files?path={quoted}")
    check(status == 200, f"GET file: {status}")
    check(hashlib.sha256(body).hexdigest() == digest, "the file came back different")
    result = api.json("POST", f"{base}/exec", {"argv": ["sha256sum", "/workspace/py data.bin"]})
    check(result["stdout"].split()[0] == digest, "the sandbox sees other bytes than were sent")
    listing = api.json("GET", f"{base}/files/list?path=/workspace")
    entry = [e for e in listing["entries"] if e["name"] == "py data.bin"]
    check(entry == [{"name": "py data.bin", "size": len(payload), "type": "file"}], f"listing: {listing!r}")
    status, _, body = api.request("GET", f"{base}/files?path=/workspace/absent")
    check(status == 404, f"a missing file: {status}")
    check_error(json.loads(body), "a missing file")

    # In the background, fed through stdin.
    job = api.json(
        "POST",
        f"{base}/exec",
        {"command": "wc -c; echo done", "background": True, "stdin_open": True},
        expect=202,
    )
    ex = job["exec_id"]
    check(job["state"] == "running", f"job: {job!r}")
    status, _, body = api.request("POST", f"{base}/execs/{ex}/stdin", body=b"12345")
    check(status == 200 and json.loads(body) == {"written": 5, "eof": False}, f"stdin: {status} {body!r}")
    status, _, body = api.request("POST", f"{base}/execs/{ex}/stdin?eof=true", body=b"678")
    check(status == 200 and json.loads(body)["eof"] is True, f"stdin eof: {status} {body!r}")
    poll = None
    for _ in range(12):
        poll = api.json("GET", f"{base}/execs/{ex}?wait=10s")
        if poll["state"] == "done":
            break
    check(poll["state"] == "done", f"the background execution never ended: {poll!r}")
    check_result(poll["result"], "8\ndone\n", sid, "background")

    # Gone, and said so.
    status, _, body = api.request("DELETE", base)
    check(status == 204 and body == b"", f"DELETE: {status} {body!r}")
    check_error(api.json("GET", base, expect=404), "a deleted sandbox")
    listed = api.json("GET", "/v1/sandboxes")["sandboxes"]
    check(sid not in [s["id"] for s in listed], "a deleted sandbox is still listed")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("STOCKADE_API_URL"))
    p.add_argument("--unix-socket", default=os.environ.get("STOCKADE_API_SOCKET"))
    p.add_argument("--token", default=os.environ.get("STOCKADE_API_TOKEN"))
    args = p.parse_args()
    if not args.token or not (args.url or args.unix_socket):
        p.print_usage(sys.stderr)
        print("give --token and --url or --unix-socket", file=sys.stderr)
        return 2
    api = Api(args.url, args.unix_socket, args.token)
    try:
        run(api)
    except Mismatch as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print(f"ok: {CHECKS} checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
