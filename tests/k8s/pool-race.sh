#!/usr/bin/env bash
# The warm pool's claim race against a real API server (no kubelet: the pods stay Pending).
#
#   tests/k8s/pool-race.sh STOCKADE_BIN KUBECONFIG [ROUNDS]
#
# STOCKADE_BIN is built with --features kubernetes; KUBECONFIG is the admin kubeconfig
# printed by `scripts/k8s-local up`; the pool runs as stockade's least-privilege identity
# ($STOCKADE_KUBECONFIG, or stockade.kubeconfig next to KUBECONFIG). Each round fills K
# warm pods and releases M > K claimers at once (they wait on one lock, released together),
# then checks: exactly K claimers win, each a different pod; every other claimer exits 12
# with the pool-empty error; on the server exactly K pods are claimed, each carrying its
# winner's claim id, and none is warm; a claimed pod's deadline was lowered to the
# one-shot's; a release with the wrong claim deletes nothing; each winner's release deletes
# its pod and NetworkPolicy. The pool lives under a fresh state directory, so its owner
# label is its own. Exits non-zero if any check fails; nothing is left on the server.
set -uo pipefail
bin=${1:?usage: $0 STOCKADE_BIN KUBECONFIG [ROUNDS]}
admin_kc=${2:?usage: $0 STOCKADE_BIN KUBECONFIG [ROUNDS]}
rounds=${3:-3}
kc=${STOCKADE_KUBECONFIG:-$(dirname "$admin_kc")/stockade.kubeconfig}
ns=${STOCKADE_K8S_NAMESPACE:-stockade}
cache=${STOCKADE_K8S_CACHE:-$HOME/.cache/stockade-k8s}
kubectl=${KUBECTL:-$cache/bin/kubectl}
npods=${POOL_RACE_PODS:-3}
nclaimers=${POOL_RACE_CLAIMERS:-8}
EXIT_POOL_EMPTY=12
[ -x "$kubectl" ] || kubectl=$(command -v kubectl) || { echo "no kubectl" >&2; exit 2; }
[ -x "$bin" ] || { echo "no stockade binary $bin" >&2; exit 2; }
[ -r "$kc" ] || { echo "cannot read stockade's kubeconfig $kc (set STOCKADE_KUBECONFIG)" >&2; exit 2; }
[ "$nclaimers" -gt "$npods" ] || { echo "want more claimers ($nclaimers) than pods ($npods)" >&2; exit 2; }
"$bin" k8s pool --help >/dev/null 2>&1 || { echo "$bin has no 'k8s pool' (build it with --features kubernetes)" >&2; exit 2; }

work=$(mktemp -d)
export STOCKADE_STATE_DIR=$work/state
P() { "$bin" k8s pool "$@" --kubeconfig "$kc" --namespace "$ns"; }
K() { "$kubectl" --kubeconfig "$kc" --cache-dir "$work/cache" --request-timeout 30s -n "$ns" "$@"; }
cleanup() {
  P drain --claimed >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

fails=0 passes=0
ok() { passes=$((passes + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

mkdir -p "$STOCKADE_STATE_DIR"
if P ls >"$work/out" 2>&1 && [ ! -s "$work/out" ]; then ok "a fresh state directory's pool is empty"
else fail "pool ls before the first fill:"; sed 's/^/     | /' "$work/out"; fi

for round in $(seq 1 "$rounds"); do
  echo "-- round $round: $npods warm pods, $nclaimers claimers"
  if ! P fill --count "$npods" >"$work/filled" 2>"$work/err"; then
    fail "fill $npods"; sed 's/^/     | /' "$work/err"; continue
  fi
  [ "$(wc -l <"$work/filled")" = "$npods" ] && ok "filled $npods pods" || fail "fill printed $(wc -l <"$work/filled") names"
  warm_deadline=$(K get pod "$(head -1 "$work/filled")" -o jsonpath='{.spec.activeDeadlineSeconds}')

  # every claimer waits on a shared lock the script holds, then all go at once; one that
  # starts late takes the free lock at once, so none can hang
  exec 9>"$work/gate"; flock -x 9
  pids=()
  for i in $(seq 1 "$nclaimers"); do
    STOCKADE_LOG=stockade::backend::kubernetes::pool=debug \
      flock -s "$work/gate" "$bin" k8s pool claim --kubeconfig "$kc" --namespace "$ns" \
      --claim "r$round-c$i" >"$work/out.$i" 2>"$work/err.$i" 9>&- &
    pids+=($!)
  done
  flock -u 9; exec 9>&-
  won=0 empty=0 other=0 conflicts=0
  : >"$work/winners"
  for i in $(seq 1 "$nclaimers"); do
    wait "${pids[$((i - 1))]}"; rc=$?
    if [ "$rc" = 0 ]; then
      won=$((won + 1))
      pod=$(field pod <"$work/out.$i") claim=$(field claim <"$work/out.$i")
      conflicts=$((conflicts + $(field conflicts <"$work/out.$i")))
      [ "$claim" = "r$round-c$i" ] || fail "claimer $i printed claim '$claim'"
      echo "$pod $claim" >>"$work/winners"
    elif [ "$rc" = "$EXIT_POOL_EMPTY" ] && grep -q 'has no unclaimed pod' "$work/err.$i"; then
      empty=$((empty + 1))
    else
      other=$((other + 1))
      fail "claimer $i exited $rc"; sed 's/^/     | /' "$work/err.$i"
    fi
  done
  [ "$won" = "$npods" ] && ok "$won claimers won (want $npods)" || fail "$won claimers won (want $npods)"
  [ "$empty" = $((nclaimers - npods)) ] && ok "$empty got the pool-empty error, exit $EXIT_POOL_EMPTY" \
    || fail "$empty got the pool-empty error (want $((nclaimers - npods)); $other other outcomes)"
  lost=$(cat "$work"/err.* | grep -c 'lost the pod')
  echo "     (pods lost to another claimer, 409: $lost in all, $conflicts of them by the winners)"
  distinct=$(cut -d' ' -f1 "$work/winners" | sort -u | wc -l)
  [ "$distinct" = "$won" ] && ok "every winner holds a different pod" \
    || fail "$won winners hold $distinct pods: $(tr '\n' ';' <"$work/winners")"

  # the server's view, read as stockade's identity: K claimed, none warm, each its winner's
  K get pods -l "stockade.dev/pool-state" \
    -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.labels.stockade\.dev/pool-state} {.metadata.labels.stockade\.dev/claim}{"\n"}{end}' \
    | grep -F -f "$work/filled" | sort >"$work/server"
  claimed=$(grep -c ' claimed ' "$work/server")
  warm=$(grep -c ' warm' "$work/server")
  [ "$claimed" = "$npods" ] && [ "$warm" = 0 ] && ok "server: $claimed claimed, $warm warm" \
    || { fail "server: $claimed claimed, $warm warm (want $npods, 0)"; sed 's/^/     | /' "$work/server"; }
  while read -r pod claim; do
    got=$(grep "^$pod " "$work/server" | cut -d' ' -f3)
    [ "$got" = "$claim" ] || fail "server: $pod carries claim '$got', its winner is $claim"
  done <"$work/winners"
  [ "$(cut -d' ' -f3 "$work/server" | sort -u | wc -l)" = "$npods" ] && ok "server: $npods distinct claim ids, one per pod" \
    || fail "server: claim ids $(cut -d' ' -f3 "$work/server" | tr '\n' ' ')"
  read -r first_pod first_claim <"$work/winners"
  d=$(K get pod "$first_pod" -o jsonpath='{.spec.activeDeadlineSeconds}')
  [ -n "$d" ] && [ "$d" -lt "$warm_deadline" ] && ok "claimed deadline $d s < warm $warm_deadline s" \
    || fail "claimed deadline '$d' (warm $warm_deadline)"

  # releases: the wrong claim deletes nothing; the right one deletes the pod and its policy
  if P release "$first_pod" --claim not-the-winner >/dev/null 2>"$work/err"; then
    fail "release with the wrong claim succeeded"
  elif grep -q 'is not held by claim not-the-winner' "$work/err" && K get pod "$first_pod" >/dev/null 2>&1; then
    ok "release with the wrong claim refused, $first_pod kept"
  else
    fail "release with the wrong claim:"; sed 's/^/     | /' "$work/err"
  fi
  released=0
  while read -r pod claim; do
    if P release "$pod" --claim "$claim" 2>"$work/err"; then released=$((released + 1))
    else fail "release $pod"; sed 's/^/     | /' "$work/err"; fi
  done <"$work/winners"
  [ "$released" = "$npods" ] && ok "$released released" || fail "$released released (want $npods)"
  left=$(K get pods -o name | grep -c -F -f "$work/filled")
  [ "$left" = 0 ] && ok "no pod of this round left" || fail "$left pods of this round left"
  if K get networkpolicy "$first_pod" >"$work/out" 2>&1; then fail "networkpolicy $first_pod left"
  elif grep -q NotFound "$work/out"; then ok "networkpolicy $first_pod gone"
  else fail "get networkpolicy $first_pod:"; sed 's/^/     | /' "$work/out"; fi
done

# a drain leaves nothing of the pool, and takes only this owner's pods
P fill --count 2 >/dev/null 2>"$work/err" || { fail "fill for the drain"; sed 's/^/     | /' "$work/err"; }
P claim --claim drain-me >/dev/null 2>&1 || fail "claim before the drain"
P drain >/dev/null 2>&1 || fail "drain"
[ "$(P ls | grep -c warm)" = 0 ] && [ "$(P ls | grep -c claimed)" = 1 ] && ok "drain deleted the warm pod, kept the claimed one" \
  || { fail "after drain:"; P ls | sed 's/^/     | /'; }
P drain --claimed >/dev/null 2>&1 || fail "drain --claimed"
[ -z "$(P ls)" ] && ok "drain --claimed: the pool is empty" || { fail "after drain --claimed:"; P ls | sed 's/^/     | /'; }

echo "$passes passed, $fails failed"
[ "$fails" = 0 ]
