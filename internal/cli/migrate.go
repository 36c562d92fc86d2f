package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/clibase"
	"github.com/nodemesh/nodemesh/migration"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

type migrateOptions struct {
	kube          KubeFlags
	files         []string
	namespaces    []string
	output        string
	clusterDomain string
	rootNamespace string
}

func (o *migrateOptions) addInputFlags(cmd *cobra.Command) {
	o.kube.Add(cmd)
	f := cmd.Flags()
	f.StringArrayVarP(&o.files, "filename", "f", nil, "read manifests from a file, directory or - instead of a cluster; repeatable")
	f.StringVar(&o.clusterDomain, "cluster-domain", ir.DefaultClusterDomain, "Kubernetes cluster domain used in service FQDNs")
	f.StringVar(&o.rootNamespace, "istio-root-namespace", migration.DefaultRootNS, "Istio's config root namespace (mesh-wide policies)")
}

func (o *migrateOptions) analysisOptions() migration.Options {
	return migration.Options{Namespaces: o.namespaces, Istio: istio.Options{ClusterDomain: o.clusterDomain, RootNamespace: o.rootNamespace}}
}

// inventory reads the files, or lists the cluster: one code path after that.
func (o *migrateOptions) inventory(ctx context.Context, streams IO) (*migration.Inventory, error) {
	if len(o.files) > 0 {
		inv, err := migration.LoadFiles(o.files, streams.In, "default")
		if err != nil {
			return nil, &ExitError{Code: ExitUsage, Err: err}
		}
		return inv, nil
	}
	cfg, err := o.kube.RestConfig()
	if err != nil {
		return nil, &ExitError{Code: ExitFindings, Err: fmt.Errorf("kubeconfig: %w (or give manifests with -f)", err)}
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	inv, err := migration.LoadCluster(ctx, dyn)
	if err != nil {
		return nil, &ExitError{Code: ExitFindings, Err: err}
	}
	return inv, nil
}

func checkFormat(format string) error {
	switch format {
	case "table", "json", "yaml":
		return nil
	}
	return UsageError("-o %q: want table, json or yaml", format)
}

func newMigrateCommand(streams IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Move namespaces from Istio sidecars to nodemesh, and back",
		Long: `migrate moves one namespace at a time from Istio sidecars to the node Envoy:

  analyze   what works, what changes and what breaks, per resource and field, and the
            order namespaces can move in (offline with -f, or live)
  plan      the exact steps for one namespace, each with its checks and its rollback
  apply     record, relabel, restart workload by workload, verify; rolls back by
            itself when a step fails; run it again to resume
  rollback  restore the recorded labels and workloads, so sidecars come back`,
	}
	cmd.AddCommand(newMigrateAnalyzeCommand(streams), newMigratePlanCommand(streams),
		newMigrateApplyCommand(streams, false), newMigrateApplyCommand(streams, true))
	return cmd
}

func newMigrateAnalyzeCommand(streams IO) *cobra.Command {
	o := &migrateOptions{}
	cmd := &cobra.Command{
		Use:   "analyze [-f PATH ... | --kubeconfig ...] [-n NS ...] [-o table|json|yaml]",
		Short: "Say what moving namespaces off sidecars changes, per resource and field",
		Long: `analyze reads manifests (-f) or lists a cluster, and for every namespace reports:
its sidecar inventory; a verdict per Istio resource and field — supported, changed (works
but behaves differently: the message says how) or unsupported — with the reason and the
fix; route parity between each client's sidecar and the node Envoy; a readiness verdict
(ready, ready-with-changes, blocked); and the order namespaces can move in (servers
before their clients).

The verdicts on VirtualServices, DestinationRules and Services are the translator's own
diagnostics (the same as 'nodemesh translate'); AuthorizationPolicy, PeerAuthentication,
RequestAuthentication, EnvoyFilter, Sidecar, WasmPlugin, Telemetry and workloads get
migration checks.

JSON (stable for scripts; fields may be added):
  {"namespaces":[{"name","verdict","findings":[{"resource":{"kind","namespace","name"},
    "field","level","message","fix"}]}]}

Exit status: 0 when no analysed namespace is blocked, 1 when one is (or the cluster
cannot be read), 2 for wrong flags or unreadable paths.`,
		Example: `  nodemesh migrate analyze -f samples/bookinfo
  nodemesh migrate analyze -n bookinfo -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(o.output); err != nil {
				return err
			}
			inv, err := o.inventory(cmd.Context(), streams)
			if err != nil {
				return err
			}
			r := migration.Analyze(inv, o.analysisOptions())
			if err := r.Write(streams.Out, o.output); err != nil {
				return err
			}
			if r.Blocked() {
				return &ExitError{Code: ExitFindings}
			}
			return nil
		},
	}
	o.addInputFlags(cmd)
	cmd.Flags().StringArrayVarP(&o.namespaces, "namespace", "n", nil, "analyse only this namespace; repeatable (default: every namespace with workloads or Istio resources)")
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "table, json or yaml")
	return cmd
}

func newMigratePlanCommand(streams IO) *cobra.Command {
	o := &migrateOptions{}
	var ns string
	cmd := &cobra.Command{
		Use:   "plan -n NS [-f PATH ... | --kubeconfig ...] [-o table|json|yaml]",
		Short: "List the steps that move a namespace, each with its checks and rollback",
		Long: `plan lists, in order, what 'migrate apply' will do to a namespace: the labels it sets
and removes, the workloads it restarts, the records it writes — each step with a
pre-check, a post-check and its rollback. Blocking findings of the analysis are listed
first. Nothing is changed.

Exit status: 0, 1 when the namespace is blocked or the cluster cannot be read, 2 for
wrong flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ns == "" {
				return UsageError("-n NAMESPACE is required")
			}
			if err := checkFormat(o.output); err != nil {
				return err
			}
			inv, err := o.inventory(cmd.Context(), streams)
			if err != nil {
				return err
			}
			if inv.NamespaceMissing(ns) {
				return &ExitError{Code: ExitFindings, Err: fmt.Errorf("namespace %q: %w", ns, migration.ErrNamespaceNotFound)}
			}
			o.namespaces = []string{ns}
			p, err := migration.MakePlan(inv, migration.Analyze(inv, o.analysisOptions()), ns)
			if err != nil {
				return &ExitError{Code: ExitFindings, Err: err}
			}
			if err := p.Write(streams.Out, o.output); err != nil {
				return err
			}
			if len(p.Blocking) > 0 {
				return &ExitError{Code: ExitFindings}
			}
			return nil
		},
	}
	o.addInputFlags(cmd)
	cmd.Flags().StringVarP(&ns, "namespace", "n", "", "the namespace to move")
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "table, json or yaml")
	return cmd
}

type applyOptions struct {
	kube         KubeFlags
	namespace    string
	dryRun       bool
	yes          bool
	force        bool
	timeout      time.Duration
	controllerNS string
	controller   string
	probe        bool
	probeImage   string
	probeTimeout time.Duration
}

func newMigrateApplyCommand(streams IO, rollback bool) *cobra.Command {
	o := &applyOptions{}
	use, short := "apply -n NS [--dry-run] [--yes]", "Move a namespace to nodemesh; roll back by itself on failure"
	long := `apply moves one namespace to nodemesh, step by step (see 'migrate plan'): it records the
pre-migration state (namespace annotations and the ConfigMap ` + migration.BackupConfigMap + `), labels the
namespace istio.io/dataplane-mode=nodemesh, removes istio-injection and istio.io/rev, then
restarts its Deployments, StatefulSets and DaemonSets one at a time (as 'kubectl rollout
restart'), honouring PodDisruptionBudgets and waiting for each rollout. It then verifies:
every workload ready, no istio-proxy container left, the controller serving routes for the
namespace's HTTP Services (through its debug endpoint, when reachable), and a connectivity
probe: a short-lived Pod (` + migration.DefaultProbeImage(clibase.Version) + `, non-root) in the namespace, a client
of the node Envoy like the namespace's own pods, requests every HTTP Service port (by Istio's
port naming or appProtocol); any HTTP response counts, a failed connection or a timeout does
not. The Pod is deleted afterwards; --probe=false skips the probe, --probe-image replaces its
image (it needs curl and /bin/sh).

When a step fails, apply rolls the namespace back by itself and says what failed. When it
is interrupted, running it again resumes where it stopped.

Exit status: 0 when migrated; 1 when refused (namespace missing or already migrated,
missing permissions, nodemesh not installed, blocking findings) — nothing changed — or
when it failed and rolled back; 2 for wrong flags.`
	if rollback {
		use, short = "rollback -n NS [--yes]", "Restore a namespace's labels and workloads so sidecars return"
		long = `rollback undoes 'migrate apply' from its records: it restores the namespace's labels
(istio-injection / istio.io/rev back, istio.io/dataplane-mode as it was), restores each
restarted workload's pod template (so the pods come back through Istio's injector), waits
for every rollout and verifies, then removes the records.

Exit status: 0 when rolled back, 1 when there is nothing to roll back or a step fails,
2 for wrong flags.`
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.namespace == "" {
				return UsageError("-n NAMESPACE is required")
			}
			cfg, err := o.kube.RestConfig()
			if err != nil {
				return &ExitError{Code: ExitFindings, Err: fmt.Errorf("kubeconfig: %w", err)}
			}
			client, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			dyn, err := dynamic.NewForConfig(cfg)
			if err != nil {
				return err
			}
			m := &migration.Migrator{
				Client: client, Dynamic: dyn, Progress: streams.Out, RolloutTimeout: o.timeout,
				ControllerNamespace: o.controllerNS, Force: o.force, DryRun: o.dryRun,
			}
			// The debug token is requested with the user's credentials,
			// also when the controller is reached directly.
			m.Routes = &migration.DebugRoutes{URL: o.controller, Client: client, Namespace: o.controllerNS}
			if !rollback && o.probe {
				m.Probe = &migration.PodProbe{Client: client, Image: o.probeImage, Timeout: o.probeTimeout, ClusterDomain: ir.DefaultClusterDomain}
			}
			if !o.yes && !o.dryRun {
				verb := "move namespace " + o.namespace + " to nodemesh"
				if rollback {
					verb = "roll namespace " + o.namespace + " back to sidecars"
				}
				fmt.Fprintf(streams.Out, "This will %s, restarting its workloads. Continue? [y/N] ", verb)
				line, _ := bufio.NewReader(streams.In).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
					return &ExitError{Code: ExitFindings, Err: errors.New("aborted: nothing changed")}
				}
			}
			if rollback {
				err = m.Rollback(cmd.Context(), o.namespace)
			} else {
				err = m.Apply(cmd.Context(), o.namespace)
			}
			if err != nil {
				return &ExitError{Code: ExitFindings, Err: err}
			}
			return nil
		},
	}
	o.kube.Add(cmd)
	f := cmd.Flags()
	f.StringVarP(&o.namespace, "namespace", "n", "", "the namespace")
	f.BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation")
	f.DurationVar(&o.timeout, "rollout-timeout", 5*time.Minute, "how long to wait for each workload's rollout")
	f.StringVar(&o.controllerNS, "controller-namespace", api.DefaultNamespace, "where nodemesh's controller runs")
	f.StringVar(&o.controller, "controller", "", "the controller's monitoring URL (default: through the API server's service proxy)")
	if !rollback {
		f.BoolVar(&o.dryRun, "dry-run", false, "print the plan and check the preconditions; change nothing")
		f.BoolVar(&o.force, "force", false, "move even when analysis finds unsupported resources")
		f.BoolVar(&o.probe, "probe", true, "verify connectivity with a short-lived probe Pod in the namespace")
		f.StringVar(&o.probeImage, "probe-image", migration.DefaultProbeImage(clibase.Version), "the probe Pod's image (needs curl and /bin/sh; runs as uid 100; make images builds the default)")
		f.DurationVar(&o.probeTimeout, "probe-timeout", 2*time.Minute, "how long the probe Pod may take, from its creation to its end")
	}
	return cmd
}
