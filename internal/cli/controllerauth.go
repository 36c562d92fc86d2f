package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/xds"
	"github.com/nodemesh/nodemesh/xds/kubeauth"
	"github.com/nodemesh/nodemesh/xds/servingcert"
)

// controllerSecurity is how the controller's clients are authenticated and
// how they verify it.
type controllerSecurity struct {
	xdsAuth   xds.Authenticator
	debugAuth xds.DebugAuthorizer
	// tls is nil with --xds-insecure-plaintext.
	tls       *tls.Config
	publisher *kubeauth.Publisher
	// everywhere publishes the bundle in every namespace (nil: only in
	// the controller's).
	everywhere *kubeauth.NamespacePublisher
}

// defaultNamespace is the controller's namespace: the pod's (the chart
// sets POD_NAMESPACE from the downward API), else nodemesh-system.
func defaultNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return api.DefaultNamespace
}

// serviceNames are the DNS names of the controller's Service, which its
// certificate carries.
func serviceNames(svc, ns, domain string) []string {
	return []string{svc, svc + "." + ns, svc + "." + ns + ".svc", svc + "." + ns + ".svc." + domain}
}

func (o *controllerOptions) security(ctx context.Context, kube kubernetes.Interface, log *slog.Logger) (*controllerSecurity, error) {
	s := &controllerSecurity{}
	var err error
	if s.xdsAuth, err = kubeauth.NewXDS(kubeauth.XDSOptions{Client: kube, Namespace: o.namespace, ClusterDomain: o.clusterDomain,
		NodeProxyServiceAccounts: o.nodeProxyAccounts}); err != nil {
		return nil, err
	}
	if s.debugAuth, err = kubeauth.NewDebug(kubeauth.DebugOptions{Client: kube, Namespace: o.namespace, Service: o.service}); err != nil {
		return nil, err
	}
	if o.insecurePlaintext {
		if o.tlsCertFile != "" || o.tlsKeyFile != "" {
			return nil, UsageError("--xds-insecure-plaintext and --xds-tls-cert-file/--xds-tls-key-file exclude each other")
		}
		log.Warn("INSECURE: xDS is served WITHOUT TLS (--xds-insecure-plaintext): clients cannot verify the controller and their tokens cross the network in the clear; for local development only")
		return s, nil
	}
	var src servingcert.Source
	switch {
	case o.tlsCertFile != "" || o.tlsKeyFile != "" || o.tlsCAFile != "":
		if o.tlsCertFile == "" || o.tlsKeyFile == "" || o.tlsCAFile == "" {
			return nil, UsageError("--xds-tls-cert-file, --xds-tls-key-file and --xds-tls-ca-file go together")
		}
		if src, err = servingcert.NewFiles(o.tlsCertFile, o.tlsKeyFile, o.tlsCAFile); err != nil {
			return nil, err
		}
		log.Info("xDS TLS: serving certificate from files", "cert", o.tlsCertFile, "ca", o.tlsCAFile)
	default:
		ca, err := kubeauth.LoadCA(ctx, kube, o.namespace, o.caSecret)
		if err != nil {
			return nil, err
		}
		names := serviceNames(o.service, o.namespace, o.clusterDomain)
		if src, err = servingcert.NewIssuer(ca, names, nil, servingcert.LeafValidity); err != nil {
			return nil, err
		}
		log.Info("xDS TLS: serving certificate issued by the controller's CA", "secret", o.namespace+"/"+o.caSecret, "names", names)
	}
	s.tls = servingcert.ServerTLS(src)
	s.publisher = &kubeauth.Publisher{Client: kube, Namespace: o.namespace, Name: o.caBundle, Source: src, Every: time.Minute,
		OnError: func(err error) { log.Error("publish the CA bundle", "error", err) }}
	// Node Envoys cannot start without the bundle: publish it before
	// serving, and fail loudly if that is not possible.
	if err := s.publisher.Publish(ctx); err != nil {
		return nil, fmt.Errorf("%w (the controller needs get and update on ConfigMap %s/%s)", err, o.namespace, o.caBundle)
	}
	if o.caBundleEverywhere {
		skip := map[string]bool{o.namespace: true} // Publisher keeps the chart's
		for _, ns := range kubeauth.IgnoredNamespaces {
			skip[ns] = true
		}
		s.everywhere = &kubeauth.NamespacePublisher{Client: kube, Name: o.caBundle, Source: src, Skip: skip, Every: time.Minute,
			OnError: func(err error) { log.Error("publish the CA bundle", "error", err) }}
	}
	return s, nil
}

// securityFlagsHelp is the part of 'run --help' about authentication.
const securityFlagsHelp = `Clients and TLS:
  xDS (:15010) is served over TLS. The certificate is issued for the controller's
  Service names by the controller's own CA, kept in Secret --xds-ca-secret of
  --namespace (made on first start); the CA certificate is published in ConfigMap
  --xds-ca-bundle (key ` + api.CABundleKey + `), which the node Envoys mount. With
  --xds-tls-cert-file/--xds-tls-key-file/--xds-tls-ca-file the certificate comes
  from files instead (a mounted cert-manager Secret; reloaded when renewed), and
  the CA file is published.
  Every ADS stream must carry "authorization: Bearer <token>": a projected
  ServiceAccount token of audience ` + api.XDSAudience + `, verified with the TokenReview
  API and bound to a pod. A pod of --node-proxy-service-account (in --namespace)
  is served as the node it runs on (node ID = spec.nodeName), nothing else. Any
  other pod is served only as a proxyless gRPC client named as Istio's are:
  sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.<cluster domain>. Every
  request's node is checked. Refusals are gRPC Unauthenticated or PermissionDenied,
  counted in nodemesh_auth_refusals_total{endpoint,reason} and logged once per client.
  Connections are closed after --xds-max-connection-age so that clients
  re-authenticate with their current token.
  --xds-insecure-plaintext serves xDS WITHOUT TLS: clients cannot verify the
  controller and tokens cross the network in the clear. For local development only.`
