package cyclonus

import (
	_ "github.com/mattfenwick/cyclonus/pkg/generator"
	_ "github.com/mattfenwick/cyclonus/pkg/matcher"
	_ "github.com/mattfenwick/cyclonus/pkg/connectivity"
	_ "github.com/mattfenwick/cyclonus/pkg/kube"
	_ "github.com/weftnet/weft/internal/policy"
	_ "k8s.io/client-go/kubernetes"
)
