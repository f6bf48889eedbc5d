#!/usr/bin/env bash
# The dry-run tier: checks a Kubernetes API server accepts what stockade renders,
# without a kubelet.
#
#   tests/k8s/dry-run.sh KUBECONFIG [MANIFEST_DIR]
#
# KUBECONFIG is the admin kubeconfig printed by `scripts/k8s-local up`; stockade's
# own least-privilege kubeconfig is taken from $STOCKADE_KUBECONFIG, or from
# stockade.kubeconfig next to KUBECONFIG. Every check that stockade itself would
# do runs as that identity. MANIFEST_DIR (default tests/k8s/manifests) holds the
# pods and NetworkPolicies to check; each is created with --dry-run=server, and
# the first Pod and NetworkPolicy also for real.
#
# Checks: server-side dry-run of every manifest; a create/get/delete lifecycle
# (the pod stays Pending with no kubelet, and keeps every security field); the
# RBAC of stockade's identity (kubectl auth can-i); a claim race (two concurrent
# JSON merge patches with the same metadata.resourceVersion: one succeeds, one
# gets 409 Conflict); and that 1.20 drops a misspelt field that only kubectl's
# client-side validation refuses. Exits non-zero if any check fails.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
admin_kc=${1:?usage: $0 KUBECONFIG [MANIFEST_DIR]}
dir=${2:-$here/manifests}
kc=${STOCKADE_KUBECONFIG:-$(dirname "$admin_kc")/stockade.kubeconfig}
ns=${STOCKADE_K8S_NAMESPACE:-stockade}
other_ns=${STOCKADE_K8S_OTHER_NAMESPACE:-stockade-other}
cache=${STOCKADE_K8S_CACHE:-$HOME/.cache/stockade-k8s}
kubectl=${KUBECTL:-$cache/bin/kubectl}
[ -x "$kubectl" ] || kubectl=$(command -v kubectl) || { echo "no kubectl" >&2; exit 2; }
[ -r "$admin_kc" ] || { echo "cannot read $admin_kc" >&2; exit 2; }
[ -r "$kc" ] || { echo "cannot read stockade's kubeconfig $kc (set STOCKADE_KUBECONFIG)" >&2; exit 2; }
[ -d "$dir" ] || { echo "no manifest directory $dir" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
K() { "$kubectl" --kubeconfig "$kc" --cache-dir "$work/cache" --request-timeout 30s -n "$ns" "$@"; }
A() { "$kubectl" --kubeconfig "$admin_kc" --cache-dir "$work/cache" --request-timeout 30s "$@"; }

fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
# check DESCRIPTION COMMAND...: passes if COMMAND exits 0; prints its output if not
check() {
  local d=$1; shift
  if "$@" >"$work/out" 2>&1; then ok "$d"; else fail "$d"; sed 's/^/     | /' "$work/out"; fi
}

echo "server: $(A version -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p' | tail -1), namespace $ns, manifests $dir"

# --- 1. server-side dry-run of every manifest ------------------------------------
shopt -s nullglob
manifests=("$dir"/*.yaml "$dir"/*.yml "$dir"/*.json)
[ ${#manifests[@]} -gt 0 ] || fail "no manifests in $dir"
pod_manifest= np_manifest=
for m in "${manifests[@]}"; do
  check "dry-run=server create $(basename "$m")" K create --dry-run=server --validate=true -f "$m" -o name
  kind=$(K create --dry-run=client -f "$m" -o jsonpath='{.kind}' 2>/dev/null)
  case $kind in
    Pod) [ -n "$pod_manifest" ] || pod_manifest=$m ;;
    NetworkPolicy) [ -n "$np_manifest" ] || np_manifest=$m ;;
  esac
done

# --- 2. lifecycle without a kubelet ---------------------------------------------
jp() { K get "$1" -o jsonpath="$2" 2>&1; }
if [ -n "$pod_manifest" ]; then
  pod=pod/$(K create --dry-run=client -f "$pod_manifest" -o jsonpath='{.metadata.name}')
  K delete "$pod" --ignore-not-found --wait=true >/dev/null 2>&1
  check "create $pod" K create -f "$pod_manifest"
  phase=$(jp "$pod" '{.status.phase}')
  [ "$phase" = Pending ] && ok "$pod is Pending (no kubelet)" || fail "$pod phase: '$phase' (want Pending)"
  # The seccomp file is the manifest's own (a content-addressed name when rendered).
  seccomp_file=$(K create --dry-run=client -f "$pod_manifest" -o jsonpath='{.spec.securityContext.seccompProfile.localhostProfile}')
  want="true|false|ALL|Localhost|$seccomp_file|true|65532|false|None|127.0.0.1|Never|Memory"
  got=$(jp "$pod" '{.spec.containers[0].securityContext.readOnlyRootFilesystem}|{.spec.containers[0].securityContext.allowPrivilegeEscalation}|{.spec.containers[0].securityContext.capabilities.drop[0]}|{.spec.securityContext.seccompProfile.type}|{.spec.securityContext.seccompProfile.localhostProfile}|{.spec.securityContext.runAsNonRoot}|{.spec.securityContext.runAsUser}|{.spec.automountServiceAccountToken}|{.spec.dnsPolicy}|{.spec.dnsConfig.nameservers[0]}|{.spec.restartPolicy}|{.spec.volumes[0].emptyDir.medium}')
  [ "$got" = "$want" ] && ok "$pod stored with its security fields" || fail "$pod stored fields: $got (want $want)"
  qos=$(jp "$pod" '{.status.qosClass}')
  [ "$qos" = Guaranteed ] && ok "$pod QoS Guaranteed" || fail "$pod QoS '$qos' (want Guaranteed)"
  check "list pods" K get pods -o name
  check "delete $pod" K delete "$pod" --wait=true --timeout=30s
  if K get "$pod" >"$work/out" 2>&1; then fail "$pod still there after delete"
  elif grep -q NotFound "$work/out"; then ok "$pod gone (NotFound)"
  else fail "get after delete:"; sed 's/^/     | /' "$work/out"; fi
else
  fail "no Pod manifest in $dir"
fi
if [ -n "$np_manifest" ]; then
  np=networkpolicy/$(K create --dry-run=client -f "$np_manifest" -o jsonpath='{.metadata.name}')
  K delete "$np" --ignore-not-found >/dev/null 2>&1
  check "create $np" K create -f "$np_manifest"
  check "get $np" K get "$np"
  check "delete $np" K delete "$np"
else
  fail "no NetworkPolicy manifest in $dir"
fi

# --- 3. RBAC of stockade's identity ---------------------------------------------
can() {  # can WANT VERB RESOURCE[/SUBRESOURCE] [NAMESPACE]
  # (kubectl reads RESOURCE/NAME, so a subresource goes in --subresource)
  local want=$1 verb=$2 res=${3%%/*} n=${4-$ns} got sub=()
  [ "$3" = "$res" ] || sub=(--subresource "${3#*/}")
  got=$("$kubectl" --kubeconfig "$kc" --cache-dir "$work/cache" auth can-i "$verb" "$res" "${sub[@]}" -n "$n" 2>/dev/null)
  [ "$got" = "$want" ] && ok "can-i $verb $3 -n ${n:-(cluster)}: $got" || fail "can-i $verb $3 -n ${n:-(cluster)}: '$got' (want $want)"
}
for v in create get list watch delete patch; do can yes "$v" pods; done
can yes create pods/exec
# kube-rs execs over WebSocket, the upgrade of a GET: below 1.35 that takes `get` on pods/exec
# (and `get` is then as strong as `create`: docs/kubernetes.md, RBAC)
can yes get pods/exec
can no get pods/exec "$other_ns"
for v in create get delete; do can yes "$v" networkpolicies.networking.k8s.io; done
can no list secrets
can no get secrets
can no create secrets
can no update pods
can no create pods/attach
can no create pods/portforward
can no create pods/ephemeralcontainers
can no create serviceaccounts/token
can no create roles.rbac.authorization.k8s.io
can no create rolebindings.rbac.authorization.k8s.io
can no get nodes/proxy ""
can no create pods "$other_ns"
can no list pods "$other_ns"
can no create pods/exec "$other_ns"
can no create pods default
# not just the review: the server refuses the request itself
if [ -n "$pod_manifest" ]; then
  # The same pod with no namespace of its own, so the request names only $other_ns.
  K create --dry-run=client -f "$pod_manifest" -o json |
    python3 -c 'import json,sys; o=json.load(sys.stdin); o["metadata"].pop("namespace",None); json.dump(o,sys.stdout)' >"$work/other-pod.json"
  if "$kubectl" --kubeconfig "$kc" --cache-dir "$work/cache" create --dry-run=server -n "$other_ns" -f "$work/other-pod.json" >"$work/out" 2>&1; then
    fail "stockade could create a pod in $other_ns"
  elif grep -q Forbidden "$work/out"; then ok "create pod -n $other_ns: Forbidden"
  else fail "create pod -n $other_ns:"; sed 's/^/     | /' "$work/out"; fi
fi
if K get secrets >"$work/out" 2>&1; then fail "stockade could list secrets"
elif grep -q Forbidden "$work/out"; then ok "get secrets: Forbidden"
else fail "get secrets:"; sed 's/^/     | /' "$work/out"; fi

# --- 4. claim race: optimistic concurrency on one pod -----------------------------
if [ -n "$pod_manifest" ]; then
  pod=pod/stockade-claim-race
  K delete "$pod" --ignore-not-found --wait=true >/dev/null 2>&1
  K create --dry-run=client -f "$pod_manifest" -o json \
    | sed 's/"name": "[^"]*",/"name": "stockade-claim-race",/' >"$work/race.json"
  if K create -f "$work/race.json" >"$work/out" 2>&1; then
    rv=$(jp "$pod" '{.metadata.resourceVersion}')
    for who in a b; do
      K patch "$pod" --type merge \
        -p "{\"metadata\":{\"resourceVersion\":\"$rv\",\"labels\":{\"stockade.dev/claimed-by\":\"$who\"}}}" \
        >"$work/patch-$who" 2>&1 &
      eval "pid_$who=\$!"
    done
    wait "$pid_a"; rc_a=$?
    wait "$pid_b"; rc_b=$?
    winner=$(jp "$pod" '{.metadata.labels.stockade\.dev/claimed-by}')
    loser_out=
    if [ $rc_a = 0 ] && [ $rc_b != 0 ]; then want=a; loser_out=$work/patch-b
    elif [ $rc_b = 0 ] && [ $rc_a != 0 ]; then want=b; loser_out=$work/patch-a
    else want=; fi
    if [ -z "$want" ]; then
      fail "claim race: exit codes a=$rc_a b=$rc_b (want exactly one 0)"; sed 's/^/     | /' "$work"/patch-*
    elif ! grep -q '(Conflict)' "$loser_out"; then
      fail "claim race: the loser did not get 409 Conflict"; sed 's/^/     | /' "$loser_out"
    elif [ "$winner" != "$want" ]; then
      fail "claim race: label is '$winner', the winner was $want"
    else
      ok "claim race at resourceVersion $rv: $want won, the other got 409: $(head -1 "$loser_out")"
    fi
    # a stale resourceVersion after the claim is refused too
    if K patch "$pod" --type merge -p "{\"metadata\":{\"resourceVersion\":\"$rv\",\"labels\":{\"stockade.dev/claimed-by\":\"late\"}}}" >"$work/out" 2>&1; then
      fail "a patch with the stale resourceVersion $rv succeeded"
    elif grep -q '(Conflict)' "$work/out"; then ok "stale resourceVersion: 409 Conflict"
    else fail "stale resourceVersion:"; sed 's/^/     | /' "$work/out"; fi
    K delete "$pod" --wait=true --timeout=30s >/dev/null 2>&1 || fail "delete $pod"
  else
    fail "create $pod for the claim race"; sed 's/^/     | /' "$work/out"
  fi
fi

# --- 5. a misspelt security field ------------------------------------------------
# Known 1.20 behaviour that the renderer must not rely on: the server drops an
# unknown field without a word (no fieldValidation before 1.25); kubectl's
# client-side schema check is the only one that refuses it.
bad=$here/invalid/pod-misspelt.yaml
if [ -r "$bad" ]; then
  if K create --dry-run=server --validate=false -f "$bad" -o json >"$work/out" 2>"$work/err"; then
    if grep -q readOnlyRootFiles "$work/out"; then
      fail "misspelt field: the server kept a readOnlyRootFiles* field (fieldValidation may exist now)"
    else
      ok "misspelt field, --validate=false: the server accepted it and dropped the field silently"
    fi
  elif grep -qi 'unknown field' "$work/err"; then
    ok "misspelt field, --validate=false: the server refused it (strict field validation): $(head -1 "$work/err")"
  else
    fail "misspelt field, --validate=false:"; sed 's/^/     | /' "$work/err"
  fi
  if K create --dry-run=server --validate=true -f "$bad" >"$work/out" 2>&1; then
    fail "misspelt field: kubectl --validate=true accepted it"
  elif grep -q 'unknown field "readOnlyRootFilesytem"' "$work/out"; then
    ok "misspelt field, --validate=true: kubectl refused it: $(grep -m1 'unknown field' "$work/out" | sed 's/^ *//')"
  else
    fail "misspelt field, --validate=true:"; sed 's/^/     | /' "$work/out"
  fi
fi

# --- 6. dnsPolicy None needs a nameserver ---------------------------------------
bad=$here/invalid/pod-dns-empty.yaml
if [ -r "$bad" ]; then
  if K create --dry-run=server -f "$bad" >"$work/out" 2>&1; then
    fail "dnsPolicy None with an empty dnsConfig was accepted"
  elif grep -q 'at least one DNS nameserver' "$work/out"; then
    ok "dnsPolicy None with dnsConfig {}: refused: $(head -1 "$work/out")"
  else
    fail "dnsPolicy None with dnsConfig {}:"; sed 's/^/     | /' "$work/out"
  fi
fi

echo "$passes passed, $fails failed"
[ "$fails" = 0 ]
