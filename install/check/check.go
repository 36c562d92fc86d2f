package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodemesh/nodemesh/api"
)

// Runner runs a command in a pod's container and returns its output. A
// non-nil error means the command could not be run or exited non-zero
// (stdout and stderr are still returned).
type Runner interface {
	Exec(ctx context.Context, namespace, pod, container string, command []string) (stdout, stderr string, err error)
}

// Test is one named check: the resources it needs, and its scenarios.
type Test struct {
	Name string
	// Resources are manifests (multi-document YAML, templated with the
	// Env's fields: {{.Namespace}}, {{.PlainNamespace}}, …) applied before
	// the scenarios and deleted after.
	Resources string
	// Requires returns why the test cannot run here ("" to run).
	Requires  func(*Env) string
	Scenarios []Scenario
}

// Scenario is a group of actions with a name ("pod-to-service").
type Scenario struct {
	Name    string
	Actions func(*Env) []Action
}

// Action runs one command from a pod and judges the result.
type Action struct {
	Name string
	From Pod
	// Command runs in From's container.
	Command []string
	// Expect returns nil when the result is what the test wants.
	Expect func(Result) error
}

// Result is what an action's command gave.
type Result struct {
	Stdout, Stderr string
	Err            error
}

// Pod is a running workload pod.
type Pod struct {
	Namespace, Name, Container, IP, Node string
	// HostIP is its node's address.
	HostIP string
}

// Env is what tests see: the namespaces, the workloads' pods and what the
// cluster has.
type Env struct {
	Namespace, PlainNamespace, SidecarNamespace string
	// Pods by workload name: "client", "echo-same-node", "echo-other-node",
	// "client-plain", "echo-plain", and with Istio "client-sidecar",
	// "echo-sidecar".
	Pods map[string]Pod
	// Istio is true when istiod runs (the sidecar tests need it).
	Istio bool
	// NodeProxy is what runs as the node proxy: NodeProxyEnvoy, or
	// NodeProxyStandIn (nodemesh's L4 stand-in, where no Envoy image
	// exists) or NodeProxyNone; the L7 tests need Envoy.
	NodeProxy string
	Opts      *Options
}

// Options configure a run.
type Options struct {
	Namespace        string
	PlainNamespace   string
	SidecarNamespace string
	// ClientImage and EchoImage default to nodemesh's own images at
	// Version (DefaultClientImage, DefaultEchoImage).
	ClientImage string
	EchoImage   string
	// Version is the nodemesh version whose images are the defaults
	// ("dev" when empty).
	Version      string
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	// Filters: a regular expression selects tests by name; one starting
	// with '!' excludes them. Every filter applies.
	Filters []string
	// Requests for the weighted split; Tolerance is the allowed absolute
	// difference of the observed share (0.1 = ±10 points).
	Requests  int
	Tolerance float64
	// ReadyTimeout bounds the wait for the workloads; Settle is how long to
	// wait after applying a test's resources for them to reach every node.
	ReadyTimeout time.Duration
	Settle       time.Duration
	// Keep leaves the workloads and namespaces in place (for debugging).
	Keep bool
	// Out gets the progress and the report.
	Out io.Writer
}

func (o *Options) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Namespace, "nodemesh-check")
	def(&o.PlainNamespace, o.Namespace+"-plain")
	def(&o.SidecarNamespace, o.Namespace+"-sidecar")
	def(&o.Version, "dev")
	def(&o.ClientImage, DefaultClientImage(o.Version))
	def(&o.EchoImage, DefaultEchoImage(o.Version))
	if o.Requests <= 0 {
		o.Requests = 100
	}
	if o.Tolerance <= 0 {
		o.Tolerance = 0.1
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 5 * time.Minute
	}
	if o.Settle < 0 {
		o.Settle = 0
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
}

// DefaultClientImage is the clients' image at a nodemesh version:
// nodemesh's curl image (curl and a POSIX shell), which 'make images' builds
// offline, so that the check needs no registry. Any image with sh and curl
// does (docker.io/curlimages/curl).
func DefaultClientImage(version string) string { return api.ImageRef(api.CurlImage, version) }

// DefaultEchoImage is the echo servers' image at a nodemesh version:
// nodemesh's test app, whose 'netexec' serves the agnhost netexec endpoints
// the tests use (/hostname answers with the pod name, /healthz). agnhost
// itself (registry.k8s.io/e2e-test-images/agnhost) runs with the same
// arguments.
func DefaultEchoImage(version string) string { return api.ImageRef(api.TestAppImage, version) }

// Suite runs tests against one cluster.
type Suite struct {
	Kube    kubernetes.Interface
	Dynamic dynamic.Interface
	Runner  Runner
	Tests   []Test
	opts    Options
}

// NewSuite prepares a run of tests (DefaultTests when nil).
func NewSuite(cfg *rest.Config, runner Runner, tests []Test, o Options) (*Suite, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if tests == nil {
		tests = DefaultTests()
	}
	o.defaults()
	return &Suite{Kube: kube, Dynamic: dyn, Runner: runner, Tests: tests, opts: o}, nil
}

// Outcome of a test or action.
type Outcome string

const (
	Passed  Outcome = "passed"
	Failed  Outcome = "failed"
	Skipped Outcome = "skipped"
)

// TestReport is one test's result.
type TestReport struct {
	Name     string
	Outcome  Outcome
	Reason   string // why skipped, or a setup failure
	Actions  []ActionReport
	Duration time.Duration
}

// ActionReport is one action's result.
type ActionReport struct {
	Scenario, Action string
	Command          []string
	From             Pod
	Outcome          Outcome
	Detail           string // why it failed
	Result           Result
}

// Report is a whole run.
type Report struct {
	Tests    []TestReport
	Duration time.Duration
}

// Failed reports whether any test failed.
func (r *Report) Failed() bool {
	for _, t := range r.Tests {
		if t.Outcome == Failed {
			return true
		}
	}
	return false
}

// Select returns the tests the filters keep.
func Select(tests []Test, filters []string) ([]Test, error) {
	var inc, exc []*regexp.Regexp
	for _, f := range filters {
		neg := strings.HasPrefix(f, "!")
		re, err := regexp.Compile(strings.TrimPrefix(f, "!"))
		if err != nil {
			return nil, fmt.Errorf("--test %q: %w", f, err)
		}
		if neg {
			exc = append(exc, re)
		} else {
			inc = append(inc, re)
		}
	}
	var out []Test
	for _, t := range tests {
		keep := len(inc) == 0
		for _, re := range inc {
			keep = keep || re.MatchString(t.Name)
		}
		for _, re := range exc {
			keep = keep && !re.MatchString(t.Name)
		}
		if keep {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no test matches the --test filters")
	}
	return out, nil
}

// Run deploys the workloads, runs the selected tests and cleans up (unless
// Keep). The report is printed to Out as it goes: a line per test, details
// only for failures, and a summary.
func (s *Suite) Run(ctx context.Context) (*Report, error) {
	start := time.Now()
	o := &s.opts
	tests, err := Select(s.Tests, o.Filters)
	if err != nil {
		return nil, err
	}
	env := &Env{Namespace: o.Namespace, PlainNamespace: o.PlainNamespace, SidecarNamespace: o.SidecarNamespace, Opts: o}
	env.Istio, err = s.istioPresent(ctx)
	if err != nil {
		return nil, err
	}
	if env.NodeProxy, err = s.nodeProxy(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Out, "🔭 nodemesh check: %d tests; workloads in %s (opted in) and %s (not opted in)\n", len(tests), o.Namespace, o.PlainNamespace)
	if !o.Keep {
		defer func() {
			fmt.Fprintf(o.Out, "🧹 removing the test namespaces\n")
			if cerr := s.cleanup(context.WithoutCancel(ctx), env); cerr != nil {
				fmt.Fprintf(o.Out, "⚠️  cleanup: %v\n", cerr)
			}
		}()
	}
	if err := s.deploy(ctx, env); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Out, "⌛ waiting for the workloads …\n")
	if err := s.waitReady(ctx, env); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Out, "✅ workloads ready (%s)\n\n", time.Since(start).Round(time.Second))
	rep := &Report{}
	for _, t := range tests {
		tr := s.runTest(ctx, env, t)
		rep.Tests = append(rep.Tests, tr)
		printTest(o.Out, tr)
	}
	rep.Duration = time.Since(start)
	printSummary(o.Out, rep)
	return rep, nil
}

func (s *Suite) runTest(ctx context.Context, env *Env, t Test) TestReport {
	start := time.Now()
	tr := TestReport{Name: t.Name}
	if t.Requires != nil {
		if why := t.Requires(env); why != "" {
			tr.Outcome, tr.Reason = Skipped, why
			return tr
		}
	}
	if t.Resources != "" {
		applied, err := s.apply(ctx, env, t.Resources)
		defer func() {
			if err := s.remove(context.WithoutCancel(ctx), applied); err != nil {
				fmt.Fprintf(s.opts.Out, "⚠️  %s: removing its resources: %v\n", t.Name, err)
			}
		}()
		if err != nil {
			tr.Outcome, tr.Reason = Failed, "apply resources: "+err.Error()
			tr.Duration = time.Since(start)
			return tr
		}
		select {
		case <-ctx.Done():
		case <-time.After(s.opts.Settle):
		}
	}
	tr.Outcome = Passed
	for _, sc := range t.Scenarios {
		for _, a := range sc.Actions(env) {
			ar := ActionReport{Scenario: sc.Name, Action: a.Name, Command: a.Command, From: a.From}
			actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			ar.Result.Stdout, ar.Result.Stderr, ar.Result.Err = s.Runner.Exec(actx, a.From.Namespace, a.From.Name, a.From.Container, a.Command)
			cancel()
			if err := a.Expect(ar.Result); err != nil {
				ar.Outcome, ar.Detail = Failed, err.Error()
				tr.Outcome = Failed
			} else {
				ar.Outcome = Passed
			}
			tr.Actions = append(tr.Actions, ar)
		}
	}
	tr.Duration = time.Since(start)
	return tr
}

func printTest(w io.Writer, t TestReport) {
	switch t.Outcome {
	case Passed:
		fmt.Fprintf(w, "✅ %s (%d actions)\n", t.Name, len(t.Actions))
	case Skipped:
		fmt.Fprintf(w, "⏭️  %s: skipped (%s)\n", t.Name, t.Reason)
	case Failed:
		fmt.Fprintf(w, "❌ %s\n", t.Name)
		if t.Reason != "" {
			fmt.Fprintf(w, "   %s\n", t.Reason)
		}
		for _, a := range t.Actions {
			if a.Outcome != Failed {
				continue
			}
			fmt.Fprintf(w, "   ❌ %s/%s: %s\n", a.Scenario, a.Action, a.Detail)
			fmt.Fprintf(w, "      from %s/%s on %s: %s\n", a.From.Namespace, a.From.Name, a.From.Node, shellQuote(a.Command))
			if out := strings.TrimSpace(a.Result.Stdout); out != "" {
				fmt.Fprintf(w, "      stdout: %s\n", clip(out))
			}
			if e := strings.TrimSpace(a.Result.Stderr); e != "" {
				fmt.Fprintf(w, "      stderr: %s\n", clip(e))
			}
			if a.Result.Err != nil {
				fmt.Fprintf(w, "      error: %v\n", a.Result.Err)
			}
		}
	}
}

func printSummary(w io.Writer, r *Report) {
	var passed, failed, skipped, actions, failedActions int
	for _, t := range r.Tests {
		switch t.Outcome {
		case Passed:
			passed++
		case Failed:
			failed++
		case Skipped:
			skipped++
		}
		for _, a := range t.Actions {
			actions++
			if a.Outcome == Failed {
				failedActions++
			}
		}
	}
	fmt.Fprintln(w)
	if failed == 0 {
		fmt.Fprintf(w, "📋 ✅ all %d tests passed (%d actions), %d skipped, in %s\n", passed, actions, skipped, r.Duration.Round(time.Second))
		return
	}
	fmt.Fprintf(w, "📋 ❌ %d of %d tests failed (%d of %d actions), %d passed, %d skipped, in %s\n", failed, failed+passed, failedActions, actions, passed, skipped, r.Duration.Round(time.Second))
}

// shellQuote renders a command the way a user would paste it.
func shellQuote(cmd []string) string {
	var parts []string
	for _, c := range cmd {
		if c == "" || strings.ContainsAny(c, " '\"$&|;<>()*?\\\n") {
			c = "'" + strings.ReplaceAll(c, "'", `'\''`) + "'"
		}
		parts = append(parts, c)
	}
	return strings.Join(parts, " ")
}

func clip(s string) string {
	s = strings.ReplaceAll(s, "\n", " ⏎ ")
	if len(s) > 300 {
		return s[:300] + " …"
	}
	return s
}
