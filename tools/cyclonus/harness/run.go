package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mattfenwick/cyclonus/pkg/connectivity"
	"github.com/mattfenwick/cyclonus/pkg/connectivity/probe"
	"github.com/mattfenwick/cyclonus/pkg/generator"
	"github.com/mattfenwick/cyclonus/pkg/kube"
	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
)

// Config is one conformance run: which of cyclonus's generated cases, and
// the knobs of its interpreter.
type Config struct {
	// Include and Exclude are cyclonus tags (generator.TagSlice): a case
	// runs when it has any Include tag (all cases when empty) and no
	// Exclude tag. TagSCTPProtocol is always excluded: this kernel has no
	// SCTP.
	Include, Exclude []string
	// PerturbationWait is how long cyclonus waits after each step's
	// actions before it probes (its --perturbation-wait-seconds).
	PerturbationWait time.Duration
	// ProbeTimeout is each probe's `agnhost connect --timeout`.
	ProbeTimeout time.Duration
	// Retries is how many times a step's probes are run again while they
	// disagree with the truth table (its --retries).
	Retries int
	// Out receives one line per case, the tables of failed cases and the
	// summary.
	Out io.Writer
}

// Ports and protocols the pods serve, namespaces and pods: cyclonus's
// defaults, without SCTP.
var (
	Ports      = []int{80, 81}
	Protocols  = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP}
	Namespaces = []string{"x", "y", "z"}
	PodNames   = []string{"a", "b", "c"}
)

// CITags select the cases CI runs (43): upstream's own e2e cases, the
// conflicting-policy cases, every action case (create, update and delete
// policies; create, relabel and delete pods and namespaces), and endPort
// ranges, which none of those cover.
var CITags = []string{generator.TagUpstreamE2E, generator.TagConflict, generator.TagAction, generator.TagEndPort}

// Summary is what a run found.
type Summary struct {
	Cases, Passed, Failed int
	FailedCases           []string // descriptions
	Took                  time.Duration
}

func (s Summary) String() string {
	return fmt.Sprintf("cyclonus: %d cases, %d passed, %d failed, took %s", s.Cases, s.Passed, s.Failed, s.Took.Round(time.Second))
}

// Cases returns the generated cases a run with include and exclude would
// run (SCTP excluded), for the address of pod z/c that the ipBlock cases
// are built around.
func Cases(include, exclude []string, zcIP string) ([]*generator.TestCase, error) {
	exclude = append(slices.Clone(exclude), generator.TagSCTPProtocol)
	if err := generator.ValidateTags(append(slices.Clone(include), exclude...)); err != nil {
		return nil, err
	}
	cases := generator.NewTestCaseGenerator(true, zcIP, Namespaces, include, exclude).GenerateTestCases()
	for _, c := range cases {
		for _, s := range c.Steps {
			// No kube-proxy in the lab: probe pods by their own address
			// (cyclonus's --destination-type pod-ip).
			s.Probe.Mode = generator.ProbeModePodIP
		}
	}
	return cases, nil
}

// Run creates cyclonus's pods (namespaces x, y, z; pods a, b, c; TCP and
// UDP servers on ports 80 and 81) through k, waits for them, then runs
// every selected case with cyclonus's interpreter, which compares each
// step's probes with its own matcher's truth table. Loopback (a pod to
// itself) is ignored, as in upstream's e2e tests: its semantics are
// undefined and such traffic never leaves the pod.
func Run(ctx context.Context, k kube.IKubernetes, cfg Config) (Summary, error) {
	start := time.Now()
	logrus.SetLevel(logrus.WarnLevel)
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	timeout := max(int(cfg.ProbeTimeout.Round(time.Second)/time.Second), 1)
	resources, err := probe.NewDefaultResources(k, Namespaces, PodNames, Ports, Protocols, nil, 120, false, "registry.k8s.io")
	if err != nil {
		return Summary{}, fmt.Errorf("create cyclonus's pods: %w", err)
	}
	zc, err := resources.GetPod("z", "c")
	if err != nil {
		return Summary{}, err
	}
	cases, err := Cases(cfg.Include, cfg.Exclude, zc.IP)
	if err != nil {
		return Summary{}, err
	}
	const ignoreLoopback = true
	interp := connectivity.NewInterpreter(k, resources, &connectivity.InterpreterConfig{
		ResetClusterBeforeTestCase:       true,
		KubeProbeRetries:                 cfg.Retries,
		PerturbationWaitSeconds:          int(cfg.PerturbationWait.Round(time.Second) / time.Second),
		VerifyClusterStateBeforeTestCase: true,
		IgnoreLoopback:                   ignoreLoopback,
		JobTimeoutSeconds:                timeout,
	})
	printer := &connectivity.Printer{IgnoreLoopback: ignoreLoopback}
	sum := Summary{Cases: len(cases)}
	fmt.Fprintf(out, "cyclonus: %d cases (%s)\n", len(cases), tagCounts(cases))
	for i, c := range cases {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		t0 := time.Now()
		r := interp.ExecuteTestCase(c)
		verdict := "PASS"
		switch {
		case r.Err != nil:
			verdict = "ERROR"
			fmt.Fprintf(out, "case %q could not run: %v\n", c.Description, r.Err)
		case !r.Passed(ignoreLoopback):
			verdict = "FAIL"
			printer.PrintTestCaseResult(r) // cyclonus's tables, on stdout
		default:
			printer.Results = append(printer.Results, r)
		}
		if verdict == "PASS" {
			sum.Passed++
		} else {
			sum.Failed++
			sum.FailedCases = append(sum.FailedCases, c.Description)
		}
		fmt.Fprintf(out, "case %d/%d %s in %s (%d steps, tries %s): %s [%s]\n", i+1, len(cases), verdict,
			time.Since(t0).Round(100*time.Millisecond), len(c.Steps), tries(r), c.Description, strings.Join(c.Tags.Keys(), ","))
		if verdict == "PASS" {
			for _, d := range retried(r, ignoreLoopback) {
				fmt.Fprintf(out, "  retried: %s\n", d)
			}
		}
	}
	if len(printer.Results) > 0 {
		printer.PrintSummary()
	}
	sum.Took = time.Since(start)
	if sum.Failed > 0 {
		return sum, errors.New(sum.String())
	}
	return sum, nil
}

// tries is how many probe rounds each step took.
func tries(r *connectivity.Result) string {
	var s []string
	for _, st := range r.Steps {
		s = append(s, fmt.Sprint(len(st.KubeProbes)))
	}
	return strings.Join(s, ",")
}

// retried describes the probes that disagreed with the truth table in
// the tries of a step that were run again: "step 1 try 1: x/a -> y/b 80/TCP
// got blocked, want allowed".
func retried(r *connectivity.Result, ignoreLoopback bool) []string {
	var out []string
	for si, st := range r.Steps {
		for try := 0; try < len(st.KubeProbes)-1; try++ {
			c := st.Comparison(try)
			for _, key := range c.Wrapped.Keys() {
				if ignoreLoopback && key.From == key.To {
					continue
				}
				item := c.Get(key.From, key.To)
				for k, got := range item.Kube.JobResults {
					if want := item.Simulated.JobResults[k]; want == nil || want.Combined != got.Combined {
						w := "missing"
						if want != nil {
							w = string(want.Combined)
						}
						out = append(out, fmt.Sprintf("step %d try %d: %s -> %s %s got %s, want %s", si+1, try+1, key.From, key.To, k, got.Combined, w))
					}
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// tagCounts lists the subordinate tags of cases with how many cases have
// each.
func tagCounts(cases []*generator.TestCase) string {
	counts := generator.CountTestCasesByTag(cases)
	var s []string
	for _, t := range slices.Sorted(maps.Keys(counts)) {
		if counts[t] > 0 && generator.TagSubToPrimary[t] != "" {
			s = append(s, fmt.Sprintf("%s %d", t, counts[t]))
		}
	}
	return strings.Join(s, ", ")
}
