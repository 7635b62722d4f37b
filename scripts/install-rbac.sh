#!/usr/bin/env bash
# Gives GuildNet's components on a local control plane exactly the rights and the API
# Priority and Fairness classification the Helm chart gives them in a cluster: the
# ClusterRoles, Roles, bindings, FlowSchemas and the reserved-labels admission policy of
# kustomize/base (the chart's defaults, release guildnet in guildnet-system), whose
# ServiceAccount subjects are the identities the control plane issues to the operator,
# webhook and proxy. So tests see what production sees. Usage: scripts/install-rbac.sh
# KUBECONFIG
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - kustomize/base/guildnet.yaml <<'PY' |
import re, sys
kinds = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "FlowSchema",
         "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
documents = re.split(r"^---\s*$", open(sys.argv[1]).read(), flags=re.M)
for document in documents:
    kind = re.search(r"^kind:\s*(\S+)\s*$", document, flags=re.M)
    if kind and kind.group(1) in kinds:
        print("---")
        print(document.strip())
PY
  .guildnet/bin/kubectl --kubeconfig "$1" apply --server-side --field-manager=guildnet-install -f - >/dev/null
