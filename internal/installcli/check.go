package installcli

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/install"
	"github.com/nodemesh/nodemesh/install/check"
	"github.com/nodemesh/nodemesh/internal/cli"
	"github.com/nodemesh/nodemesh/internal/clibase"
)

type checkOptions struct {
	kube         cli.KubeFlags
	opts         check.Options
	nodeSelector []string
	tolerations  []string
	junit        string
}

func newCheckCommand(streams cli.IO) *cobra.Command {
	o := &checkOptions{}
	cmd := &cobra.Command{
		Use:   "check [--test REGEX]... [--junit FILE]",
		Short: "Prove the mesh works: deploy test workloads and run connectivity tests",
		Long: `Check deploys its own workloads — client, echo-same-node and echo-other-node in an
opted-in namespace (nodemesh-check), client-plain and echo-plain in one that is not
opted in (nodemesh-check-plain), and with Istio a sidecar-injected pair — waits
until they are ready, runs the tests and deletes everything.

Tests (each applies the resources it needs and removes them afterwards):
  pod-to-pod               client → each echo pod's IP
  pod-to-service           client → each echo Service
  vs-weighted-split        VirtualService 80/20 between two subsets; the observed
                           split is within --tolerance
  vs-header-match          a header routes to v2, its absence to v1
  vs-fault-abort           a fault abort answers 418
  networkpolicy-deny       a NetworkPolicy denies ingress to one echo server
  not-opted-in-untouched   the same abort VirtualService does not touch a client in
                           a namespace that is not opted in
  sidecar-interop          sidecar → nodemesh and back (only when istiod runs)

Output is one line per test; a failed test shows each failed action with the pod,
the command (to rerun with kubectl exec) and its output. --test keeps the tests whose
name matches (and '!REGEX' drops them); --junit writes JUnit XML for CI.

It needs: nodemesh installed and healthy ('nodemesh status'), nodes that can pull the
client and echo images (--client-image/--echo-image for a private registry), two
schedulable nodes for the other-node cases (one node works: the actions then stay on
it), and permission to create namespaces, Deployments, Services, Istio resources and
NetworkPolicies, and to exec into pods.

Exit status: 0 every test passed (or was skipped); 1 a test failed or the workloads
did not become ready; 2 wrong flags.`,
		Example: `  nodemesh check
  nodemesh check --test '^vs-' --junit check.xml
  nodemesh check --test '!sidecar' --client-image registry.example.com/curl:8.11.1 \
      --echo-image registry.example.com/agnhost:2.53 --node-selector pool=general \
      --toleration dedicated=mesh:NoSchedule`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns, err := parseNodeSelector(o.nodeSelector)
			if err != nil {
				return err
			}
			o.opts.NodeSelector = ns
			if o.opts.Tolerations, err = parseTolerations(o.tolerations); err != nil {
				return err
			}
			if _, err := check.Select(check.DefaultTests(), o.opts.Filters); err != nil {
				return cli.UsageError("%v", err)
			}
			o.opts.Out = streams.Out
			cfg, err := o.kube.RestConfig()
			if err != nil {
				return &cli.ExitError{Code: cli.ExitFindings, Err: fmt.Errorf("%w: %w", install.ErrUnreachable, err)}
			}
			kube, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			if _, err := kube.Discovery().ServerVersion(); err != nil {
				return &cli.ExitError{Code: cli.ExitFindings, Err: fmt.Errorf("%w at %s: %v", install.ErrUnreachable, cfg.Host, err)}
			}
			suite, err := check.NewSuite(cfg, &check.ExecRunner{Config: cfg, Kube: kube}, nil, o.opts)
			if err != nil {
				return err
			}
			rep, err := suite.Run(cmd.Context())
			if err != nil {
				return &cli.ExitError{Code: cli.ExitFindings, Err: err}
			}
			if o.junit != "" {
				f, err := os.Create(o.junit)
				if err != nil {
					return &cli.ExitError{Code: cli.ExitFindings, Err: err}
				}
				werr := check.WriteJUnit(f, rep)
				if cerr := f.Close(); werr == nil {
					werr = cerr
				}
				if werr != nil {
					return &cli.ExitError{Code: cli.ExitFindings, Err: fmt.Errorf("write %s: %w", o.junit, werr)}
				}
			}
			if rep.Failed() {
				return &cli.ExitError{Code: cli.ExitFindings}
			}
			return nil
		},
	}
	o.kube.Add(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&o.opts.Filters, "test", nil, "run only tests matching this regular expression; '!REGEX' skips matching tests (may be repeated)")
	f.StringVar(&o.junit, "junit", "", "write a JUnit XML report to this file")
	f.StringVar(&o.opts.Namespace, "test-namespace", "nodemesh-check", "the opted-in namespace for the workloads (NAME-plain and NAME-sidecar are created too)")
	f.StringVar(&o.opts.ClientImage, "client-image", check.DefaultClientImage(clibase.Version), "image with sh and curl for the clients (make images builds the default)")
	f.StringVar(&o.opts.EchoImage, "echo-image", check.DefaultEchoImage(clibase.Version), "image of the echo servers, run with 'netexec --http-port=8080' (make images builds the default; agnhost works too)")
	f.StringArrayVar(&o.nodeSelector, "node-selector", nil, "KEY=VALUE node selector for the workloads (may be repeated)")
	f.StringArrayVar(&o.tolerations, "toleration", nil, "toleration for the workloads: KEY[=VALUE]:EFFECT, or Exists (may be repeated)")
	f.IntVar(&o.opts.Requests, "requests", 100, "requests for the weighted split")
	f.Float64Var(&o.opts.Tolerance, "tolerance", 0.1, "allowed difference of the observed split share (0.1 = ±10 points)")
	f.DurationVar(&o.opts.ReadyTimeout, "ready-timeout", 5*time.Minute, "how long to wait for the workloads")
	f.DurationVar(&o.opts.Settle, "settle", 3*time.Second, "wait after applying a test's resources before running it")
	f.BoolVar(&o.opts.Keep, "keep", false, "leave the workloads and namespaces in place")
	return cmd
}

func parseNodeSelector(ss []string) (map[string]string, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, s := range ss {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, cli.UsageError("--node-selector %q: want KEY=VALUE", s)
		}
		out[k] = v
	}
	return out, nil
}

// parseTolerations reads KEY[=VALUE]:EFFECT, KEY (any effect) or Exists.
func parseTolerations(ss []string) ([]corev1.Toleration, error) {
	var out []corev1.Toleration
	for _, s := range ss {
		if s == "Exists" {
			out = append(out, corev1.Toleration{Operator: corev1.TolerationOpExists})
			continue
		}
		kv, effect, _ := strings.Cut(s, ":")
		t := corev1.Toleration{Effect: corev1.TaintEffect(effect)}
		switch t.Effect {
		case "", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			return nil, cli.UsageError("--toleration %q: effect must be NoSchedule, PreferNoSchedule or NoExecute", s)
		}
		if k, v, ok := strings.Cut(kv, "="); ok {
			t.Key, t.Value, t.Operator = k, v, corev1.TolerationOpEqual
		} else {
			t.Key, t.Operator = kv, corev1.TolerationOpExists
		}
		if t.Key == "" {
			return nil, cli.UsageError("--toleration %q: want KEY[=VALUE]:EFFECT or Exists", s)
		}
		out = append(out, t)
	}
	return out, nil
}
