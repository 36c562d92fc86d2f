package install

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/nodemesh/nodemesh/api"
)

// Sentinels callers branch on (the CLI turns them into one clear line).
var (
	// ErrUnreachable: no API server answers with the given kubeconfig.
	ErrUnreachable = errors.New("cannot reach the Kubernetes API server")
	// ErrAlreadyInstalled: install found a release; upgrade it instead.
	ErrAlreadyInstalled = errors.New("nodemesh is already installed")
	// ErrNotInstalled: upgrade, uninstall or status found no release.
	ErrNotInstalled = errors.New("nodemesh is not installed")
)

// Client works on one cluster, one release. Its Helm release records are
// Secrets in the release namespace (Helm's default storage).
type Client struct {
	Namespace string
	Release   string
	Config    *rest.Config
	Kube      kubernetes.Interface
	CRDs      apiextclient.Interface
	Helm      *action.Configuration
}

// Connect checks that the API server answers, then prepares the Helm SDK
// for namespace and release (defaults: nodemesh-system, nodemesh).
func Connect(ctx context.Context, getter genericclioptions.RESTClientGetter, namespace, releaseName string) (*Client, error) {
	c := &Client{Namespace: orDefault(namespace, api.DefaultNamespace), Release: orDefault(releaseName, api.DefaultReleaseName)}
	cfg, err := getter.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("%w: kubeconfig: %w", ErrUnreachable, err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 50, 100
	c.Config = cfg
	if c.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.CRDs, err = apiextclient.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if err := reachable(ctx, c.Kube, cfg.Host); err != nil {
		return nil, err
	}
	c.Helm = &action.Configuration{}
	if err := c.Helm.Init(getter, c.Namespace, "secret", func(string, ...any) {}); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return c, nil
}

// reachable asks for the server version with a short timeout, so that a
// missing cluster is one line, not a client-go retry loop.
func reachable(ctx context.Context, kube kubernetes.Interface, host string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := kube.Discovery().ServerVersion()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%w at %s: %s", ErrUnreachable, host, shortErr(err))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w at %s: no answer within 10s", ErrUnreachable, host)
	}
}

// shortErr keeps the last, most specific part of a long network error.
func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": dial "); i >= 0 {
		return strings.TrimSpace(s[i+2:])
	}
	return s
}

// Current returns the release's latest revision, or ErrNotInstalled.
func (c *Client) Current() (*release.Release, error) {
	rel, err := c.Helm.Releases.Last(c.Release)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, fmt.Errorf("%w (no release %q in namespace %s)", ErrNotInstalled, c.Release, c.Namespace)
	}
	if err != nil {
		return nil, fmt.Errorf("read release %s/%s: %w", c.Namespace, c.Release, err)
	}
	return rel, nil
}

// describe is a release in one line.
func describe(rel *release.Release) string {
	return fmt.Sprintf("release %s in %s, revision %d, chart %s-%s, %s", rel.Name, rel.Namespace, rel.Version,
		rel.Chart.Metadata.Name, rel.Chart.Metadata.Version, rel.Info.Status)
}
