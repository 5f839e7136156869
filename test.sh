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

# A real kube-apiserver, kubectl and agnhost, built from the Kubernetes
# release in tools/kube (about 10 minutes on 2 cores the first time; the
# build cache makes later builds quick), for the Kubernetes-mode tests,
# `weft lab up --store kube` and the NetworkPolicy conformance harness
# (agnhost's `connect` probes and `serve-hostname` servers, from
# agnhost-probe: the same upstream commands without the other 28, whose
# start-up would cost the harness's thousands of probes ~6x the CPU).
./tools/kube/build.sh
export WEFT_KUBE_APISERVER="$PWD/bin/kube-apiserver"
export WEFT_AGNHOST="$PWD/bin/agnhost-probe"

# The lab tests (e2e) take about 10 minutes on 2 cores, more than go test's
# default limit per package: give every package 40.
go test -race -count=1 -timeout 40m ./...

# Differential tests against flannel's own library (a module of its own).
(cd tools/flannel && go vet ./... && go test -count=1 ./...)

# NetworkPolicy against cyclonus (a module of its own): the compiler against
# cyclonus's matcher, and cyclonus's generated cases against a real lab
# (the CI subset; WEFT_CYCLONUS_FULL=1 runs them all, see
# docs/network-policy.md).
(cd tools/cyclonus && go vet ./... && go test -count=1 -timeout 60m ./...)

# Each target runs a fixed number of inputs ("Nx"), not a duration: with Go
# 1.26 a duration can end a clean run with a bare "context deadline exceeded"
# (golang/go#75804, a race in the fuzz coordinator, fixed in Go 1.27), and a
# count also does the same work on a busy machine as on a quiet one. The
# counts give each target about 2-15 s here. WEFT_FUZZ_TIME (a count such as
# 200000x, or a duration) overrides them all.
(cd tools/flannel && go test -run '^$' -fuzz '^FuzzConfigAgainstFlannel$' -fuzztime "${WEFT_FUZZ_TIME:-50000x}" ./difftest)
(cd tools/flannel && go test -run '^$' -fuzz '^FuzzSubnetKeyAgainstFlannel$' -fuzztime "${WEFT_FUZZ_TIME:-50000x}" ./difftest)
(cd tools/flannel && go test -run '^$' -fuzz '^FuzzWireguardDataAgainstFlannel$' -fuzztime "${WEFT_FUZZ_TIME:-20000x}" ./difftest)
while read -r pkg target count; do
  go test -run '^$' -fuzz "^${target}\$" -fuzztime "${WEFT_FUZZ_TIME:-$count}" "$pkg"
done <<'TARGETS'
./internal/config FuzzParse 50000x
./internal/backend/table FuzzParse 50000x
./internal/lease FuzzParseValue 50000x
./internal/lease FuzzParseKey 50000x
./internal/subnetenv FuzzParse 50000x
./internal/cni FuzzParseConf 50000x
./internal/backend/udp FuzzInbound 50000x
./internal/backend/udp FuzzOutbound 50000x
./internal/backend/udp FuzzCoalescer 50000x
./internal/backend/udp FuzzSplit 50000x
./internal/backend/udp FuzzDecap 20000x
./internal/backend/wireguard FuzzParse 50000x
./internal/backend/wireguard FuzzParseData 50000x
./internal/backend/wireguard FuzzParseUAPI 50000x
./internal/lease/kubestore FuzzNodeLease 5000x
./internal/policy FuzzCompile 20000x
./internal/policy/nflog FuzzParse 50000x
./internal/policy/nflog FuzzParsePayload 50000x
./internal/bgp FuzzParse 50000x
./internal/bgp FuzzParseAnnotations 50000x
./internal/bgp FuzzParsePeerFlag 50000x
./internal/bgp/proc FuzzDecodeEvent 50000x
./internal/bgp/proc FuzzDecodeLog 50000x
./internal/lab/trace FuzzParseNAT 50000x
TARGETS
(cd tools/cyclonus && go test -run '^$' -fuzz '^FuzzMatcher$' -fuzztime "${WEFT_FUZZ_TIME:-3000x}" .)
