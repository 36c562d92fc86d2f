package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/clibase"
	"github.com/nodemesh/nodemesh/internal/workloadcert"
	"github.com/nodemesh/nodemesh/xds/sds"
)

// Defaults of the node's SDS server, as the chart mounts them.
const (
	DefaultSDSSocket     = api.SDSSocket
	DefaultCATokenFile   = "/var/run/secrets/tokens/istio-ca/token"
	DefaultCARootFile    = "/var/run/secrets/istio/root-cert.pem"
	defaultMaxIdentities = workloadcert.DefaultMaxIdentities
)

type sdsOptions struct {
	kube          KubeFlags
	log           clibase.LogFlags
	node          string
	trustDomain   string
	socket        string
	allowedUIDs   []uint
	caAddress     string
	caServerName  string
	caRootFile    string
	tokenFile     string
	clusterID     string
	certTTL       time.Duration
	maxIdentities int
}

func newSDSCommand(streams IO) *cobra.Command {
	o := &sdsOptions{}
	cmd := &cobra.Command{
		Use:   "sds --node-name NODE",
		Short: "Serve the node's workload certificates from Istio's CA to the node Envoy (SDS)",
		Long: `SDS obtains a certificate for every workload identity of this node's meshed pods
(spiffe://<trust domain>/ns/<namespace>/sa/<service account>, a pod being meshed as
the agent redirects it) from Istio's CA, the way ztunnel does, and serves them to the
node Envoy over the Secret Discovery Service on a unix socket.

Per identity it makes an ECDSA P-256 key (it never leaves this process), sends a CSR
to --ca-address (istiod's IstioCertificateService, TLS verified with --ca-root-file,
the istio-ca-root-cert ConfigMap), authenticated by the projected ServiceAccount
token --token-file (audience istio-ca) and naming the workload's identity as
ImpersonatedIdentity. istiod grants that only when this pod's ServiceAccount is listed
in its CA_TRUSTED_NODE_ACCOUNTS and a pod of the identity runs on this node.
Certificates are renewed at half their lifetime (±1%, as istio-agent), failures
retried with backoff, and an identity's certificate is dropped when its last pod
leaves the node.

Secrets are named by SPIFFE ID; the trust bundle is "ROOTCA" (Istio's names). The
socket's directory is made 0700 and must belong to this user; connections from users
other than --allowed-uid are refused (SO_PEERCRED). Whoever reaches the socket gets
private keys: mount its directory only into the node Envoy.

The agent DaemonSet runs it as a container next to the agent when mtls.enabled is set.`,
		Example: `  nodemesh-controller sds --node-name "$NODE_NAME"
  nodemesh-controller sds --node-name node-1 --ca-address cert-manager-istio-csr.cert-manager.svc:443 \
      --ca-server-name cert-manager-istio-csr.cert-manager.svc`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.node == "" {
				return UsageError("--node-name is required (or set NODE_NAME)")
			}
			if o.trustDomain == "" {
				return UsageError("--trust-domain must not be empty")
			}
			if o.certTTL < 0 {
				return UsageError("--cert-ttl must not be negative")
			}
			if o.maxIdentities <= 0 {
				return UsageError("--max-identities must be positive")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runSDS(ctx, o, streams)
		},
	}
	o.kube.Add(cmd)
	o.log.Add(cmd, "info", "json")
	f := cmd.Flags()
	f.StringVar(&o.node, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	f.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "the mesh's trust domain (meshConfig trustDomain)")
	f.StringVar(&o.socket, "socket", DefaultSDSSocket, "the SDS unix socket")
	f.UintSliceVar(&o.allowedUIDs, "allowed-uid", []uint{0}, "users allowed to connect to the socket (the node Envoy's)")
	f.StringVar(&o.caAddress, "ca-address", workloadcert.DefaultCAAddress, "Istio's CA (istiod, or anything serving IstioCertificateService, e.g. cert-manager's istio-csr)")
	f.StringVar(&o.caServerName, "ca-server-name", "", "the name the CA's certificate is verified for (default: the host of --ca-address)")
	f.StringVar(&o.caRootFile, "ca-root-file", DefaultCARootFile, "PEM roots that verify the CA, also served in ROOTCA (ConfigMap istio-ca-root-cert)")
	f.StringVar(&o.tokenFile, "token-file", DefaultCATokenFile, "this pod's projected ServiceAccount token, audience "+workloadcert.CAAudience)
	f.StringVar(&o.clusterID, "cluster-id", workloadcert.DefaultClusterID, "the cluster ID istiod knows this cluster by (its --clusterID)")
	f.DurationVar(&o.certTTL, "cert-ttl", 0, "certificate lifetime to ask for (0: the CA's default, 24h in istiod)")
	f.IntVar(&o.maxIdentities, "max-identities", defaultMaxIdentities, "most identities this node holds certificates for; those beyond get none (logged)")
	return cmd
}

func runSDS(ctx context.Context, o *sdsOptions, streams IO) error {
	errOut, ok := streams.ErrOut.(*os.File)
	if !ok {
		errOut = os.Stderr
	}
	log, err := o.log.Logger(errOut)
	if err != nil {
		return err
	}
	// The chart mounts istio-ca-root-cert as optional: the agent's pod
	// must start without Istio (it is the node's CNI), so this container
	// waits for istiod to publish it rather than failing.
	rootPEM, err := waitForFile(ctx, o.caRootFile, log)
	if err != nil {
		return err
	}
	roots, err := workloadcert.LoadRoots(o.caRootFile)
	if err != nil {
		return err
	}
	cfg, err := o.kube.RestConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ca, err := workloadcert.NewCAClient(workloadcert.CAClientOptions{Address: o.caAddress, ServerName: o.caServerName, Roots: roots,
		TokenFile: o.tokenFile, ClusterID: o.clusterID, TTL: o.certTTL})
	if err != nil {
		return err
	}
	defer ca.Close()
	uids := make([]uint32, 0, len(o.allowedUIDs))
	for _, u := range o.allowedUIDs {
		if u > 1<<31 {
			return UsageError("--allowed-uid %d: out of range", u)
		}
		uids = append(uids, uint32(u))
	}
	srv, err := sds.Listen(sds.Options{Socket: o.socket, AllowedUIDs: uids, TrustAnchors: rootPEM, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Stop()
	m, err := workloadcert.NewManager(workloadcert.ManagerOptions{Issuer: ca, Sink: srv, Logger: log, MaxIdentities: o.maxIdentities})
	if err != nil {
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve() }()
	go func() { errs <- m.Run(ctx) }()
	if err := workloadcert.WatchNode(ctx, kube, o.node, o.trustDomain, m); err != nil {
		return err
	}
	log.Info("sds serving", "version", clibase.Version, "socket", o.socket, "ca", o.caAddress, "node", o.node, "trust-domain", o.trustDomain)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}
}

// waitForFile reads path once it exists and is not empty.
func waitForFile(ctx context.Context, path string, log *slog.Logger) ([]byte, error) {
	logged := false
	for {
		raw, err := os.ReadFile(path)
		if err == nil && len(raw) > 0 {
			return raw, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("CA roots: %w", err)
		}
		if !logged {
			log.Warn("waiting for the CA roots (is Istio installed? istiod publishes ConfigMap istio-ca-root-cert in every namespace)", "file", path)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}
