package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/weftnet/weft/internal/lab"
	"github.com/weftnet/weft/internal/lab/pod"
)

// labPod is `weft lab pod add NAME --node N [--namespace NS] [--labels
// k=v,...] [--ports 80,81]` and `weft lab pod remove NAME [--namespace NS]`.
func labPod(fs *flag.FlagSet, name *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	var o lab.PodOptions
	fs.StringVar(&o.Node, "node", "", "add: the node the pod runs on (n1, ...)")
	fs.StringVar(&o.Namespace, "namespace", pod.DefaultNamespace, "the pod's Kubernetes namespace")
	labels := fs.String("labels", "", "add: the pod's labels, k=v,k2=v2")
	ports := fs.String("ports", "", "add: ports to serve and declare: 80,81 (TCP and UDP each) or 80/tcp,53/udp")
	return func(ctx context.Context, pos, _ []string, stdout, _ io.Writer) error {
		if len(pos) != 2 {
			return errors.New("usage: weft lab pod add NAME --node N [--namespace NS] [--labels k=v,...] [--ports 80,81] | remove NAME [--namespace NS]")
		}
		action, podName := pos[0], pos[1]
		switch action {
		case "add":
			if o.Node == "" {
				return errors.New("weft lab pod add: say which node with --node (n1, ...)")
			}
			var err error
			if o.Labels, err = pod.ParseLabels(*labels); err != nil {
				return err
			}
			if o.Ports, err = pod.ParsePorts(*ports); err != nil {
				return err
			}
			o.Name = podName
			return lab.PodAdd(ctx, *name, o, stdout)
		case "remove":
			return lab.PodRemove(ctx, *name, o.Namespace, podName, stdout)
		}
		return fmt.Errorf("weft lab pod: unknown action %q (add, remove)", action)
	}
}

// labServe is the hidden `weft lab serve --answer NS/NAME --ports LIST`
// that the lab runs inside a pod's namespace.
func labServe(fs *flag.FlagSet, _ *string) func(context.Context, []string, []string, io.Writer, io.Writer) error {
	answer := fs.String("answer", "", "what every connection and datagram is answered")
	ports := fs.String("ports", "", "ports to serve: 80/TCP,80/UDP")
	return func(ctx context.Context, _, _ []string, _, _ io.Writer) error {
		return lab.Serve(ctx, *answer, *ports)
	}
}

// runLabKubectl is `weft lab kubectl [--name NAME] ARGS...`.
func runLabKubectl(args []string, stdout, stderr io.Writer) error {
	name, args := kubectlArgs(args)
	err := lab.Kubectl(name, args, os.Stdin, stdout, stderr)
	var ee lab.ExitError
	if errors.As(err, &ee) {
		return exitError(ee)
	}
	return err
}

// kubectlArgs splits `weft lab kubectl`'s arguments: a leading --name
// NAME (or --name=NAME) is the lab's, everything after it kubectl's,
// flags included; a "--" before them is dropped.
func kubectlArgs(args []string) (name string, rest []string) {
	name = "weft"
	switch {
	case len(args) >= 2 && (args[0] == "--name" || args[0] == "-name"):
		name, args = args[1], args[2:]
	case len(args) >= 1 && (strings.HasPrefix(args[0], "--name=") || strings.HasPrefix(args[0], "-name=")):
		_, name, _ = strings.Cut(args[0], "=")
		args = args[1:]
	}
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	return name, args
}
