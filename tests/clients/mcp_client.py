"""Drives stockade's MCP server with the official MCP Python SDK (tests/suite/mcp.rs).

    mcp_client.py stdio STOCKADE_BIN MODE      # `stockade mcp` as a subprocess
    mcp_client.py http URL TOKEN MODE          # /mcp on `stockade serve`

MODE is `auto` (the SDK's default: server/discover, the 2026-07-28 revision) or `legacy`
(the initialize handshake). Prints one line per check passed and `ok` at the end; any failed
check raises (non-zero exit).
"""

import asyncio
import os
import sys

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

EXPECTED_TOOLS = {
    "sandbox_create", "sandbox_list", "sandbox_destroy", "sandbox_extend",
    "exec", "exec_background", "exec_poll", "exec_write_stdin", "exec_kill",
    "file_read", "file_write", "file_list",
}


def check(cond, what, detail=None):
    if not cond:
        raise AssertionError(f"{what}: {detail!r}")
    print(f"pass: {what}", flush=True)


def text_of(result):
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def drive(client, mode):
    tools = (await client.list_tools()).tools
    names = {t.name for t in tools}
    check(EXPECTED_TOOLS <= names, "every tool is listed", names)
    for t in tools:
        check(t.input_schema.get("type") == "object" and t.output_schema is not None
              and t.annotations is not None, f"{t.name} has schemas and annotations")

    # One-shot: a non-zero exit is data, not a tool error.
    r = await client.call_tool("exec", {"command": "echo hello-mcp; exit 3"})
    check(not r.is_error, "a non-zero exit is not a tool error", text_of(r))
    sc = r.structured_content
    check(sc["exit_code"] == 3 and sc["stdout"] == "hello-mcp\n" and sc["outcome"] == "completed",
          "one-shot exec returns the exec result", sc)
    check("hello-mcp" in text_of(r), "the text rendering has the output", text_of(r))

    r = await client.call_tool("exec", {"argv": ["printf", "%s|", "a b", "c"]})
    check(r.structured_content["stdout"] == "a b|c|", "argv keeps its quoting", r.structured_content)

    # The check stage denies an escape: a tool error, nothing ran.
    r = await client.call_tool("exec", {"command": "nsenter -t 1 -m sh"})
    check(r.is_error, "a denial is a tool error", text_of(r))
    check(r.structured_content["outcome"] == "denied" and "denied by policy" in text_of(r),
          "a denial says what happened and what to do", text_of(r))

    # A sandbox keeps files between calls.
    r = await client.call_tool("sandbox_create", {"ttl": 600})
    check(not r.is_error, "sandbox_create succeeds", text_of(r))
    sid = r.structured_content["sandbox_id"]
    check(sid.startswith("sbx-") and r.structured_content["expires_at"], "a sandbox has an id and an expiry",
          r.structured_content)
    try:
        listed = (await client.call_tool("sandbox_list", {})).structured_content["sandboxes"]
        check(any(s["sandbox_id"] == sid for s in listed), "sandbox_list shows it", listed)

        r = await client.call_tool("file_write", {"sandbox_id": sid, "path": "/workspace/note.txt",
                                                  "content": "written by mcp\n"})
        check(not r.is_error and r.structured_content["bytes"] == 15, "file_write writes", text_of(r))
        r = await client.call_tool("exec", {"sandbox_id": sid, "command": "cat /workspace/note.txt"})
        check(not r.is_error and r.structured_content["stdout"] == "written by mcp\n",
              "exec in the sandbox reads the written file", r.structured_content)
        r = await client.call_tool("file_read", {"sandbox_id": sid, "path": "/workspace/note.txt",
                                                 "offset": 11, "limit": 3})
        check(r.structured_content["content"] == "mcp" and r.structured_content["more"],
              "file_read reads a range", r.structured_content)
        r = await client.call_tool("file_read", {"sandbox_id": sid, "path": "/workspace/note.txt",
                                                 "encoding": "base64"})
        check(r.structured_content["content"] == "d3JpdHRlbiBieSBtY3AK", "file_read as base64",
              r.structured_content)
        r = await client.call_tool("file_list", {"sandbox_id": sid, "path": "/workspace"})
        check(any(e["name"] == "note.txt" and e["type"] == "file" for e in r.structured_content["entries"]),
              "file_list lists it", r.structured_content)

        # Progress: the output tail arrives while the command runs.
        seen = []

        async def on_progress(progress, total, message):
            seen.append(message or "")

        r = await client.call_tool(
            "exec",
            {"sandbox_id": sid, "command": "for i in 1 2 3 4; do echo tick$i; sleep 1; done"},
            progress_callback=on_progress,
        )
        check(not r.is_error and r.structured_content["stdout"].count("tick") == 4, "the exec ends", text_of(r))
        check(any("tick" in m for m in seen), "progress notifications carry the output tail", seen)

        # Background: start, write stdin, poll to the end.
        r = await client.call_tool("exec_background", {"sandbox_id": sid, "command": "cat; echo done-bg",
                                                       "stdin_open": True})
        check(not r.is_error, "exec_background starts", text_of(r))
        eid = r.structured_content["exec_id"]
        r = await client.call_tool("exec_write_stdin", {"exec_id": eid, "data": "piped\n", "eof": True})
        check(not r.is_error and r.structured_content["eof"], "exec_write_stdin writes", text_of(r))
        for _ in range(60):
            r = await client.call_tool("exec_poll", {"exec_id": eid, "wait": 5})
            if r.structured_content["state"] == "done":
                break
        check(r.structured_content["state"] == "done"
              and r.structured_content["result"]["stdout"] == "piped\ndone-bg\n",
              "exec_poll gives the result", r.structured_content)

        # Cancellation: a call given up on ends the command inside the sandbox.
        try:
            await client.call_tool("exec", {"sandbox_id": sid, "command": "sleep 300"},
                                   read_timeout_seconds=3)
            check(False, "the long call was given up on")
        except Exception as e:  # the SDK raises on its read timeout and sends notifications/cancelled
            print(f"pass: the long call was given up on ({type(e).__name__})", flush=True)
        probe = ("for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done"
                 " | grep -c 'slee[p] 300' || true")
        count = None
        for _ in range(60):
            r = await client.call_tool("exec", {"sandbox_id": sid, "command": probe})
            if not r.is_error and r.structured_content["stdout"].strip() == "0":
                count = 0
                break
            await asyncio.sleep(1)
        check(count == 0, "cancellation ended the process in the sandbox", text_of(r))
    finally:
        r = await client.call_tool("sandbox_destroy", {"sandbox_id": sid})
    check(not r.is_error and r.structured_content["destroyed"], "sandbox_destroy removes it", text_of(r))

    # A destroyed sandbox is a tool error that says what to do.
    r = await client.call_tool("exec", {"sandbox_id": sid, "command": "true"})
    check(r.is_error and "sandbox_create" in text_of(r), "a destroyed sandbox is a tool error", text_of(r))
    r = await client.call_tool("sandbox_create", {"profile": "../../etc/passwd"})
    check(r.is_error and "not a path" in text_of(r), "a profile path is refused", text_of(r))
    print(f"protocol {client.session.protocol_version} ({mode})", flush=True)


async def main():
    kind = sys.argv[1]
    if kind == "stdio":
        binary, mode = sys.argv[2], sys.argv[3]
        params = StdioServerParameters(command=binary, args=["mcp"], env=dict(os.environ))
        async with Client(params, mode=mode) as client:
            await drive(client, mode)
    elif kind == "http":
        url, token, mode = sys.argv[2], sys.argv[3], sys.argv[4]
        # Unauthenticated: refused before any MCP message is read, in the API's error shape.
        async with httpx2.AsyncClient() as plain:
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            resp = await plain.post(url, json=body,
                                    headers={"Accept": "application/json, text/event-stream"})
            check(resp.status_code == 401 and resp.json()["error"]["code"], "no token: 401", resp.text)
            resp = await plain.post(url, json=body, headers={
                "Authorization": f"Bearer {token}", "Origin": "https://evil.example",
                "Accept": "application/json, text/event-stream"})
            check(resp.status_code == 403, "a foreign Origin: 403", resp.text)
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                  timeout=httpx2.Timeout(120.0))
        async with http:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                await drive(client, mode)
    else:
        raise SystemExit(f"unknown transport {kind}")
    print("ok", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
