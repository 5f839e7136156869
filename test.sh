#!/usr/bin/env bash
# weft's test suite: unit tests, privileged tests in throwaway network
# namespaces, lab end-to-end tests (root), and a short fuzzing pass over every
# parser of outside input. Run it as root for the full suite; as another user
# the privileged and lab tests skip.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"

go vet ./...

# The reference flanneld, built unmodified from its module, for the tests
# that run weft beside the real flannel.
mkdir -p bin
(cd tools/flannel && go build -o ../../bin/flanneld github.com/flannel-io/flannel)
export WEFT_FLANNELD="$PWD/bin/flanneld"

# A real kube-apiserver, built from the Kubernetes release in tools/kube
# (about 10 minutes on 2 cores the first time; the build cache makes later
# builds quick), for the Kubernetes-mode tests and `weft lab up --store kube`.
./tools/kube/build.sh
export WEFT_KUBE_APISERVER="$PWD/bin/kube-apiserver"

go test -race -count=1 ./...

# Differential tests against flannel's own library (a module of its own).
(cd tools/flannel && go vet ./... && go test -count=1 ./...)

fuzz_time="${WEFT_FUZZ_TIME:-10s}"
(cd tools/flannel && go test -run '^$' -fuzz '^FuzzConfigAgainstFlannel$' -fuzztime "$fuzz_time" ./difftest)
while read -r pkg target; do
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzz_time" "$pkg"
done <<'TARGETS'
./internal/config FuzzParse
./internal/lease FuzzParseValue
./internal/lease FuzzParseKey
./internal/subnetenv FuzzParse
./internal/cni FuzzParseConf
./internal/backend/udp FuzzInbound
./internal/backend/udp FuzzOutbound
./internal/backend/udp FuzzCoalescer
./internal/backend/udp FuzzSplit
./internal/lease/kubestore FuzzNodeLease
TARGETS
