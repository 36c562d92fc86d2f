package installcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/cli"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"

	"github.com/nodemesh/nodemesh/install"
	"github.com/nodemesh/nodemesh/internal/clibase"
)

// releaseFlags are what every install-family command shares: the cluster,
// the release namespace and name, and the chart.
type releaseFlags struct {
	kube      cli.KubeFlags
	namespace string
	release   string
	chartDir  string
	version   string
}

func (r *releaseFlags) add(cmd *cobra.Command, withChart bool) {
	r.kube.Add(cmd)
	f := cmd.Flags()
	f.StringVarP(&r.namespace, "namespace", "n", api.DefaultNamespace, "the namespace nodemesh is installed in")
	f.StringVar(&r.release, "release", api.DefaultReleaseName, "the Helm release name")
	if withChart {
		f.StringVar(&r.chartDir, "chart-dir", "", "use the chart in this directory instead of the embedded one (development)")
		f.StringVar(&r.version, "version", "", "the chart version to install; this binary carries one (see 'nodemesh version'): any other is refused")
	}
}

// getter is the kubeconfig as the Helm SDK wants it.
func (r *releaseFlags) getter() genericclioptions.RESTClientGetter {
	f := genericclioptions.NewConfigFlags(false)
	if r.kube.Kubeconfig != "" {
		f.KubeConfig = &r.kube.Kubeconfig
	}
	if r.kube.Context != "" {
		f.Context = &r.kube.Context
	}
	ns := r.namespace
	f.Namespace = &ns
	f.WrapConfigFn = func(c *rest.Config) *rest.Config {
		c.UserAgent = clibase.UserAgent
		return c
	}
	return f
}

// connect reaches the cluster; an unreachable one is one line, exit 1.
func (r *releaseFlags) connect(ctx context.Context) (*install.Client, error) {
	getter := r.getter()
	// Without any kubeconfig client-go falls back to http://localhost:8080,
	// which only confuses: say what is missing.
	if raw, err := getter.ToRawKubeConfigLoader().RawConfig(); err == nil && len(raw.Contexts) == 0 && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return nil, &cli.ExitError{Code: cli.ExitFindings, Err: fmt.Errorf("%w: no kubeconfig (looked at --kubeconfig, $KUBECONFIG and ~/.kube/config) and not running in a cluster", install.ErrUnreachable)}
	}
	c, err := install.Connect(ctx, getter, r.namespace, r.release)
	if err != nil {
		return nil, &cli.ExitError{Code: cli.ExitFindings, Err: fmt.Errorf("%w (check --kubeconfig, --context or $KUBECONFIG)", err)}
	}
	return c, nil
}

// chart is the embedded chart, or --chart-dir's, at --version.
func (r *releaseFlags) chart() (*chart.Chart, error) {
	var c *chart.Chart
	var err error
	if r.chartDir != "" {
		c, err = loader.Load(r.chartDir)
	} else {
		c, err = install.Chart()
	}
	if err != nil {
		return nil, err
	}
	if r.chartDir == "" {
		// The embedded chart deploys the images of this build's version.
		install.WithAppVersion(c, clibase.Version)
	}
	if r.version != "" && r.version != c.Metadata.Version {
		return nil, cli.UsageError("--version %s: this nodemesh carries chart %s; use the nodemesh CLI of release %s, or --chart-dir", r.version, c.Metadata.Version, r.version)
	}
	return c, nil
}

// addValueFlags are Helm's value flags.
func addValueFlags(f *pflag.FlagSet, v *install.ValueOptions) {
	f.StringSliceVarP(&v.ValueFiles, "values", "f", nil, "values file (YAML); may be repeated, later files win")
	f.StringArrayVar(&v.Values, "set", nil, "a value: --set controller.replicas=2 (may be repeated; after -f)")
	f.StringArrayVar(&v.StringValues, "set-string", nil, "a value that stays a string: --set-string envoy.image.tag=1.36")
	f.StringArrayVar(&v.FileValues, "set-file", nil, "a value read from a file: --set-file key=path")
	f.StringArrayVar(&v.JSONValues, "set-json", nil, "a JSON value: --set-json 'agent.tolerations=[{\"operator\":\"Exists\"}]'")
}

// userValues reads the value flags; a file that cannot be read or parsed
// is a usage error.
func userValues(v install.ValueOptions) (map[string]any, error) {
	vals, err := install.UserValues(v)
	if err != nil {
		return nil, cli.UsageError("%v", err)
	}
	return vals, nil
}

// lifecycleError maps install errors to exit codes: invalid values are
// usage errors (2), everything else a failure (1).
func lifecycleError(err error) error {
	if err == nil {
		return nil
	}
	var ee *cli.ExitError
	if errors.As(err, &ee) {
		return err
	}
	if errors.Is(err, install.ErrInvalidValues) {
		return &cli.ExitError{Code: cli.ExitUsage, Err: err}
	}
	return &cli.ExitError{Code: cli.ExitFindings, Err: err}
}

type installOptions struct {
	rel           releaseFlags
	values        install.ValueOptions
	dryRun        bool
	output        string
	kubeVersion   string
	wait          bool
	timeout       time.Duration
	skipPreflight bool
}

func newInstallCommand(streams cli.IO) *cobra.Command {
	o := &installOptions{}
	cmd := &cobra.Command{
		Use:   "install [--set k=v] [-f values.yaml] [--dry-run [-o yaml]] [--wait] [--timeout 5m]",
		Short: "Install nodemesh on the cluster (Helm release, embedded chart)",
		Long: `Install runs the preflight checks (one line each, with the fix for any that fails),
then installs the embedded Helm chart as release "nodemesh" in nodemesh-system: the
nodemesh CRDs, the controller, the agent and node Envoy DaemonSets and their RBAC.
The release is recorded in a Secret, as Helm does, so 'helm list -n nodemesh-system'
shows it too.

Values are checked against the chart's schema before anything reaches the cluster;
an unknown or mistyped key is named ("controller.replica: unknown key (did you mean
controller.replicas?)"). If the install fails part way, everything it created is
removed again. An existing release is never overwritten: use 'nodemesh upgrade'.

--dry-run prints the manifests (multi-document YAML, CRDs included) without a
cluster — the same output as 'helm template nodemesh install/chart --include-crds'.

--wait shows which component is not ready yet and why (image pull, crash loop,
pending), whenever that changes, and ends with a summary.

Exit status: 0 installed (and ready, with --wait); 1 preflight failed, the cluster
is unreachable, nodemesh is already installed, the install failed or was not ready
in time; 2 wrong flags or invalid values.`,
		Example: `  nodemesh install --dry-run -o yaml > nodemesh.yaml
  nodemesh install --wait
  nodemesh install --set global.imageRegistry=registry.example.com --set controller.replicas=2
  nodemesh install -f my-values.yaml --timeout 10m --wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lifecycleError(runInstall(cmd.Context(), o, streams))
		},
	}
	o.rel.add(cmd, true)
	f := cmd.Flags()
	addValueFlags(f, &o.values)
	f.BoolVar(&o.dryRun, "dry-run", false, "print the manifests instead of installing; needs no cluster")
	f.StringVarP(&o.output, "output", "o", "yaml", "with --dry-run: yaml (the manifests)")
	f.StringVar(&o.kubeVersion, "kube-version", install.DefaultKubeVersion, "with --dry-run: the Kubernetes version to render for")
	f.BoolVar(&o.wait, "wait", false, "wait until every component is ready, showing progress")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long the install (and --wait) may take")
	f.BoolVar(&o.skipPreflight, "skip-preflight", false, "install even when a preflight check fails")
	return cmd
}

func runInstall(ctx context.Context, o *installOptions, streams cli.IO) error {
	if o.output != "yaml" {
		return cli.UsageError("-o %q: want yaml", o.output)
	}
	ch, err := o.rel.chart()
	if err != nil {
		return err
	}
	vals, err := userValues(o.values)
	if err != nil {
		return err
	}
	if o.dryRun {
		out, err := install.Render(ch, install.RenderOptions{ReleaseName: o.rel.release, Namespace: o.rel.namespace, Values: vals, KubeVersion: o.kubeVersion})
		if err != nil {
			return err
		}
		_, err = io.WriteString(streams.Out, out)
		return err
	}
	if err := install.Validate(ch, vals); err != nil {
		return err
	}
	c, err := o.rel.connect(ctx)
	if err != nil {
		return err
	}
	if !o.skipPreflight {
		fmt.Fprintln(streams.Out, "Preflight checks")
		results := c.Preflight(ctx, ch, vals)
		printChecks(streams.Out, results)
		if install.Failed(results) {
			return &cli.ExitError{Code: cli.ExitFindings, Err: errors.New("preflight failed: fix the checks marked ❌ (or --skip-preflight)")}
		}
		fmt.Fprintln(streams.Out)
	}
	fmt.Fprintf(streams.Out, "Installing nodemesh %s into %s\n", ch.Metadata.AppVersion, o.rel.namespace)
	rel, err := c.Install(ctx, ch, install.InstallOptions{Values: vals, Timeout: o.timeout, Wait: o.wait, Out: streams.Out})
	if rel == nil {
		return err
	}
	fmt.Fprintf(streams.Out, "✅ installed: release %s, revision %d, chart %s-%s\n", rel.Name, rel.Version, rel.Chart.Metadata.Name, rel.Chart.Metadata.Version)
	if err != nil {
		// Installed, not ready in time: the release stays; status tells more.
		return fmt.Errorf("%w\n'nodemesh status' shows the current state", err)
	}
	fmt.Fprintln(streams.Out, "Next: 'nodemesh status --wait', then 'nodemesh check'; opt a namespace in with\n  kubectl label namespace NAME "+api.DataplaneModeLabel+"="+api.DataplaneModeNodemesh)
	return nil
}

// printChecks prints one line per preflight check and, under a warning or
// a failure, its fix.
func printChecks(w io.Writer, rs []install.CheckResult) {
	width := 0
	for _, r := range rs {
		width = max(width, len(r.Name))
	}
	for _, r := range rs {
		mark := map[install.CheckStatus]string{install.Pass: "✅", install.Warn: "⚠️ ", install.Fail: "❌"}[r.Status]
		fmt.Fprintf(w, "%s %-*s  %s\n", mark, width, r.Name, r.Message)
		if r.Fix != "" {
			fmt.Fprintf(w, "   %-*s  fix: %s\n", width, "", r.Fix)
		}
	}
}

type upgradeOptions struct {
	rel         releaseFlags
	values      install.ValueOptions
	resetValues bool
	wait        bool
	timeout     time.Duration
}

func newUpgradeCommand(streams cli.IO) *cobra.Command {
	o := &upgradeOptions{}
	cmd := &cobra.Command{
		Use:   "upgrade [--set k=v] [-f values.yaml] [--reset-values] [--wait]",
		Short: "Upgrade the release to this nodemesh's chart, or change its values",
		Long: `Upgrade moves the release to the chart this binary carries, with the values:

  1. the new chart's defaults,
  2. then the values you gave earlier installs and upgrades (kept in the release;
     'helm get values nodemesh -n nodemesh-system' shows them),
  3. then the values given now.

So a value you set once stays set, and a default that changed in the new chart
takes effect unless you had set it yourself ("reset then reuse", as Helm 3.14's
--reset-then-reuse-values). Helm's --reuse-values instead reuses the old chart's
defaults too, which silently keeps stale defaults and breaks on new keys.
--reset-values forgets earlier values: only the chart's defaults and this command's.

The chart's CRDs are applied before the release (Helm never upgrades crds/). The
objects whose manifest changed are listed; the others are not touched.

Exit status: 0 upgraded (and ready, with --wait); 1 not installed, unreachable,
failed or not ready in time; 2 wrong flags or invalid values.`,
		Example: `  nodemesh upgrade --set envoy.image.tag=v1.36.4 --wait
  nodemesh upgrade --reset-values -f values.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lifecycleError(runUpgrade(cmd.Context(), o, streams))
		},
	}
	o.rel.add(cmd, true)
	f := cmd.Flags()
	addValueFlags(f, &o.values)
	f.BoolVar(&o.resetValues, "reset-values", false, "forget the values given before; only the chart's defaults and this command's values")
	f.BoolVar(&o.wait, "wait", false, "wait until every component is ready, showing progress")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long the upgrade (and --wait) may take")
	return cmd
}

func runUpgrade(ctx context.Context, o *upgradeOptions, streams cli.IO) error {
	ch, err := o.rel.chart()
	if err != nil {
		return err
	}
	vals, err := userValues(o.values)
	if err != nil {
		return err
	}
	if err := install.Validate(ch, vals); err != nil {
		return err
	}
	c, err := o.rel.connect(ctx)
	if err != nil {
		return err
	}
	res, err := c.Upgrade(ctx, ch, install.UpgradeOptions{Values: vals, ResetValues: o.resetValues, Timeout: o.timeout, Wait: o.wait, Out: streams.Out})
	if res != nil {
		if len(res.Changed) == 0 {
			fmt.Fprintln(streams.Out, "no object changed")
		} else {
			fmt.Fprintln(streams.Out, "changed:")
			for _, ch := range res.Changed {
				fmt.Fprintln(streams.Out, "  "+ch)
			}
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(streams.Out, "✅ upgraded: release %s, revision %d, chart %s-%s\n", res.Release.Name, res.Release.Version, res.Release.Chart.Metadata.Name, res.Release.Chart.Metadata.Version)
	return nil
}

type uninstallOptions struct {
	rel            releaseFlags
	purge          bool
	timeout        time.Duration
	cleanupTimeout time.Duration
}

func newUninstallCommand(streams cli.IO) *cobra.Command {
	o := &uninstallOptions{}
	cmd := &cobra.Command{
		Use:   "uninstall [--purge]",
		Short: "Remove nodemesh from the cluster and its nodes",
		Long: `Uninstall first deletes the agent DaemonSet: each agent, stopped because its
DaemonSet is being deleted, removes nodemesh from its node — eBPF programs, pinned
maps, its CNI configuration and plugin — and records a NodeCleaned Event on the
DaemonSet. Uninstall waits (--cleanup-timeout) for every node's answer and lists the
nodes that did not answer. Then it deletes the release and every object it made.
Nothing but the deletion of the agent DaemonSet removes enforcement from a node.

The CRDs (identities.nodemesh.io, trafficpolicies.nodemesh.io) stay, and with them
your TrafficPolicies, unless --purge: then they are deleted, with every object of
theirs, and so is the namespace if nodemesh created it.

Exit status: 0 removed; 1 not installed (without --purge), unreachable or failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lifecycleError(runUninstall(cmd.Context(), o, streams))
		},
	}
	o.rel.add(cmd, false)
	f := cmd.Flags()
	f.BoolVar(&o.purge, "purge", false, "also delete nodemesh's CRDs (every TrafficPolicy and Identity with them) and the namespace nodemesh created")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long deleting the release may take")
	f.DurationVar(&o.cleanupTimeout, "cleanup-timeout", time.Minute, "how long to wait for the agents to clean their nodes")
	return cmd
}

func runUninstall(ctx context.Context, o *uninstallOptions, streams cli.IO) error {
	ch, err := install.Chart()
	if err != nil {
		return err
	}
	c, err := o.rel.connect(ctx)
	if err != nil {
		return err
	}
	res, err := c.Uninstall(ctx, ch, install.UninstallOptions{Purge: o.purge, Timeout: o.timeout, CleanupTimeout: o.cleanupTimeout, Out: streams.Out})
	if res != nil {
		if len(res.Cleaned) > 0 {
			fmt.Fprintf(streams.Out, "✅ %d nodes cleaned\n", len(res.Cleaned))
		}
		if len(res.Unconfirmed) > 0 {
			fmt.Fprintf(streams.Out, "⚠️  no cleanup answer from %v: run 'nodemesh-agent cleanup' on them\n", res.Unconfirmed)
		}
		if res.ReleaseRemoved {
			fmt.Fprintf(streams.Out, "✅ release %s removed from %s\n", o.rel.release, o.rel.namespace)
		}
		if res.CABundlesDeleted > 0 {
			fmt.Fprintf(streams.Out, "✅ CA bundle (ConfigMap %s) deleted from %d other namespaces\n", api.CABundleConfigMap, res.CABundlesDeleted)
		}
		if len(res.CRDsDeleted) > 0 {
			fmt.Fprintf(streams.Out, "✅ CRDs deleted: %v\n", res.CRDsDeleted)
			for _, t := range res.CRDsTerminating {
				fmt.Fprintf(streams.Out, "⏳ the API server is still removing CRD %s; it finishes on its own\n", t)
			}
		} else if res.ReleaseRemoved {
			fmt.Fprintln(streams.Out, "CRDs kept (with your TrafficPolicies); --purge deletes them")
		}
		if res.NamespaceDeleted {
			fmt.Fprintf(streams.Out, "✅ namespace %s deleted\n", o.rel.namespace)
		}
	}
	return err
}

type statusOptions struct {
	rel     releaseFlags
	output  string
	wait    bool
	timeout time.Duration
}

func newStatusCommand(streams cli.IO) *cobra.Command {
	o := &statusOptions{}
	cmd := &cobra.Command{
		Use:   "status [--wait] [-o text|json]",
		Short: "Show whether nodemesh is healthy: components, nodes, xDS clients, opted-in namespaces",
		Long: `Status shows the release, the controller Deployment and the agent and node Envoy
DaemonSets (with why any pod is not ready: image pull, crash loop, pending), each
node's agent, Envoy and xDS connection, the controller's connected xDS clients (read
from its /debug/nodes through the API server's service proxy), and the namespaces
opted in with istio.io/dataplane-mode=nodemesh.

--wait polls until healthy or --timeout, printing progress.

Exit status: 0 healthy; 1 not healthy, not installed or unreachable; 2 wrong flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lifecycleError(runStatus(cmd.Context(), o, streams))
		},
	}
	o.rel.add(cmd, false)
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "text", "text or json")
	f.BoolVar(&o.wait, "wait", false, "wait until healthy")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "with --wait: how long to wait")
	return cmd
}

func runStatus(ctx context.Context, o *statusOptions, streams cli.IO) error {
	if o.output != "text" && o.output != "json" {
		return cli.UsageError("-o %q: want text or json", o.output)
	}
	c, err := o.rel.connect(ctx)
	if err != nil {
		return err
	}
	var s *install.Status
	deadline := time.Now().Add(o.timeout)
	progressOut := streams.Out
	if o.output == "json" {
		progressOut = streams.ErrOut
	}
	last := ""
	for {
		if s, err = c.Status(ctx); err != nil {
			return err
		}
		if s.Healthy || !o.wait || time.Now().After(deadline) {
			break
		}
		if line := fmt.Sprint(s.Problems); line != last {
			for _, p := range s.Problems {
				fmt.Fprintln(progressOut, "⏳ "+p)
			}
			last = line
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	if o.output == "json" {
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(streams.Out, string(b))
	} else {
		printStatus(streams.Out, s)
	}
	if !s.Healthy {
		return &cli.ExitError{Code: cli.ExitFindings}
	}
	return nil
}

func printStatus(w io.Writer, s *install.Status) {
	if r := s.Release; r != nil {
		fmt.Fprintf(w, "nodemesh %s: release %s in %s, revision %d (%s), %s\n\n", r.AppVersion, r.Name, r.Namespace, r.Revision, r.Chart, r.Status)
	}
	fmt.Fprintln(w, "Components")
	for _, c := range s.Components {
		mark := "✅"
		if !c.IsReady() {
			mark = "❌"
		}
		fmt.Fprintf(w, "  %s %s\n", mark, c.Line())
	}
	fmt.Fprintln(w, "\nNodes")
	if len(s.Nodes) == 0 {
		fmt.Fprintln(w, "  (no agent or Envoy pods)")
	} else {
		tw := cli.NewTable(w, "  NODE", "AGENT", "ENVOY", "XDS")
		for _, n := range s.Nodes {
			tw.Row("  "+n.Node, n.Agent, n.Envoy, n.XDS)
		}
		tw.Flush()
	}
	fmt.Fprintln(w, "\nxDS clients")
	switch {
	case s.XDSError != "":
		fmt.Fprintln(w, "  unknown: "+s.XDSError)
	case len(s.XDS) == 0:
		fmt.Fprintln(w, "  none connected")
	default:
		connected := 0
		for _, x := range s.XDS {
			if x.Connected {
				connected++
			}
		}
		fmt.Fprintf(w, "  %d connected of %d known\n", connected, len(s.XDS))
	}
	fmt.Fprintf(w, "\nOpted-in namespaces (%s=%s): ", api.DataplaneModeLabel, api.DataplaneModeNodemesh)
	if len(s.OptedIn) == 0 {
		fmt.Fprintln(w, "none")
	} else {
		fmt.Fprintln(w, strings.Join(s.OptedIn, ", "))
	}
	fmt.Fprintln(w)
	if s.Healthy {
		fmt.Fprintln(w, "✅ healthy")
		return
	}
	fmt.Fprintf(w, "❌ not healthy (%d problems):\n", len(s.Problems))
	for _, p := range s.Problems {
		fmt.Fprintln(w, "  - "+p)
	}
}

type preflightOptions struct {
	rel    releaseFlags
	values install.ValueOptions
	output string
}

func newPreflightCommand(streams cli.IO) *cobra.Command {
	o := &preflightOptions{}
	cmd := &cobra.Command{
		Use:   "preflight [--set k=v] [-f values.yaml] [-o text|json]",
		Short: "Run the checks 'nodemesh install' runs first, without installing",
		Long: `Preflight checks the cluster for nodemesh, one line each, with the fix for any
warning or failure: Kubernetes version, your permissions, an existing release, the
namespace's Pod Security level, Istio (its CRDs, istiod and its version), namespaces
with sidecar injection, Istio ambient, the primary CNI (and whether it would remove
nodemesh's CNI configuration), and the nodes' kernels. The checks judge the values
you would install with: give the same -f/--set as to 'nodemesh install' (for example
--set agent.cni.mode=chained changes what the CNI check expects).

Exit status: 0 no check failed (warnings allowed); 1 a check failed or the cluster is
unreachable; 2 wrong flags or invalid values.`,
		Example: `  nodemesh preflight
  nodemesh preflight -f my-values.yaml -o json
  nodemesh preflight --set agent.cni.mode=chained --set agent.routingMode=none`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "text" && o.output != "json" {
				return cli.UsageError("-o %q: want text or json", o.output)
			}
			ch, err := o.rel.chart()
			if err != nil {
				return err
			}
			vals, err := userValues(o.values)
			if err != nil {
				return err
			}
			if err := install.Validate(ch, vals); err != nil {
				return err
			}
			c, err := o.rel.connect(cmd.Context())
			if err != nil {
				return err
			}
			results := c.Preflight(cmd.Context(), ch, vals)
			if o.output == "json" {
				b, err := json.MarshalIndent(results, "", "  ")
				if err != nil {
					return err
				}
				fmt.Fprintln(streams.Out, string(b))
			} else {
				printChecks(streams.Out, results)
			}
			if install.Failed(results) {
				return &cli.ExitError{Code: cli.ExitFindings}
			}
			return nil
		},
	}
	o.rel.add(cmd, true)
	addValueFlags(cmd.Flags(), &o.values)
	cmd.Flags().StringVarP(&o.output, "output", "o", "text", "text or json")
	return cmd
}

// Commands are the installer's commands of the nodemesh root: install,
// upgrade, uninstall, status, preflight and check.
func Commands(streams cli.IO) []*cobra.Command {
	return []*cobra.Command{newInstallCommand(streams), newUpgradeCommand(streams), newUninstallCommand(streams),
		newStatusCommand(streams), newPreflightCommand(streams), newCheckCommand(streams)}
}
