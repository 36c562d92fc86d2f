package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/debugclient"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Readiness decides whether a workload's rollout is complete. why says what
// it waits for.
type Readiness interface {
	Ready(ctx context.Context, c kubernetes.Interface, w ir.ResourceRef) (done bool, why string, err error)
}

// RolloutStatus is `kubectl rollout status`: the controller has seen the
// latest template, every replica is updated and available, and no old
// replica is left.
type RolloutStatus struct{}

// Ready implements Readiness.
func (RolloutStatus) Ready(ctx context.Context, c kubernetes.Interface, w ir.ResourceRef) (bool, string, error) {
	apps := c.AppsV1()
	switch w.Kind {
	case "Deployment":
		d, err := apps.Deployments(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return false, "", wrapf(err, "get "+w.String())
		}
		return deploymentReady(d)
	case "StatefulSet":
		s, err := apps.StatefulSets(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return false, "", wrapf(err, "get "+w.String())
		}
		want := int32(1)
		if s.Spec.Replicas != nil {
			want = *s.Spec.Replicas
		}
		st := s.Status
		switch {
		case st.ObservedGeneration < s.Generation:
			return false, "waiting for the controller to see the new template", nil
		case st.UpdatedReplicas < want:
			return false, fmt.Sprintf("%d of %d pods updated", st.UpdatedReplicas, want), nil
		case st.ReadyReplicas < want:
			return false, fmt.Sprintf("%d of %d pods ready", st.ReadyReplicas, want), nil
		case st.UpdateRevision != "" && st.CurrentRevision != st.UpdateRevision:
			return false, "waiting for the update revision to become current", nil
		}
		return true, "", nil
	case "DaemonSet":
		s, err := apps.DaemonSets(w.Namespace).Get(ctx, w.Name, metav1.GetOptions{})
		if err != nil {
			return false, "", wrapf(err, "get "+w.String())
		}
		st := s.Status
		switch {
		case st.ObservedGeneration < s.Generation:
			return false, "waiting for the controller to see the new template", nil
		case st.UpdatedNumberScheduled < st.DesiredNumberScheduled:
			return false, fmt.Sprintf("%d of %d pods updated", st.UpdatedNumberScheduled, st.DesiredNumberScheduled), nil
		case st.NumberAvailable < st.DesiredNumberScheduled:
			return false, fmt.Sprintf("%d of %d pods available", st.NumberAvailable, st.DesiredNumberScheduled), nil
		}
		return true, "", nil
	}
	return false, "", fmt.Errorf("unknown workload kind %s", w.Kind)
}

func deploymentReady(d *appsv1.Deployment) (bool, string, error) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	st := d.Status
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return false, "", fmt.Errorf("rollout of Deployment %s/%s exceeded its progress deadline", d.Namespace, d.Name)
		}
	}
	switch {
	case st.ObservedGeneration < d.Generation:
		return false, "waiting for the controller to see the new template", nil
	case st.UpdatedReplicas < want:
		return false, fmt.Sprintf("%d of %d new replicas updated", st.UpdatedReplicas, want), nil
	case st.Replicas > st.UpdatedReplicas:
		return false, fmt.Sprintf("%d old replicas pending termination", st.Replicas-st.UpdatedReplicas), nil
	case st.AvailableReplicas < st.UpdatedReplicas:
		return false, fmt.Sprintf("%d of %d updated replicas available", st.AvailableReplicas, st.UpdatedReplicas), nil
	}
	return true, "", nil
}

// ErrUnreachable says a check could not reach what it checks; apply then
// skips the check instead of failing.
var ErrUnreachable = errors.New("unreachable")

// RouteChecker says which of a namespace's Service hosts the controller
// serves no route for.
type RouteChecker interface {
	Serves(ctx context.Context, hosts []string) (missing []string, err error)
}

// Prober runs a short connectivity check through the node Envoy from the
// migrated namespace. summary says what passed (for the progress line); an
// error says what failed, and makes apply roll back.
type Prober interface {
	Probe(ctx context.Context, namespace string) (summary string, err error)
}

// DebugRoutes reads the controller's /debug/config_dump (directly at URL, or
// through the API server's service proxy) for every node it serves and
// looks for a virtual host of each Service. The debug endpoints need a
// token: Token, or one requested with Client for the controller's debug
// ServiceAccount (internal/debugclient).
type DebugRoutes struct {
	URL       string
	Client    kubernetes.Interface
	Namespace string
	Service   string
	Token     string

	once sync.Once
	dc   *debugclient.Client
}

func (d *DebugRoutes) get(ctx context.Context, path string, query map[string]string) ([]byte, error) {
	d.once.Do(func() {
		svc := d.Service
		if svc == "" {
			svc = ControllerDeployment
		}
		ns := d.Namespace
		if ns == "" {
			ns = api.DefaultNamespace
		}
		d.dc = &debugclient.Client{URL: d.URL, Kube: d.Client, Namespace: ns, Service: svc, Token: d.Token}
	})
	q := url.Values{}
	for k, v := range query {
		q.Set(k, v)
	}
	body, err := d.dc.Get(ctx, path, q)
	var status *debugclient.StatusError
	switch {
	case err == nil:
		return body, nil
	case d.URL != "" && errors.As(err, &status):
		// The controller answered: not an unreachable one.
		return nil, fmt.Errorf("controller: %w", err)
	case d.URL != "":
		return nil, fmt.Errorf("%w: controller at %s: %v", ErrUnreachable, d.URL, err)
	default:
		return nil, fmt.Errorf("%w: controller service %s/%s: %v", ErrUnreachable, d.dc.Namespace, d.dc.Service, err)
	}
}

// Serves implements RouteChecker.
func (d *DebugRoutes) Serves(ctx context.Context, hosts []string) ([]string, error) {
	raw, err := d.get(ctx, "debug/nodes", nil)
	if err != nil {
		return nil, err
	}
	var nodes []struct {
		Node string `json:"node"`
	}
	if err := json.Unmarshal(raw, &nodes); err != nil || len(nodes) == 0 {
		return nil, fmt.Errorf("%w: the controller lists no node", ErrUnreachable)
	}
	raw, err = d.get(ctx, "debug/config_dump", map[string]string{"node": nodes[0].Node})
	if err != nil {
		return nil, err
	}
	var dump struct {
		Routes []struct {
			VirtualHosts []struct {
				Domains []string `json:"domains"`
			} `json:"virtual_hosts"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(raw, &dump); err != nil {
		return nil, fmt.Errorf("read the config dump: %w", err)
	}
	served := map[string]bool{}
	for _, r := range dump.Routes {
		for _, vh := range r.VirtualHosts {
			for _, dom := range vh.Domains {
				served[dom] = true
			}
		}
	}
	var missing []string
	for _, h := range hosts {
		if !served[h] {
			missing = append(missing, h)
		}
	}
	slices.Sort(missing)
	return missing, nil
}
