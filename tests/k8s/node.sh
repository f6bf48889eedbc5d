#!/usr/bin/env bash
# The node tier: `stockade exec --backend kubernetes` against the loopback cluster of
# `scripts/k8s-local up --node` (kube-apiserver, scheduler and a kubelet driving this machine's
# Docker engine), as stockade's own restricted identity:
#
#   tests/k8s/node.sh STOCKADE_BIN   (a build with --features kubernetes)
#
# The default sandbox's properties in a pod, a timeout (124) that leaves nothing running, a
# fork bomb reported as pids_limit_hit and reaped by the keeper, /workspace kept in a session,
# a one-shot from the warm pool, and an audit log that verifies and names each pod.
set -euo pipefail
bin=${1:?usage: $0 STOCKADE_BIN}
env_file=${STOCKADE_K8S_CACHE:-$HOME/.cache/stockade-k8s}/run/env
[ -s "$env_file" ] || { echo "no $env_file: run scripts/k8s-local up --node first"; exit 1; }
# shellcheck disable=SC1090
. "$env_file"
[ "${NODE:-0}" = 1 ] || { echo "the cluster has no node: scripts/k8s-local up --node"; exit 1; }
admin=$(dirname "$STOCKADE_KUBECONFIG")/admin.kubeconfig
kc() { "$KUBECTL" --kubeconfig "$admin" --cache-dir "$state/kubectl-cache" -n "$NAMESPACE" "$@"; }

state=$(mktemp -d)
chmod 700 "$state"
trap 'rm -rf "$state"' EXIT
cat >"$state/config.toml" <<EOF
backend = "kubernetes"
[kubernetes]
kubeconfig = "$STOCKADE_KUBECONFIG"
namespace = "$NAMESPACE"
image_pull_policy = "Never"
seccomp_dir = "$SECCOMP_DIR"
# This loopback node runs no CNI that enforces NetworkPolicy (its pods have eth0 on Docker's
# bridge): the assertion is false here, and every audit record says it was made. Nothing in
# these tests sends traffic.
network_enforcement = "trusted"
node_pids_limit = ${STOCKADE_K8S_NODE_PIDS:-256}
EOF
export STOCKADE_STATE_DIR=$state/sd STOCKADE_CONFIG=$state/config.toml
mkdir -p "$STOCKADE_STATE_DIR"; chmod 700 "$STOCKADE_STATE_DIR"

pass=0
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { pass=$((pass + 1)); echo "ok: $*"; }
# field JSON KEY.PATH: one value of a result
field() { python3 -c 'import json,sys
v=json.loads(sys.argv[1])
for k in sys.argv[2].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else (json.dumps(v) if isinstance(v,(dict,list,bool)) else v))' "$1" "$2"; }

"$bin" k8s image --load >/dev/null 2>&1 || fail "stockade k8s image --load"
ok "the cluster image is in the node's image store"

# --- the default sandbox's properties ------------------------------------------------------
r=$("$bin" exec --json -- 'id -u; grep -E "^(CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/self/status; touch /x 2>&1 || true; unshare -U true 2>&1 || true; tr "\0" " " </proc/1/cmdline')
out=$(field "$r" stdout)
[ "$(field "$r" outcome)" = completed ] && [ "$(field "$r" exit_code)" = 0 ] || fail "properties: $r"
grep -qx 65532 <<<"$out" || fail "not the sandbox user: $out"
grep -q 'CapEff:	0000000000000000' <<<"$out" && grep -q 'CapBnd:	0000000000000000' <<<"$out" || fail "capabilities: $out"
grep -q 'NoNewPrivs:	1' <<<"$out" || fail "no_new_privs: $out"
grep -q 'Seccomp:	2' <<<"$out" || fail "seccomp not a filter: $out"
grep -q 'Read-only file system' <<<"$out" || fail "root is writable: $out"
grep -q 'unshare failed: Operation not permitted' <<<"$out" || fail "unshare -U was not refused: $out"
grep -q '/usr/lib/stockade/stockade-agent keep' <<<"$out" || fail "PID 1 is not the keeper: $out"
ok "non-root, no capabilities, no_new_privs, seccomp filter, read-only root, unshare refused, keeper as PID 1"
[ "$(field "$r" backend)" = kubernetes ] || fail "backend: $r"
[ "$(field "$r" placement.node)" = localhost ] || fail "placement: $r"
[ -n "$(field "$r" placement.seccomp_sha256)" ] || fail "no seccomp digest: $r"
case $(field "$r" placement.image) in stockade/cluster:*) ;; *) fail "placement.image: $r" ;; esac
[ -n "$(field "$r" placement.image_id)" ] || fail "no image id: $r"
[ -s "$SECCOMP_DIR/operator/stockade-default-$(field "$r" placement.seccomp_sha256 | cut -c1-12).json" ] \
  || fail "the seccomp profile the pod names is not in the kubelet's seccomp root"
ok "the result names the backend, node and seccomp digest, and the profile file is where the kubelet reads it"
pod=$(field "$r" placement.pod)
kc get pod "$pod" >/dev/null 2>&1 && fail "the one-shot pod $pod is still there"
ok "the one-shot pod is gone after its command"

# --- the environment travels on the stream, never in the request URL the API server logs ------
probe=probe-$RANDOM$RANDOM$RANDOM
r=$("$bin" exec --json --env "LANG=$probe" -- 'printf %s "$LANG"')
[ "$(field "$r" stdout)" = "$probe" ] || fail "the environment did not reach the command: $r"
audit_log=$(dirname "$STOCKADE_KUBECONFIG")/audit.log
[ -s "$audit_log" ] || fail "no API server audit log at $audit_log"
grep -q "$probe" "$audit_log" && fail "an environment value is in the API server's audit log"
grep -q 'stockade-agent' "$audit_log" || fail "the API server's audit log has no exec request (wrong log?)"
ok "the command's environment reaches it and is not in the API server's audit log"

# --- a timeout ends everything inside --------------------------------------------------------
set +e
r=$("$bin" exec --json --timeout 3s -- 'sleep 300 & sleep 301 & sleep 302')
set -e
[ "$(field "$r" outcome)" = timed_out ] && [ "$(field "$r" exit_code)" = "" ] || fail "timeout: $r"
set +e
"$bin" exec --timeout 2s -- 'sleep 300' >/dev/null 2>&1
rc=$?
set -e
[ $rc = 124 ] || fail "a timed-out command exits $rc, not 124"
ok "a timeout is timed_out with exit 124"

"$bin" exec --session s1 -- 'echo kept >/workspace/f' >/dev/null || fail "session write"
set +e
"$bin" exec --session s1 --timeout 2s -- 'sleep 300 & (sleep 301 &) ; sleep 302' >/dev/null 2>&1
rc=$?
set -e
[ $rc = 124 ] || fail "session timeout exit $rc"
left=$("$bin" exec --session s1 -- 'ps -eo pid=,comm= | grep -v -e " ps$" -e " grep$" -e " bash$"')
[ "$(echo "$left" | awk '{print $2}' | tr '\n' ' ')" = "stockade-agent " ] || fail "left after the timeout: $left"
ok "after a session's timeout only the keeper runs in the pod"
[ "$("$bin" exec --session s1 -- 'cat /workspace/f')" = kept ] || fail "/workspace was not kept"
ok "a session keeps /workspace between commands"

# --- a fork bomb ------------------------------------------------------------------------------
r=$("$bin" exec --session s1 --json --timeout 60s -- 'for i in $(seq 600); do sleep 20 & done; wait' || true)
[ "$(field "$r" pids_limit_hit)" = true ] || fail "the fork bomb was not reported as pids_limit_hit: $(field "$r" notes)"
ok "a fork bomb is pids_limit_hit"
z=$("$bin" exec --session s1 -- 'ps -eo stat= | grep -c "^Z" || true')
[ "$z" = 0 ] || fail "$z zombies after the fork bomb"
[ "$("$bin" exec --session s1 -- 'echo forks again')" = "forks again" ] || fail "the session cannot fork after the bomb"
ok "the keeper reaped every orphan: no zombies, the session forks again"

# --- a one-shot from the warm pool ------------------------------------------------------------
"$bin" k8s pool fill --count 1 >/dev/null
for _ in $(seq 100); do
  "$bin" k8s pool ls | grep -q Running && break
  sleep 0.2
done
r=$("$bin" exec --json -- 'echo pooled')
[ "$(field "$r" placement.from_pool)" = true ] && [ "$(field "$r" stdout)" = pooled ] || fail "pool: $r"
ok "a one-shot takes a warm pod when the pool has one"

# --- the audit --------------------------------------------------------------------------------
"$bin" audit verify >/dev/null || fail "audit verify"
python3 - "$STOCKADE_STATE_DIR/audit.jsonl" <<'EOF' || fail "audit records"
import json, sys
finishes = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "finish"]
ran = [r for r in finishes if r.get("exit_code") is not None or r.get("timed_out")]
assert ran, "no finish records"
for r in ran:
    p = r.get("placement") or {}
    assert p.get("node") == "localhost" and p.get("pod") and p.get("seccomp_sha256"), r
    assert "network_enforcement=trusted" in p.get("asserted", []), r
EOF
ok "the audit verifies and every record names its pod, node, seccomp digest and the operator's assertions"

"$bin" session rm s1 >/dev/null
"$bin" k8s pool drain --claimed >/dev/null
left=$(kc get pods -o name)
[ -z "$left" ] || fail "pods left: $left"
ok "nothing left in the namespace"
echo "node tier: $pass checks passed"
