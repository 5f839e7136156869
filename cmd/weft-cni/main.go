// Command weft-cni is weft's CNI plugin. It links neither the etcd client
// nor client-go: the agent hands it the node's subnet through subnet.env.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/weftnet/weft/internal/cni"
)

func main() {
	skel.PluginMainFuncs(cni.Funcs, version.All, "weft-cni: connects pods to the node bridge with addresses from the weft subnet")
}
