#!/usr/bin/env bash
# Builds, from the one Kubernetes release in go.mod, into bin/:
#   kube-apiserver  the unmodified API server (weft's Kubernetes-mode tests, `weft lab up --store kube`)
#   kubectl         the matching client, for people using a kube lab (`weft lab kubectl`)
#   agnhost         the upstream e2e test image's binary
#   agnhost-probe   agnhost's `connect` and `serve-hostname` alone (same packages): the
#                   probes and servers of the NetworkPolicy conformance harness, which
#                   starts thousands of them (the full binary costs ~6x the CPU to start)
# each stamped with its version as the Kubernetes release build would be.
# Usage: build.sh [kube-apiserver|kubectl|agnhost|agnhost-probe ...]  (default: all four)
set -euo pipefail
cd "$(dirname "$0")"
v=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=${v#v1.}; minor=${minor%%.*}
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp="$stamp -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(kube-apiserver kubectl agnhost agnhost-probe)
for t in "${targets[@]}"; do
  case $t in
  kube-apiserver) pkg=./kube-apiserver ;;
  kubectl) pkg=k8s.io/kubernetes/cmd/kubectl ;;       # a `tool` of go.mod
  agnhost) pkg=k8s.io/kubernetes/test/images/agnhost ;; # a `tool` of go.mod
  agnhost-probe) pkg=./agnhost-probe ;;
  *) echo "build.sh: unknown target $t (want kube-apiserver, kubectl, agnhost or agnhost-probe)" >&2; exit 2 ;;
  esac
  go build -o "../../bin/$t" -ldflags "$stamp" "$pkg"
done
