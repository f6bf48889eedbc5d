#!/usr/bin/env python3
# Writes docs/openapi.json (the API of `stockade serve`) from this description and
# docs/exec-result.schema.json. Usage: scripts/gen-openapi.py
import json
import os

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
def ref(n): return {"$ref": f"#/components/schemas/{n}"}
err = {"description": "An error", "content": {"application/json": {"schema": ref("Error")}}}
def mcp_errs(*codes):
    """The MCP transport's own refusals (plain bodies), beside stockade's (401, 403, 413, 429)."""
    d = errs(*[c for c in codes if c in (401, 403, 413, 429)])
    for c in codes:
        if str(c) not in d:
            d[str(c)] = {"description": "refused by the MCP transport (see docs/mcp.md)"}
    return d

def errs(*codes):
    d = {}
    for c in codes:
        d[str(c)] = err
    return d
auth_errs = errs(401, 429)
J = lambda s: {"content": {"application/json": {"schema": s}}}
id_param = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}}
exec_param = {"name": "exec_id", "in": "path", "required": True, "schema": {"type": "string"}}
path_param = {"name": "path", "in": "query", "required": True, "schema": {"type": "string"}, "description": "An absolute path in the sandbox"}
span = {"oneOf": [{"type": "integer", "minimum": 0, "description": "seconds"}, {"type": "string", "description": "a duration: 500ms, 30s, 10m, 1h"}]}
result_schema = json.load(open(os.path.join(root, "docs/exec-result.schema.json")))
for k in ["$schema", "$id"]:
    result_schema.pop(k, None)
# OpenAPI 3.1 allows JSON Schema 2020-12 (type arrays, const).
doc = {
  "openapi": "3.1.0",
  "info": {"title": "stockade API", "version": "0.1.0",
           "description": "The HTTP API of `stockade serve`: sandboxes, executions, files, audit. Every route but /healthz, /readyz and this document needs `Authorization: Bearer TOKEN` (`stockade token create`). Errors are `{\"error\": {\"code\", \"message\"}}`. See docs/api.md."},
  "servers": [{"url": "http://127.0.0.1:7878"}],
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
      "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
                "properties": {"error": {"type": "object", "required": ["code", "message"], "additionalProperties": False,
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
      "ExecResult": result_schema,
      "Span": span,
      "CreateSandbox": {"type": "object", "additionalProperties": False, "properties": {
          "profile": {"type": "string", "description": "A profile name or path on the server [default: the configured default]"},
          "ttl": span, "idle_timeout": span,
          "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 256}, "maxProperties": 32}}},
      "Sandbox": {"type": "object", "required": ["id", "owner", "profile", "created_at", "expires_at", "idle_timeout", "labels", "state", "last_used_at", "busy"],
          "properties": {"id": {"type": "string"}, "owner": {"type": "string"}, "profile": {"type": "string"},
              "created_at": {"type": "string"}, "expires_at": {"type": ["string", "null"]}, "idle_timeout": {"type": ["integer", "null"]},
              "labels": {"type": "object", "additionalProperties": {"type": "string"}}, "state": {"type": "string"},
              "last_used_at": {"type": ["string", "null"]}, "busy": {"type": "boolean"}}},
      "ExecRequest": {"type": "object", "additionalProperties": False, "properties": {
          "command": {"type": "string", "description": "Shell text, run as `bash -c` (give this or argv)"},
          "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "A program and its arguments, run without a shell"},
          "workdir": {"type": "string"}, "env": {"type": "object", "additionalProperties": {"type": "string"}},
          "stdin": {"type": "string", "description": "Text fed to stdin, then end of file"},
          "stdin_base64": {"type": "string"},
          "stdin_open": {"type": "boolean", "description": "Background only: stdin stays open for POST .../stdin"},
          "timeout": span, "background": {"type": "boolean"},
          "profile": {"type": "string", "description": "POST /v1/exec only"},
          "interleaved": {"type": "boolean"},
          "secrets": {"type": "array", "maxItems": 32, "items": {"type": "string", "pattern": "^[A-Z_][A-Z0-9_]{0,63}$"}, "description": "Secrets (stockade secret set NAME) put in the command's environment; redacted from the result, the stream and the audit log"}}},
      "Job": {"type": "object", "required": ["exec_id", "state"], "properties": {"exec_id": {"type": "string"}, "sandbox": {"type": ["string", "null"]}, "state": {"enum": ["running", "killing", "done"]}}},
      "Poll": {"type": "object", "required": ["exec_id", "state", "stdout", "stderr", "result"], "properties": {
          "exec_id": {"type": "string"}, "sandbox": {"type": ["string", "null"]}, "state": {"enum": ["running", "done"]},
          "stdout": {"type": "string"}, "stderr": {"type": "string"},
          "result": {"oneOf": [{"type": "null"}, ref("ExecResult")]}}},
      "Copied": {"type": "object", "required": ["session", "path", "direction", "bytes", "sha256", "audit_id", "notes"], "properties": {
          "session": {"type": "string"}, "path": {"type": "string"}, "direction": {"enum": ["in", "out"]},
          "bytes": {"type": "integer"}, "sha256": {"type": "string"}, "audit_id": {"type": "string"}, "notes": {"type": "array", "items": {"type": "string"}}}},
      "Listing": {"type": "object", "required": ["path", "entries", "truncated"], "properties": {"path": {"type": "string"}, "truncated": {"type": "boolean"},
          "entries": {"type": "array", "items": {"type": "object", "required": ["name", "size", "type"], "properties": {
              "name": {"type": "string"}, "size": {"type": "integer"}, "type": {"enum": ["file", "dir", "symlink", "other"]}}}}}},
    }},
  "security": [{"bearer": []}],
  "paths": {
    "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/readyz": {"get": {"summary": "Readiness: the backend answers and the server is not stopping", "security": [],
        "responses": {"200": {"description": "ready", **J({"type": "object", "properties": {"ready": {"type": "boolean"}}})}, "503": {"description": "not ready", **J({"type": "object", "properties": {"ready": {"type": "boolean"}}})}}}},
    "/v1/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {"200": {"description": "the OpenAPI document", **J({"type": "object"})}}}},
    "/v1/version": {"get": {"summary": "Versions", "responses": {"200": {"description": "versions", **J({"type": "object", "properties": {"version": {"type": "string"}, "api": {"type": "string"}, "agent_protocol": {"type": "integer"}, "backend": {"type": "string"}}})}, **auth_errs}}},
    "/v1/sandboxes": {
      "post": {"summary": "Create a sandbox (a warm session) owned by the caller", "requestBody": {"required": True, **J(ref("CreateSandbox"))},
               "responses": {"201": {"description": "created", **J(ref("Sandbox"))}, **errs(400, 401, 403, 413, 422, 429, 502, 503)}},
      "get": {"summary": "The caller's sandboxes (admin: ?all=true for everyone's)", "parameters": [{"name": "all", "in": "query", "schema": {"type": "boolean"}}],
              "responses": {"200": {"description": "sandboxes", **J({"type": "object", "properties": {"sandboxes": {"type": "array", "items": ref("Sandbox")}}})}, **errs(400, 401, 403, 429)}}},
    "/v1/sandboxes/{id}": {
      "parameters": [id_param],
      "get": {"summary": "One sandbox", "responses": {"200": {"description": "the sandbox", **J(ref("Sandbox"))}, **errs(401, 404, 429)}},
      "delete": {"summary": "Remove a sandbox; its running commands are ended inside it and recorded", "responses": {"204": {"description": "removed"}, **errs(401, 404, 429)}}},
    "/v1/sandboxes/{id}/exec": {
      "parameters": [id_param],
      "post": {"summary": "Run a command in the sandbox. With Accept: application/x-ndjson, one JSON event per line ({type: stdout|stderr, data} then {type: exit, ...result}); with background: true, 202 and an exec_id",
               "requestBody": {"required": True, **J(ref("ExecRequest"))},
               "responses": {"200": {"description": "the result (or the event stream)", "content": {"application/json": {"schema": ref("ExecResult")}, "application/x-ndjson": {"schema": {"type": "string"}}}},
                             "202": {"description": "started in the background", **J(ref("Job"))}, **errs(400, 401, 404, 413, 422, 429, 503)}}},
    "/v1/sandboxes/{id}/execs/{exec_id}": {
      "parameters": [id_param, exec_param, {"name": "wait", "in": "query", "schema": {"type": "string"}, "description": "Wait this long for the end (at most 60s): 10s, 500ms or seconds"}],
      "get": {"summary": "A background execution: its state, its output so far, its result when done", "responses": {"200": {"description": "the state", **J(ref("Poll"))}, **errs(400, 401, 404, 429)}}},
    "/v1/sandboxes/{id}/execs/{exec_id}/stdin": {
      "parameters": [id_param, exec_param, {"name": "eof", "in": "query", "schema": {"type": "boolean"}, "description": "Close stdin after these bytes"}],
      "post": {"summary": "Feed bytes to a background execution's stdin (started with stdin_open: true)", "requestBody": {"required": False, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
               "responses": {"200": {"description": "written", **J({"type": "object", "properties": {"written": {"type": "integer"}, "eof": {"type": "boolean"}}})}, **errs(400, 401, 404, 409, 413, 429, 503)}}},
    "/v1/sandboxes/{id}/execs/{exec_id}/kill": {
      "parameters": [id_param, exec_param],
      "post": {"summary": "End a background execution (its processes are ended inside the sandbox)", "responses": {"202": {"description": "ending", **J(ref("Job"))}, **errs(401, 404, 429)}}},
    "/v1/sandboxes/{id}/files": {
      "parameters": [id_param, path_param],
      "put": {"summary": "Write a file (raw body, streamed, byte-exact; only the profile's writable mounts take files)", "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
              "responses": {"201": {"description": "written", **J(ref("Copied"))}, **errs(400, 401, 404, 413, 422, 429, 502, 503)}},
      "get": {"summary": "Read a file (raw bytes; a failure after the first byte aborts the transfer)", "responses": {"200": {"description": "the file", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}, **errs(400, 401, 404, 422, 429, 502, 503)}}},
    "/v1/sandboxes/{id}/files/list": {
      "parameters": [id_param, path_param],
      "get": {"summary": "List a directory in the sandbox", "responses": {"200": {"description": "the entries", **J(ref("Listing"))}, **errs(400, 401, 404, 422, 429, 503)}}},
    "/v1/exec": {
      "post": {"summary": "Run a command in a one-shot sandbox (removed afterwards)", "requestBody": {"required": True, **J(ref("ExecRequest"))},
               "responses": {"200": {"description": "the result (or the event stream)", "content": {"application/json": {"schema": ref("ExecResult")}, "application/x-ndjson": {"schema": {"type": "string"}}}}, **errs(400, 401, 413, 422, 429, 503)}}},
    "/v1/audit": {
      "get": {"summary": "Recent audit records (a non-admin sees its own executions; log=auth is admin only)",
              "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}}, {"name": "log", "in": "query", "schema": {"enum": ["exec", "auth"]}}],
              "responses": {"200": {"description": "records", **J({"type": "object", "properties": {"records": {"type": "array", "items": {"type": "object"}}}})}, **errs(400, 401, 403, 429)}}},
    "/v1/audit/verify": {"get": {"summary": "Verify both hash chains (admin)", "responses": {"200": {"description": "the reports", **J({"type": "object", "properties": {"ok": {"type": "boolean"}, "logs": {"type": "object"}}})}, **errs(401, 403, 429)}}},
    "/v1/grants": {"get": {"summary": "Every principal's grant: scope, state, sandboxes (admin)", "responses": {"200": {"description": "grants", **J({"type": "object", "properties": {"grants": {"type": "array", "items": {"type": "object"}}}})}, **errs(401, 403, 429)}}},
    "/v1/grants/{principal}": {
      "parameters": [{"name": "principal", "in": "path", "required": True, "schema": {"type": "string"}}],
      "delete": {"summary": "Revoke a principal: its tokens stop working, its running commands end, its sandboxes go (admin)",
                 "responses": {"200": {"description": "revoked", **J({"type": "object"})}, **errs(401, 403, 404, 429)}}},
    "/mcp": {
      "post": {"summary": "Model Context Protocol, Streamable HTTP (docs/mcp.md): one JSON-RPC message per request, behind the same token and limiter; a browser Origin other than the server's own is refused (403)",
               "requestBody": {"required": True, **J({"type": "object", "description": "a JSON-RPC 2.0 request, notification or response"})},
               "responses": {"200": {"description": "the JSON-RPC response, as JSON or as an event stream", "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": {"type": "string"}}}},
                             "202": {"description": "a notification or response was accepted"}, **mcp_errs(400, 401, 403, 404, 406, 413, 415, 429)}},
      "get": {"summary": "The server-to-client event stream of an MCP session", "responses": {"200": {"description": "events", "content": {"text/event-stream": {"schema": {"type": "string"}}}}, **mcp_errs(400, 401, 403, 404, 405, 406, 429)}},
      "delete": {"summary": "End an MCP session", "responses": {"200": {"description": "ended"}, "202": {"description": "ended"}, **mcp_errs(400, 401, 403, 404, 405, 429)}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (admin)", "responses": {"200": {"description": "metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}, **errs(401, 403, 429)}}},
  }}
with open(os.path.join(root, "docs/openapi.json"), "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
