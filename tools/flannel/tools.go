//go:build tools

// Package tools pins the flannel module; build flanneld with
// `go build -o ../../bin/flanneld github.com/flannel-io/flannel`.
package tools
