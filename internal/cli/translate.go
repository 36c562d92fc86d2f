package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

type translateOptions struct {
	files         []string
	output        string
	ir            bool
	namespace     string
	clusterDomain string
	rootNamespace string
	exportTo      meshExportTo
	outbound      string
	node          string
}

func newTranslateCommand(streams IO) *cobra.Command {
	o := &translateOptions{}
	cmd := &cobra.Command{
		Use:   "translate -f PATH [-f PATH ...] [-o summary|yaml|json] [--ir]",
		Short: "Show the xDS a node Envoy gets for Istio and Kubernetes manifests",
		Long: `Translate reads Kubernetes manifests — Services, Pods, EndpointSlices, Namespaces and
Istio VirtualServices and DestinationRules (networking.istio.io v1, v1beta1, v1alpha3) —
and prints the Envoy configuration nodemesh would serve to a node: one outbound listener
on 15001, route configurations named after ports ("9080"), clusters named
outbound|<port>|<subset>|<host> as Istio names them, and their endpoints.

Endpoints come from EndpointSlices, or from Pods (with status.podIP) that a Service
selects. Other kinds are reported and ignored. Every problem is a diagnostic with the
resource, the field and file:line; one bad resource never stops the others.

Output formats:
  summary  tables a person can read: routes with matches, destinations and policies;
           clusters with load balancing, circuit breakers, outlier detection and TLS
  yaml     one document: listeners, routes, clusters, endpoints (protojson of the Envoy
           v3 resources) and diagnostics
  json     the same document as JSON
With --ir, yaml and json print nodemesh's intermediate representation instead.

With --node NAME, the output is what that node is served. Istio decides
sourceLabels, sourceNamespace and short host names per client; a node Envoy
serves many clients, so the node's client pods (spec.nodeName NAME, in a
namespace labelled istio.io/dataplane-mode=nodemesh, without an Istio sidecar)
are grouped into source classes, and where a class sees different routing it
gets its own route configuration ("9080~<class>") and filter chains matched on
its pods' addresses. Without --node, the default class is translated: a client
with no labels and no namespace.

Exit status: 0 without error diagnostics, 1 with at least one (the valid part is
still printed), 2 for wrong flags or unreadable paths.`,
		Example: `  # The project's bookinfo sample
  nodemesh translate -f samples/bookinfo -o summary

  # Istio's own samples, from stdin, as YAML
  cat bookinfo.yaml virtual-service-reviews-80-20.yaml | nodemesh translate -f - -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(streams)
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&o.files, "filename", "f", nil, "file, directory (recursive: *.yaml, *.yml, *.json) or - for stdin; repeatable")
	f.StringVarP(&o.output, "output", "o", "summary", "output format: summary, yaml or json")
	f.BoolVar(&o.ir, "ir", false, "print the intermediate representation instead of xDS (yaml or json)")
	f.StringVarP(&o.namespace, "namespace", "n", "default", "namespace for resources that do not set one")
	f.StringVar(&o.clusterDomain, "cluster-domain", ir.DefaultClusterDomain, "Kubernetes cluster domain used in service FQDNs")
	f.StringVar(&o.rootNamespace, "istio-root-namespace", "istio-system", "Istio's config root namespace (its DestinationRules apply mesh-wide)")
	o.exportTo.add(f)
	f.StringVar(&o.outbound, "outbound-traffic-policy", string(istio.AllowAny), "mesh config outboundTrafficPolicy.mode: ALLOW_ANY or REGISTRY_ONLY (unknown destinations blocked)")
	f.StringVar(&o.node, "node", "", "translate for this node: add a source class per group of its client pods (Pods with spec.nodeName in opted-in namespaces)")
	return cmd
}

func (o *translateOptions) run(streams IO) error {
	if len(o.files) == 0 {
		return UsageError("at least one -f PATH is required")
	}
	switch o.output {
	case "summary", "yaml", "json":
	default:
		return UsageError("unknown output format %q: use summary, yaml or json", o.output)
	}
	if o.ir && o.output == "summary" {
		o.output = "yaml"
	}
	policy, err := istio.ParseOutboundTrafficPolicy(o.outbound)
	if err != nil {
		return UsageError("--outbound-traffic-policy: %v", err)
	}
	bag, decodeDiags, err := translate.Load(o.files, streams.In, o.namespace)
	if err != nil {
		return &ExitError{Code: ExitUsage, Err: err}
	}
	istioOpts := istio.Options{ClusterDomain: o.clusterDomain, RootNamespace: o.rootNamespace, OutboundTrafficPolicy: policy}
	if err := o.exportTo.apply(&istioOpts); err != nil {
		return err
	}
	res := translate.Translate(bag, decodeDiags, translate.Options{Node: o.node, Istio: istioOpts})
	switch o.output {
	case "summary":
		err = translate.WriteSummary(streams.Out, res)
	case "yaml":
		err = translate.WriteYAML(streams.Out, res, o.ir)
	case "json":
		err = translate.WriteJSON(streams.Out, res, o.ir)
	}
	if err != nil {
		return err
	}
	if o.output != "summary" {
		// The document carries the diagnostics; repeat the problems on stderr
		// for whoever redirected stdout to a file.
		for _, d := range res.Diagnostics {
			if d.Severity != ir.SeverityInfo {
				fmt.Fprintln(streams.ErrOut, d.String())
			}
		}
	}
	if res.HasErrors() {
		return &ExitError{Code: ExitFindings, Err: fmt.Errorf("%d error diagnostics; everything valid was still translated", res.Diagnostics.Count(ir.SeverityError))}
	}
	return nil
}
