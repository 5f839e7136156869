// Command kube-apiserver is the unmodified Kubernetes API server of the
// release named in go.mod, for weft's tests and `weft lab up --store kube`.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
