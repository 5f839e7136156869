#!/usr/bin/env bash
# Builds the unmodified kube-apiserver of the release in go.mod into bin/,
# stamped with its version as the Kubernetes release build would be.
set -euo pipefail
cd "$(dirname "$0")"
v=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=${v#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
go build -o ../../bin/kube-apiserver \
  -ldflags "-X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
  ./kube-apiserver
