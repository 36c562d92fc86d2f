package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/clibase"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/istio"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/watch"
)

// NewControllerCommand builds the nodemesh-controller command tree.
func NewControllerCommand(streams IO) *cobra.Command {
	root := clibase.NewRoot(streams, "nodemesh-controller", "Serve every node Envoy its xDS configuration from the cluster's Istio resources",
		`nodemesh-controller watches VirtualServices, DestinationRules and ServiceEntries
(networking.istio.io/v1), Services, EndpointSlices, Pods, Namespaces and Nodes,
translates them with the same code as 'nodemesh translate', and serves each node
Envoy (and proxyless gRPC client) its own snapshot over ADS.`)
	root.AddCommand(newControllerRunCommand(streams), newBootstrapCommand(streams), newSDSCommand(streams))
	return root
}

// ExecuteController runs the nodemesh-controller command line and returns
// the exit code.
func ExecuteController(args []string, streams IO) int {
	return clibase.Execute(NewControllerCommand(streams), args, streams)
}

type controllerOptions struct {
	kube              KubeFlags
	xdsAddress        string
	monitoringAddress string
	debounce          time.Duration
	maxDebounce       time.Duration
	clusterDomain     string
	rootNamespace     string
	exportTo          meshExportTo
	istioMTLS         bool
	trustDomain       string
	tdAliases         []string
	outboundPolicy    string
	log               clibase.LogFlags
	profiling         bool
	shutdownGrace     time.Duration

	namespace          string
	service            string
	nodeProxyAccounts  []string
	caSecret           string
	caBundle           string
	caBundleEverywhere bool
	tlsCertFile        string
	tlsKeyFile         string
	tlsCAFile          string
	insecurePlaintext  bool
	maxConnectionAge   time.Duration
}

func newControllerRunCommand(streams IO) *cobra.Command {
	o := &controllerOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the controller (ADS on :15010, health, metrics and debug on :15014)",
		Long: `Run watches the cluster and serves xDS until SIGINT or SIGTERM.

Nodes are identified by their Envoy node ID, which is the Kubernetes node name
('nodemesh-controller bootstrap' writes it). A client whose node metadata has
GENERATOR=grpc is a proxyless gRPC client and gets api_listeners named after the
targets it dials (xds:///reviews.default.svc.cluster.local:9080).

Changes are debounced: configuration is recomputed once the cluster has been quiet
for --debounce, and at the latest --max-debounce after the first change. A node that
rejects a configuration stays on the last one it accepted; the rejection is logged,
counted (nodemesh_xds_nacks_total) and reported as an Event on the VirtualServices or
DestinationRules behind it. Translation errors and warnings become Events on the
resources they are about.

Monitoring port:
  /healthz                 the process is up
  /readyz                  caches synced and the API server reachable (while it is
                           not, the last snapshots keep being served)
  /metrics                 Prometheus metrics (counts; no node, resource or client names)
  /debug/nodes             every node's versions: sent, acknowledged, rejected
  /debug/config_dump?node= what a node is served ('nodemesh proxy-config' reads it)
  /debug/diagnostics       the current translation diagnostics
/healthz, /readyz and /metrics are open. Everything under /debug/ needs a token of
audience ` + api.DebugAudience + ` (header ` + api.DebugTokenHeader + `, which survives the API
server's service proxy, or "Authorization: Bearer") whose user may get
services/proxy on Service --controller-service: 401 without one, 403 otherwise.

` + securityFlagsHelp + `

Memory: in a container with a memory limit (cgroup v2), the Go heap gets a soft
limit of 90% of it, unless GOMEMLIMIT is set.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runController(ctx, o, streams)
		},
	}
	o.kube.Add(cmd)
	f := cmd.Flags()
	f.StringVar(&o.xdsAddress, "xds-address", fmt.Sprintf(":%d", xds.DefaultPort), "address of the ADS gRPC server")
	f.StringVar(&o.monitoringAddress, "monitoring-address", fmt.Sprintf(":%d", xds.DefaultMonitoringPort), "address of the health, metrics and debug HTTP server")
	f.DurationVar(&o.debounce, "debounce", watch.DefaultDebounce, "quiet time after a change before recomputing")
	f.DurationVar(&o.maxDebounce, "max-debounce", watch.DefaultMaxDebounce, "longest wait for quiet after the first change")
	f.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	f.StringVar(&o.rootNamespace, "root-namespace", "istio-system", "Istio's root namespace: its DestinationRules apply to every namespace")
	o.exportTo.add(f)
	f.BoolVar(&o.istioMTLS, "istio-mtls", false, "speak Istio mTLS to pods with a sidecar, with each client pod's own certificate (auto-mTLS, DestinationRule ISTIO_MUTUAL and credentialName); the node Envoys must get their certificates from the agent's SDS server (cluster sds-grpc)")
	f.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "Istio's trust domain (meshConfig.trustDomain): the principals of AuthorizationPolicies, and the SPIFFE IDs of clients and destinations (with --istio-mtls)")
	f.StringSliceVar(&o.tdAliases, "trust-domain-alias", nil, "trust domains the mesh also answers to (meshConfig.trustDomainAliases): AuthorizationPolicy principals in them match too; repeatable")
	f.StringVar(&o.outboundPolicy, "outbound-traffic-policy", string(istio.AllowAny), "mesh config outboundTrafficPolicy.mode: ALLOW_ANY passes traffic to unknown destinations through, REGISTRY_ONLY blocks it (only Services and ServiceEntries are reachable)")
	o.log.Add(cmd, "info", "json")
	f.DurationVar(&o.shutdownGrace, "shutdown-grace", 10*time.Second, "on SIGTERM, how long open xDS streams get to close")
	f.BoolVar(&o.profiling, "profiling", false, "serve Go's runtime profiles on the monitoring port (/debug/pprof/, authenticated like /debug/)")
	f.StringVar(&o.namespace, "namespace", defaultNamespace(), "the controller's namespace: its CA Secret, CA bundle ConfigMap, Service and the node proxies' ServiceAccount (default $POD_NAMESPACE, else nodemesh-system)")
	f.StringVar(&o.service, "controller-service", api.ControllerService, "the controller's Service: its certificate's names, and what a debug client must be allowed to proxy to")
	f.StringSliceVar(&o.nodeProxyAccounts, "node-proxy-service-account", []string{api.NodeProxyServiceAccount}, "ServiceAccounts (in --namespace) whose pods are served as the node they run on")
	f.StringVar(&o.caSecret, "xds-ca-secret", api.CASecret, "Secret (in --namespace) keeping the controller's CA")
	f.StringVar(&o.caBundle, "xds-ca-bundle", api.CABundleConfigMap, "ConfigMap (in --namespace) the CA certificate is published in")
	f.BoolVar(&o.caBundleEverywhere, "xds-ca-bundle-all-namespaces", false, "publish the CA bundle in --xds-ca-bundle of every namespace (but kube-system, kube-public, kube-node-lease), as istiod does with istio-ca-root-cert, for proxyless gRPC clients to mount")
	f.StringVar(&o.tlsCertFile, "xds-tls-cert-file", "", "serve xDS with this certificate (PEM) instead of one from the controller's CA")
	f.StringVar(&o.tlsKeyFile, "xds-tls-key-file", "", "the key of --xds-tls-cert-file")
	f.StringVar(&o.tlsCAFile, "xds-tls-ca-file", "", "the CA bundle clients verify --xds-tls-cert-file with (published in --xds-ca-bundle)")
	f.BoolVar(&o.insecurePlaintext, "xds-insecure-plaintext", false, "INSECURE: serve xDS without TLS (local development only; tokens cross the network in the clear)")
	f.DurationVar(&o.maxConnectionAge, "xds-max-connection-age", 30*time.Minute, "close xDS connections after this long so clients re-authenticate (0: never)")
	return cmd
}

func runController(ctx context.Context, o *controllerOptions, streams IO) error {
	errOut, ok := streams.ErrOut.(*os.File)
	if !ok {
		errOut = os.Stderr
	}
	log, err := o.log.Logger(errOut)
	if err != nil {
		return err
	}
	policy, err := istio.ParseOutboundTrafficPolicy(o.outboundPolicy)
	if err != nil {
		return UsageError("--outbound-traffic-policy: %v", err)
	}
	istioOpts := istio.Options{ClusterDomain: o.clusterDomain, RootNamespace: o.rootNamespace, IstioMTLS: o.istioMTLS, TrustDomain: o.trustDomain,
		OutboundTrafficPolicy: policy}
	if err := o.exportTo.apply(&istioOpts); err != nil {
		return err
	}
	if limit := setMemoryLimit("/"); limit > 0 {
		log.Info("Go soft memory limit set from the container's", "limit-bytes", limit)
	}
	cfg, err := o.kube.RestConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ic, err := istioclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := xds.NewMetrics(reg)
	cache := xds.NewCache(log, metrics)
	ctl := watch.New(kube, ic, cache, watch.Options{
		Debounce: o.debounce, MaxDebounce: o.maxDebounce, Logger: log, Metrics: metrics,
		Istio: istioOpts,
		Authz: translate.AuthzOptions{RootNamespace: o.rootNamespace, TrustDomain: o.trustDomain, TrustDomainAliases: o.tdAliases},
	})

	xdsListener, err := net.Listen("tcp", o.xdsAddress)
	if err != nil {
		return fmt.Errorf("xDS server: %w", err)
	}
	monListener, err := net.Listen("tcp", o.monitoringAddress)
	if err != nil {
		xdsListener.Close()
		return fmt.Errorf("monitoring server: %w", err)
	}
	sec, err := o.security(ctx, kube, log)
	if err != nil {
		xdsListener.Close()
		monListener.Close()
		return err
	}
	authMetrics := xds.NewAuthMetrics(reg)
	srv, err := xds.NewServer(ctx, cache, xds.ServerOptions{Auth: sec.xdsAuth, TLS: sec.tls, MaxConnectionAge: o.maxConnectionAge, Logger: log, Metrics: authMetrics})
	if err != nil {
		xdsListener.Close()
		monListener.Close()
		return err
	}
	if sec.publisher != nil {
		go sec.publisher.Run(ctx)
	}
	if sec.everywhere != nil {
		go func() {
			if err := sec.everywhere.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("publish the CA bundle in every namespace", "error", err)
			}
		}()
	}
	debug := &xds.Debug{Cache: cache, Gatherer: reg, Ready: ctl.Ready, Diagnostics: func() any {
		if g := ctl.Generation(); g != nil {
			return g.Diagnostics()
		}
		return []any{}
	}, Profiling: o.profiling, Auth: sec.debugAuth, AuthMetrics: authMetrics, Logger: log}
	mon := &http.Server{Handler: debug.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(xdsListener) }()
	go func() {
		if err := mon.Serve(monListener); !errors.Is(err, http.ErrServerClosed) {
			errs <- err
		}
	}()
	log.Info("nodemesh-controller starting", "version", clibase.Version, "xds", xdsListener.Addr().String(), "xds-tls", sec.tls != nil, "monitoring", monListener.Addr().String())

	runErr := make(chan error, 1)
	go func() { runErr <- ctl.Run(ctx) }()
	select {
	case err = <-runErr:
	case err = <-errs:
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownGrace)
	defer cancel()
	srv.Stop(sctx)
	_ = mon.Shutdown(sctx)
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

type bootstrapOptions struct {
	node       string
	controller string
	adminPort  uint32
	statsPort  uint32
	delta      bool
	output     string
	file       string
	tokenFile  string
	caFile     string
	serverName string
	insecure   bool
	sdsSocket  string
}

func newBootstrapCommand(streams IO) *cobra.Command {
	o := &bootstrapOptions{}
	cmd := &cobra.Command{
		Use:   "bootstrap --node NAME [--controller HOST:PORT] [-o yaml|json] [--output-file PATH]",
		Short: "Write a node Envoy's bootstrap configuration",
		Long: `Bootstrap prints the configuration a node Envoy starts with: ADS to the controller
(node ID = the node name, incremental xDS unless --delta=false), the admin interface
on 127.0.0.1:15000 only, and Prometheus stats (/stats/prometheus) on port 15090, as
Istio's proxies have them. The result is validated before it is written.

The controller serves xDS over TLS to authenticated clients: Envoy verifies the
controller's certificate with the CA bundle --ca-file (for --server-name, by default
the host of --controller) and sends the projected ServiceAccount token --token-file
(audience nodemesh-xds) as "authorization: Bearer" on every stream, read from the
file each time (Google gRPC with the file_based_metadata call credentials), so the
kubelet's renewals are picked up. The node Envoy DaemonSet mounts both there.
--insecure-plaintext writes a bootstrap without TLS, for a controller run with
--xds-insecure-plaintext (local development only); the token of --token-file is
read then and written into the bootstrap (rewrite it when the token expires).

The node DaemonSet runs it in an init container with the node name from the
downward API:
  nodemesh-controller bootstrap --node "$NODE_NAME" --output-file /etc/envoy/bootstrap.yaml`,
		Example: `  nodemesh-controller bootstrap --node node-1
  nodemesh-controller bootstrap --node node-1 --controller 10.96.0.15:15010 \
      --server-name nodemesh-controller.nodemesh-system.svc -o json
  nodemesh-controller bootstrap --node node-1 --controller 127.0.0.1:15010 --insecure-plaintext --token-file ./token`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if o.node == "" {
				return UsageError("--node is required (or set NODE_NAME)")
			}
			if o.output != "yaml" && o.output != "json" {
				return UsageError("-o %q: want yaml or json", o.output)
			}
			bo := xds.BootstrapOptions{Node: o.node, Controller: o.controller, AdminPort: o.adminPort, StatsPort: o.statsPort, Delta: o.delta,
				TokenFile: o.tokenFile, CAFile: o.caFile, ServerName: o.serverName, Insecure: o.insecure, SDSSocket: o.sdsSocket}
			if o.insecure {
				// Envoy's own gRPC client sends fixed metadata: the token is
				// read now and frozen into the bootstrap.
				tok, err := os.ReadFile(o.tokenFile)
				if err != nil {
					return UsageError("--insecure-plaintext: the controller still authenticates Envoy: %v (give --token-file, e.g. from 'kubectl create token %s -n NAMESPACE --audience %s --bound-object-kind Pod --bound-object-name POD')",
						err, api.NodeProxyServiceAccount, api.XDSAudience)
				}
				bo.TokenFile, bo.CAFile, bo.StaticToken = "", "", strings.TrimSpace(string(tok))
			}
			b, err := xds.Bootstrap(bo)
			if err != nil {
				return UsageError("%v", err)
			}
			raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
			if err != nil {
				return err
			}
			var out bytes.Buffer
			if err := writeJSONOrYAML(&out, raw, o.output); err != nil {
				return err
			}
			if o.file == "" {
				_, err = streams.Out.Write(out.Bytes())
				return err
			}
			return os.WriteFile(o.file, out.Bytes(), 0o644)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.node, "node", os.Getenv("NODE_NAME"), "the node name, the Envoy node ID (default $NODE_NAME)")
	f.StringVar(&o.controller, "controller", fmt.Sprintf("%s.%s.svc:%d", api.ControllerService, api.DefaultNamespace, api.XDSPort), "the controller's xDS address")
	f.Uint32Var(&o.adminPort, "admin-port", xds.DefaultAdminPort, "Envoy admin port, bound on 127.0.0.1")
	f.Uint32Var(&o.statsPort, "stats-port", xds.DefaultStatsPort, "Prometheus stats port")
	f.BoolVar(&o.delta, "delta", true, "use incremental (delta) xDS")
	f.StringVarP(&o.output, "output", "o", "yaml", "yaml or json")
	f.StringVar(&o.file, "output-file", "", "write to this file instead of stdout")
	f.StringVar(&o.tokenFile, "token-file", xds.DefaultTokenFile, "the projected ServiceAccount token Envoy sends to the controller (audience "+api.XDSAudience+")")
	f.StringVar(&o.caFile, "ca-file", xds.DefaultCAFile, "the CA bundle Envoy verifies the controller with (ConfigMap "+api.CABundleConfigMap+")")
	f.StringVar(&o.serverName, "server-name", "", "the name the controller's certificate is verified for (default: the host of --controller)")
	f.StringVar(&o.sdsSocket, "sds-socket", "", "add the "+xds.SDSClusterName+" cluster for the node's SDS server (workload certificates) on this unix socket (the chart's mtls.enabled: "+xds.DefaultSDSSocket+")")
	f.BoolVar(&o.insecure, "insecure-plaintext", false, "INSECURE: no TLS, the token frozen into the bootstrap, for a controller run with --xds-insecure-plaintext (local development only)")
	return cmd
}

// writeJSONOrYAML prints a JSON document indented, or as YAML.
func writeJSONOrYAML(w *bytes.Buffer, raw []byte, format string) error {
	if strings.EqualFold(format, "yaml") {
		return translate.JSONToYAML(w, raw)
	}
	var b bytes.Buffer
	if err := jsonIndent(&b, raw); err != nil {
		return err
	}
	w.Write(b.Bytes())
	return nil
}
