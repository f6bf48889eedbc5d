#!/usr/bin/env bash
# Renders what stockade would create on a cluster, one file per object, for the dry-run tier:
#
#   tests/k8s/render.sh STOCKADE_BIN OUT_DIR [NAMESPACE]
#
# The default profile's one-shot and session pods and their NetworkPolicies. The
# SeccompProfile is left out: it is the Security Profiles Operator's custom resource, which a
# bare API server does not know.
set -euo pipefail
bin=${1:?usage: $0 STOCKADE_BIN OUT_DIR [NAMESPACE]}
out=${2:?usage: $0 STOCKADE_BIN OUT_DIR [NAMESPACE]}
ns=${3:-stockade}
mkdir -p "$out"
for kind in oneshot session; do
  args=(k8s render --profile default --namespace "$ns" --format json)
  [ "$kind" = session ] && args+=(--session render-check)
  "$bin" "${args[@]}" | python3 -c '
import json, sys
out, kind = sys.argv[1], sys.argv[2]
listed = json.load(sys.stdin)
written = 0
for item in listed["items"]:
    if item["kind"] == "SeccompProfile":
        continue
    with open(f"{out}/{kind}-{item['"'"'kind'"'"'].lower()}.json", "w") as f:
        json.dump(item, f, indent=1)
    written += 1
if written != 2:
    sys.exit(f"expected a Pod and a NetworkPolicy, rendered {written} objects")
' "$out" "$kind"
done
