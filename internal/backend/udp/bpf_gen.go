package udp

// The kernel data path's objects, compiled from bpf/udp.c and committed so
// that building weft needs no clang; CI regenerates them and fails on a
// difference (.ci/bpf-check).
//go:generate go tool bpf2go -cc clang -target bpfel,bpfeb -tags linux -output-stem bpf_udp udpbpf bpf/udp.c -- -I/usr/include/x86_64-linux-gnu -I/usr/include/aarch64-linux-gnu -Wall -Werror
