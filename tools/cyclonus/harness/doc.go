// Package harness runs cyclonus's generated NetworkPolicy cases against a
// real weft lab: a real kube-apiserver, weft agents enforcing policy with
// nftables, and real TCP and UDP connections between pods in network
// namespaces. cyclonus creates its namespaces, pods, services and policies
// through the API server; a small kubelet here binds its pods to lab nodes,
// creates them through weft-cni, runs their agnhost servers and reports
// them running; cyclonus's probes (`agnhost connect`) run inside the
// source pod's namespace, and its own matcher says what each probe should
// find.
package harness
