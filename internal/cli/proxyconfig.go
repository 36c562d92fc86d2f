package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/debugclient"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/xds"
)

type proxyConfigOptions struct {
	kube           KubeFlags
	node           string
	output         string
	controller     string
	namespace      string
	service        string
	serviceAccount string
	token          string
	timeout        time.Duration
}

// proxyConfigKinds are the arguments of proxy-config and the sections they show.
var proxyConfigKinds = map[string][]string{
	"listeners": {translate.SectionListeners},
	"routes":    {translate.SectionRoutes},
	"clusters":  {translate.SectionClusters},
	"endpoints": {translate.SectionEndpoints},
	"all":       {translate.SectionListeners, translate.SectionRoutes, translate.SectionClusters, translate.SectionEndpoints},
}

func newProxyConfigCommand(streams IO) *cobra.Command {
	o := &proxyConfigOptions{}
	cmd := &cobra.Command{
		Use:   "proxy-config [listeners|routes|clusters|endpoints|all] --node NAME [-o summary|json|yaml]",
		Short: "Show the xDS configuration the controller serves a node",
		Long: `proxy-config asks the controller what it is serving a node — after any rejection
by the node, so exactly what the node runs — and prints one kind of resource or all
of them, like 'istioctl proxy-config'.

The controller is reached through the Kubernetes API server's service proxy
(Service --controller-service in --controller-namespace, port 15014), with the
usual --kubeconfig and --context, or directly with --controller URL (for
example after 'kubectl port-forward').

The controller's debug endpoints need a token: proxy-config requests a
10-minute token of ServiceAccount --debug-service-account (nodemesh-debug, which
may do nothing but read them) with the TokenRequest API and sends it along (the
API server's proxy does not forward your own credentials). You need create on
serviceaccounts/token for that account, which the chart's Role
nodemesh-debug-client grants together with get services/proxy:
  kubectl -n nodemesh-system create rolebinding me-debug \
    --role nodemesh-debug-client --user me@example.com
--token sends a token you have instead (audience nodemesh-debug).

Output formats:
  summary  tables (default)
  json     the controller's config dump: versions (sent, acknowledged, rejected) and
           the resources as Envoy v3 JSON
  yaml     the same as YAML

Exit status: 0 on success, 1 when the controller cannot be reached or does not
know the node, 2 for wrong arguments.`,
		Example: `  nodemesh proxy-config routes --node worker-1
  nodemesh proxy-config all --node worker-1 -o yaml
  kubectl -n nodemesh-system port-forward deploy/nodemesh-controller 15014 &
  nodemesh proxy-config clusters --node worker-1 --controller http://localhost:15014`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"listeners", "routes", "clusters", "endpoints", "all"},
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := "all"
			if len(args) == 1 {
				kind = args[0]
			}
			sections, ok := proxyConfigKinds[kind]
			if !ok {
				return UsageError("unknown kind %q: want listeners, routes, clusters, endpoints or all", kind)
			}
			if o.node == "" {
				return UsageError("--node is required")
			}
			switch o.output {
			case "summary", "json", "yaml":
			default:
				return UsageError("-o %q: want summary, json or yaml", o.output)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			raw, err := o.fetch(ctx)
			if err != nil {
				return &ExitError{Code: ExitFindings, Err: err}
			}
			return printProxyConfig(streams.Out, raw, kind, sections, o.output)
		},
	}
	o.kube.Add(cmd)
	f := cmd.Flags()
	f.StringVar(&o.node, "node", "", "the node (Envoy node ID) whose configuration to show")
	f.StringVarP(&o.output, "output", "o", "summary", "summary, json or yaml")
	f.StringVar(&o.controller, "controller", "", "the controller's monitoring URL (default: through the API server's service proxy)")
	f.StringVar(&o.namespace, "controller-namespace", api.DefaultNamespace, "the controller's namespace")
	f.StringVar(&o.service, "controller-service", api.ControllerService, "the controller's Service")
	f.StringVar(&o.serviceAccount, "debug-service-account", api.DebugServiceAccount, "the ServiceAccount (in --controller-namespace) to request a debug token for")
	f.StringVar(&o.token, "token", "", "a token of audience "+api.DebugAudience+" to send instead of requesting one")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the controller")
	return cmd
}

// fetch gets the node's config dump, directly or through the API server.
func (o *proxyConfigOptions) fetch(ctx context.Context) ([]byte, error) {
	c := &debugclient.Client{URL: o.controller, Namespace: o.namespace, Service: o.service, ServiceAccount: o.serviceAccount, Token: o.token}
	if o.token == "" || o.controller == "" {
		cfg, err := o.kube.RestConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
		if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
			return nil, err
		}
	}
	body, err := c.Get(ctx, "debug/config_dump", url.Values{"node": {o.node}})
	if err != nil {
		if errors.Is(err, debugclient.ErrToken) {
			return nil, err
		}
		if o.controller != "" {
			return nil, fmt.Errorf("controller: %w", err)
		}
		return nil, fmt.Errorf("controller (service %s/%s through the API server): %w", o.namespace, o.service, err)
	}
	return body, nil
}

func printProxyConfig(w io.Writer, raw []byte, kind string, sections []string, format string) error {
	var dump xds.ConfigDump
	if err := json.Unmarshal(raw, &dump); err != nil {
		return &ExitError{Code: ExitFindings, Err: fmt.Errorf("controller answered something that is not a config dump: %w", err)}
	}
	if format != "summary" {
		// The dump, limited to the kind asked for.
		if kind != "all" {
			keep := map[string]bool{}
			for _, s := range sections {
				keep[s] = true
			}
			if !keep[translate.SectionListeners] {
				dump.Listeners = nil
			}
			if !keep[translate.SectionRoutes] {
				dump.Routes = nil
			}
			if !keep[translate.SectionClusters] {
				dump.Clusters = nil
			}
			if !keep[translate.SectionEndpoints] {
				dump.Endpoints = nil
			}
		}
		data, err := json.Marshal(dump)
		if err != nil {
			return err
		}
		var out bytes.Buffer
		if err := writeJSONOrYAML(&out, data, format); err != nil {
			return err
		}
		_, err = w.Write(out.Bytes())
		return err
	}
	r, err := decodeDump(&dump)
	if err != nil {
		return &ExitError{Code: ExitFindings, Err: err}
	}
	fmt.Fprintf(w, "node %s (%s), generation %d\n\n", dump.Node, dump.Kind, dump.Generation)
	if len(dump.Rejected) > 0 {
		fmt.Fprintf(w, "REJECTED by the node (it runs the acknowledged versions): %v\n\n", dump.Rejected)
	}
	return translate.WriteResources(w, r, sections...)
}

// decodeDump reads the resources of a dump back into Envoy messages.
func decodeDump(d *xds.ConfigDump) (*envoy.Resources, error) {
	r := &envoy.Resources{}
	var errs []error
	decode := func(raws []json.RawMessage, newMsg func() proto.Message, add func(proto.Message)) {
		for _, raw := range raws {
			m := newMsg()
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, m); err != nil {
				errs = append(errs, err)
				continue
			}
			add(m)
		}
	}
	decode(d.Listeners, func() proto.Message { return &listenerv3.Listener{} }, func(m proto.Message) { r.Listeners = append(r.Listeners, m.(*listenerv3.Listener)) })
	decode(d.Routes, func() proto.Message { return &routev3.RouteConfiguration{} }, func(m proto.Message) { r.Routes = append(r.Routes, m.(*routev3.RouteConfiguration)) })
	decode(d.Clusters, func() proto.Message { return &clusterv3.Cluster{} }, func(m proto.Message) { r.Clusters = append(r.Clusters, m.(*clusterv3.Cluster)) })
	decode(d.Endpoints, func() proto.Message { return &endpointv3.ClusterLoadAssignment{} }, func(m proto.Message) {
		r.Endpoints = append(r.Endpoints, m.(*endpointv3.ClusterLoadAssignment))
	})
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("decode the config dump: %w", err)
	}
	return r, nil
}
