package check

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/install"
)

// Labels of the check's objects.
const (
	workloadLabel = "nodemesh.io/check-workload"
	partOfValue   = "nodemesh-check"
	EchoPort      = 8080
)

// workload is one Deployment of the check.
type workload struct {
	name, namespace string
	echo            bool
	labels          map[string]string // extra pod labels (app, version)
	// sameNodeAs / otherNodeAs: pod (anti-)affinity to another workload.
	sameNodeAs, otherNodeAs string
}

func (s *Suite) workloads(env *Env) []workload {
	ws := []workload{
		{name: "client", namespace: env.Namespace},
		{name: "echo-same-node", namespace: env.Namespace, echo: true, labels: map[string]string{"app": "echo", "version": "v1"}, sameNodeAs: "client"},
		{name: "echo-other-node", namespace: env.Namespace, echo: true, labels: map[string]string{"app": "echo", "version": "v2"}, otherNodeAs: "client"},
		{name: "client-plain", namespace: env.PlainNamespace},
		{name: "echo-plain", namespace: env.PlainNamespace, echo: true},
	}
	if env.Istio {
		ws = append(ws,
			workload{name: "client-sidecar", namespace: env.SidecarNamespace},
			workload{name: "echo-sidecar", namespace: env.SidecarNamespace, echo: true})
	}
	return ws
}

// deploy creates the namespaces, Deployments and Services.
func (s *Suite) deploy(ctx context.Context, env *Env) error {
	nss := map[string]map[string]string{
		env.Namespace:      {api.DataplaneModeLabel: api.DataplaneModeNodemesh},
		env.PlainNamespace: {},
	}
	if env.Istio {
		nss[env.SidecarNamespace] = map[string]string{api.IstioInjectionLabel: api.IstioInjectionEnabled}
	}
	for name, labels := range nss {
		labels[api.PartOfLabel] = partOfValue
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if err := s.awaitDeleted(ctx, name); err != nil {
			return err
		}
		if _, err := s.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("namespace %s already exists (a previous check still running or kept with --keep? delete it first)", name)
			}
			return fmt.Errorf("create namespace %s: %w", name, err)
		}
	}
	for _, w := range s.workloads(env) {
		if _, err := s.Kube.AppsV1().Deployments(w.namespace).Create(ctx, s.deployment(w), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create deployment %s/%s: %w", w.namespace, w.name, err)
		}
		if !w.echo {
			continue
		}
		if err := s.service(ctx, w.namespace, w.name, map[string]string{workloadLabel: w.name}); err != nil {
			return err
		}
	}
	// "echo" selects both echo servers of the opted-in namespace: the
	// routing tests split and match between their versions.
	return s.service(ctx, env.Namespace, "echo", map[string]string{"app": "echo"})
}

func (s *Suite) service(ctx context.Context, ns, name string, selector map[string]string) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{api.PartOfLabel: partOfValue}},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{
			Name: "http", Port: EchoPort, TargetPort: intstr.FromInt32(EchoPort), AppProtocol: ptr("http"),
		}}},
	}
	if _, err := s.Kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s/%s: %w", ns, name, err)
	}
	return nil
}

func (s *Suite) deployment(w workload) *appsv1.Deployment {
	labels := map[string]string{workloadLabel: w.name, api.PartOfLabel: partOfValue}
	for k, v := range w.labels {
		labels[k] = v
	}
	ctr := corev1.Container{
		Name:  "client",
		Image: s.opts.ClientImage,
		// A shell that stays up and ends at once on SIGTERM.
		Command: []string{"sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"},
	}
	if w.echo {
		ctr = corev1.Container{
			Name:  "echo",
			Image: s.opts.EchoImage,
			Args:  []string{"netexec", fmt.Sprintf("--http-port=%d", EchoPort)},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: EchoPort}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromInt32(EchoPort)}}, PeriodSeconds: 2},
		}
	}
	spec := corev1.PodSpec{
		Containers:                    []corev1.Container{ctr},
		NodeSelector:                  s.opts.NodeSelector,
		Tolerations:                   s.opts.Tolerations,
		TerminationGracePeriodSeconds: ptr(int64(1)),
	}
	affinity := func(other string) corev1.PodAffinityTerm {
		return corev1.PodAffinityTerm{TopologyKey: "kubernetes.io/hostname",
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{workloadLabel: other}}}
	}
	switch {
	case w.sameNodeAs != "":
		spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{affinity(w.sameNodeAs)}}}
	case w.otherNodeAs != "":
		// Preferred, not required: a one-node cluster still runs the check
		// (the other-node actions then say they ran on the same node).
		spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
			PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100, PodAffinityTerm: affinity(w.otherNodeAs)}}}}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: w.name, Namespace: w.namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{workloadLabel: w.name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
}

// waitReady waits until every workload has a ready pod, and records them.
// On timeout it says which workloads are not ready and why.
func (s *Suite) waitReady(ctx context.Context, env *Env) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	for {
		env.Pods = map[string]Pod{}
		var waiting []string
		for _, w := range s.workloads(env) {
			pods, err := s.Kube.CoreV1().Pods(w.namespace).List(ctx, metav1.ListOptions{LabelSelector: workloadLabel + "=" + w.name})
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return fmt.Errorf("list pods of %s: %w", w.name, err)
			}
			why := "no pod yet"
			for i := range pods.Items {
				p := &pods.Items[i]
				ok, reason := install.PodReadiness(p)
				if ok {
					env.Pods[w.name] = Pod{Namespace: p.Namespace, Name: p.Name, Container: p.Spec.Containers[0].Name, IP: p.Status.PodIP, Node: p.Spec.NodeName, HostIP: p.Status.HostIP}
					break
				}
				why = reason
			}
			if _, ok := env.Pods[w.name]; !ok {
				waiting = append(waiting, w.namespace+"/"+w.name+": "+why)
			}
		}
		// The tests reach Services by name: the cluster DNS (the kube-dns
		// Service, where there is one) must have a ready endpoint too — on
		// a cluster just installed, its pods start with the CNI.
		if why := s.dnsWaiting(ctx); why != "" {
			waiting = append(waiting, why)
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			sort.Strings(waiting)
			return fmt.Errorf("workloads not ready after %s:\n  %s", s.opts.ReadyTimeout, strings.Join(waiting, "\n  "))
		case <-time.After(time.Second):
		}
	}
}

// awaitDeleted waits (up to the ready timeout) for a namespace that is
// being deleted — the previous run's — to be gone; one that exists and is
// not being deleted is left for Create to refuse.
func (s *Suite) awaitDeleted(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	said := false
	for {
		ns, err := s.Kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("get namespace %s: %w", name, err)
		case ns.DeletionTimestamp == nil:
			return nil
		}
		if !said {
			fmt.Fprintf(s.opts.Out, "⌛ namespace %s is still being deleted (a previous check): waiting\n", name)
			said = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s is still being deleted after %s", name, s.opts.ReadyTimeout)
		case <-time.After(time.Second):
		}
	}
}

// dnsWaiting says why the cluster DNS is not ready yet, or "" (ready, or
// no kube-dns Service: the cluster resolves some other way).
func (s *Suite) dnsWaiting(ctx context.Context) string {
	if _, err := s.Kube.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{}); err != nil {
		return ""
	}
	eps, err := s.Kube.DiscoveryV1().EndpointSlices("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kube-dns"})
	if err != nil {
		return "kube-system/kube-dns: " + err.Error()
	}
	for _, sl := range eps.Items {
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				return ""
			}
		}
	}
	return "kube-system/kube-dns (cluster DNS): no ready endpoint"
}

// cleanup deletes the check's namespaces (and so everything in them).
func (s *Suite) cleanup(ctx context.Context, env *Env) error {
	var errs []error
	for _, ns := range []string{env.Namespace, env.PlainNamespace, env.SidecarNamespace} {
		err := s.Kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
		}
	}
	return errors.Join(errs...)
}

// istioPresent: istiod runs somewhere (sidecar injection works).
func (s *Suite) istioPresent(ctx context.Context) (bool, error) {
	deps, err := s.Kube.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: "app=istiod"})
	if err != nil {
		return false, fmt.Errorf("look for istiod: %w", err)
	}
	return len(deps.Items) > 0, nil
}

// What runs as the node proxy.
const (
	NodeProxyEnvoy   = "envoy"
	NodeProxyStandIn = "stand-in"
	NodeProxyNone    = "none"
)

// nodeProxy reads the node proxy DaemonSet: Envoy, the L4 stand-in
// (envoy.standIn.enabled runs 'node-proxy'), or none (envoy.enabled=false).
func (s *Suite) nodeProxy(ctx context.Context) (string, error) {
	dss, err := s.Kube.AppsV1().DaemonSets("").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + api.EnvoyName})
	if err != nil {
		return "", fmt.Errorf("look for the node proxy: %w", err)
	}
	if len(dss.Items) == 0 {
		return NodeProxyNone, nil
	}
	for _, c := range dss.Items[0].Spec.Template.Spec.Containers {
		if len(c.Args) > 0 && c.Args[0] == "node-proxy" {
			return NodeProxyStandIn, nil
		}
	}
	return NodeProxyEnvoy, nil
}

// needsEnvoy is the Requires of the tests that need L7 routing.
func needsEnvoy(e *Env) string {
	switch e.NodeProxy {
	case NodeProxyStandIn:
		return "the node proxy is nodemesh's L4 stand-in (envoy.standIn.enabled): VirtualService routing needs Envoy"
	case NodeProxyNone:
		return "no node proxy is installed (envoy.enabled=false): VirtualService routing needs Envoy"
	}
	return ""
}

func ptr[T any](v T) *T { return &v }
