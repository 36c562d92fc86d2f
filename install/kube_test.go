package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// The chart's objects have fixed, cluster-wide names (one nodemesh per
// cluster), so the tests of this package that install run one at a time,
// each removes what it installed, and they use an API server of their own:
// the suites of other packages (run in parallel, sharing make kube-up's
// server) install the chart or use its CRDs too.

// connectTest installs into a fresh namespace name of the test's own.
func connectTest(t *testing.T) (*kubetest.Env, *Client) {
	t.Helper()
	env := kubetest.Dedicated(t, "chart")
	ns := fmt.Sprintf("nodemesh-%d", time.Now().UnixNano()%1_000_000)
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &env.Kubeconfig
	flags.Namespace = &ns
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Connect(ctx, flags, ns, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		ch, _ := Chart()
		_, _ = c.Uninstall(ctx, ch, UninstallOptions{Purge: true, CleanupTimeout: time.Second})
		// What a failed test may have left: the cluster-scoped objects.
		for _, n := range []string{api.ControllerName, api.AgentName} {
			_ = c.Kube.RbacV1().ClusterRoles().Delete(ctx, n, metav1.DeleteOptions{})
			_ = c.Kube.RbacV1().ClusterRoleBindings().Delete(ctx, n, metav1.DeleteOptions{})
		}
	})
	return env, c
}

type objRef struct{ Kind, Namespace, Name string }

func (o objRef) String() string { return o.Kind + " " + o.Namespace + "/" + o.Name }

// manifestObjects lists the objects of a rendered manifest (CRDs included).
func manifestObjects(t *testing.T, manifest string) []objRef {
	t.Helper()
	var out []objRef
	for _, doc := range releaseutil.SplitManifests(manifest) {
		var head struct {
			Kind     string
			Metadata struct{ Name, Namespace string }
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		if head.Kind != "" {
			out = append(out, objRef{head.Kind, head.Metadata.Namespace, head.Metadata.Name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// get returns an object's resourceVersion, or the API error.
func get(ctx context.Context, c *Client, o objRef) (string, error) {
	var m metav1.Object
	var err error
	opts := metav1.GetOptions{}
	k := c.Kube
	switch o.Kind {
	case "ServiceAccount":
		m, err = k.CoreV1().ServiceAccounts(o.Namespace).Get(ctx, o.Name, opts)
	case "Service":
		m, err = k.CoreV1().Services(o.Namespace).Get(ctx, o.Name, opts)
	case "ConfigMap":
		m, err = k.CoreV1().ConfigMaps(o.Namespace).Get(ctx, o.Name, opts)
	case "ClusterRole":
		m, err = k.RbacV1().ClusterRoles().Get(ctx, o.Name, opts)
	case "ClusterRoleBinding":
		m, err = k.RbacV1().ClusterRoleBindings().Get(ctx, o.Name, opts)
	case "Role":
		m, err = k.RbacV1().Roles(o.Namespace).Get(ctx, o.Name, opts)
	case "RoleBinding":
		m, err = k.RbacV1().RoleBindings(o.Namespace).Get(ctx, o.Name, opts)
	case "Deployment":
		m, err = k.AppsV1().Deployments(o.Namespace).Get(ctx, o.Name, opts)
	case "DaemonSet":
		m, err = k.AppsV1().DaemonSets(o.Namespace).Get(ctx, o.Name, opts)
	case "PodDisruptionBudget":
		m, err = k.PolicyV1().PodDisruptionBudgets(o.Namespace).Get(ctx, o.Name, opts)
	case "CustomResourceDefinition":
		m, err = c.CRDs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, o.Name, opts)
	case "Secret":
		m, err = k.CoreV1().Secrets(o.Namespace).Get(ctx, o.Name, opts)
	case "NetworkPolicy":
		m, err = k.NetworkingV1().NetworkPolicies(o.Namespace).Get(ctx, o.Name, opts)
	case "TrafficPolicy":
		var dyn dynamic.Interface
		if dyn, err = dynamic.NewForConfig(c.Config); err == nil {
			m, err = dyn.Resource(schema.GroupVersionResource{Group: "nodemesh.io", Version: "v1alpha1", Resource: "trafficpolicies"}).Namespace(o.Namespace).Get(ctx, o.Name, opts)
		}
	default:
		return "", fmt.Errorf("test cannot get %s", o.Kind)
	}
	if err != nil {
		return "", err
	}
	return m.GetResourceVersion(), nil
}

func releaseSecrets(ctx context.Context, t *testing.T, c *Client) int {
	t.Helper()
	s, err := c.Kube.CoreV1().Secrets(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + c.Release})
	if err != nil {
		t.Fatal(err)
	}
	return len(s.Items)
}

// TestLifecycle installs, upgrades and uninstalls against the real API
// server: every object is created and accepted, an upgrade changes only the
// objects its value affects, and uninstall removes everything.
func TestLifecycle(t *testing.T) {
	env, c := connectTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ch, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]any{"controller": map[string]any{"replicas": 2}}

	// Install: every object of the rendering exists.
	rel, err := c.Install(ctx, ch, InstallOptions{Values: vals})
	if err != nil {
		t.Fatal(err)
	}
	if rel.Info.Status != "deployed" {
		t.Fatalf("release status %s", rel.Info.Status)
	}
	rendered, err := Render(ch, RenderOptions{Namespace: c.Namespace, Values: vals})
	if err != nil {
		t.Fatal(err)
	}
	objs := manifestObjects(t, rendered)
	// The controller fills the CA Secret and the bundle ConfigMap the
	// chart creates empty; upgrades must leave that alone (below).
	caData := map[string][]byte{api.CASecretCertKey: []byte("cert"), api.CASecretKeyKey: []byte("key")}
	sec, err := c.Kube.CoreV1().Secrets(c.Namespace).Get(ctx, api.CASecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data = caData
	if _, err := c.Kube.CoreV1().Secrets(c.Namespace).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm, err := c.Kube.CoreV1().ConfigMaps(c.Namespace).Get(ctx, api.CABundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{api.CABundleKey: "bundle"}
	if _, err := c.Kube.CoreV1().ConfigMaps(c.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	versions := map[objRef]string{}
	for _, o := range objs {
		rv, err := get(ctx, c, o)
		if err != nil {
			t.Errorf("%s: %v", o, err)
		}
		versions[o] = rv
	}
	if len(versions) < 15 {
		t.Errorf("only %d objects rendered: %v", len(versions), objs)
	}
	ns, err := c.Kube.CoreV1().Namespaces().Get(ctx, c.Namespace, metav1.GetOptions{})
	if err != nil || ns.Labels[psaEnforce] != "privileged" || ns.Labels[CreatedByLabel] != CreatedByValue {
		t.Errorf("namespace: %v %v", ns.Labels, err)
	}
	// The API server's RBAC lets the agent watch its own DaemonSet, by
	// name (how its informer asks: a field selector on metadata.name), and
	// nothing an uninstall request could hide in.
	agentSA := "system:serviceaccount:" + c.Namespace + ":" + api.AgentName
	for name, tc := range map[string]struct {
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		"watch its DaemonSet":    {authorizationv1.ResourceAttributes{Verb: "watch", Group: "apps", Resource: "daemonsets", Name: api.AgentName}, true},
		"get its DaemonSet":      {authorizationv1.ResourceAttributes{Verb: "get", Group: "apps", Resource: "daemonsets", Name: api.AgentName}, true},
		"watch other DaemonSets": {authorizationv1.ResourceAttributes{Verb: "watch", Group: "apps", Resource: "daemonsets"}, false},
		"delete its DaemonSet":   {authorizationv1.ResourceAttributes{Verb: "delete", Group: "apps", Resource: "daemonsets", Name: api.AgentName}, false},
		"read ConfigMaps":        {authorizationv1.ResourceAttributes{Verb: "get", Resource: "configmaps", Name: "nodemesh-cleanup"}, false},
	} {
		tc.attrs.Namespace = c.Namespace
		sar, err := c.Kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: agentSA, Groups: []string{"system:serviceaccounts"}, ResourceAttributes: &tc.attrs}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != tc.want {
			t.Errorf("agent may %s: %v, want %v (%s)", name, sar.Status.Allowed, tc.want, sar.Status.Reason)
		}
	}
	if n := releaseSecrets(ctx, t, c); n != 1 {
		t.Errorf("%d release Secrets, want 1", n)
	}

	// A second install is refused and says to upgrade.
	if _, err := c.Install(ctx, ch, InstallOptions{}); !errors.Is(err, ErrAlreadyInstalled) || !strings.Contains(err.Error(), "nodemesh upgrade") {
		t.Errorf("second install: %v", err)
	}

	// Upgrade one value: only the Envoy DaemonSet changes, and the earlier
	// value (2 controller replicas) is kept.
	res, err := c.Upgrade(ctx, ch, UpgradeOptions{Values: map[string]any{"envoy": map[string]any{"image": map[string]any{"tag": "v1.36.9"}}}})
	if err != nil {
		t.Fatal(err)
	}
	envoy := objRef{"DaemonSet", c.Namespace, api.EnvoyName}
	if want := []string{"DaemonSet " + c.Namespace + "/" + api.EnvoyName}; fmt.Sprint(res.Changed) != fmt.Sprint(want) {
		t.Errorf("changed %v, want %v", res.Changed, want)
	}
	for o, before := range versions {
		after, err := get(ctx, c, o)
		if err != nil {
			t.Errorf("%s after upgrade: %v", o, err)
			continue
		}
		if changed := after != before; changed != (o == envoy) {
			t.Errorf("%s: resourceVersion %s → %s (changed=%v)", o, before, after, changed)
		}
	}
	if sec, err := c.Kube.CoreV1().Secrets(c.Namespace).Get(ctx, api.CASecret, metav1.GetOptions{}); err != nil || fmt.Sprint(sec.Data) != fmt.Sprint(caData) {
		t.Errorf("the controller's CA did not survive an upgrade: %v %v", sec.Data, err)
	}
	if cm, err := c.Kube.CoreV1().ConfigMaps(c.Namespace).Get(ctx, api.CABundleConfigMap, metav1.GetOptions{}); err != nil || cm.Data[api.CABundleKey] != "bundle" {
		t.Errorf("the CA bundle did not survive an upgrade: %v %v", cm.Data, err)
	}
	ds, err := c.Kube.AppsV1().DaemonSets(c.Namespace).Get(ctx, api.EnvoyName, metav1.GetOptions{})
	if err != nil || ds.Spec.Template.Spec.Containers[0].Image != "docker.io/envoyproxy/envoy:v1.36.9" {
		t.Errorf("envoy image after upgrade: %v", err)
	}
	if dep, err := c.Kube.AppsV1().Deployments(c.Namespace).Get(ctx, api.ControllerName, metav1.GetOptions{}); err != nil || *dep.Spec.Replicas != 2 {
		t.Errorf("controller replicas after upgrade: want the 2 given at install (%v)", err)
	}
	// --reset-values: back to the defaults, plus what is given now.
	res, err = c.Upgrade(ctx, ch, UpgradeOptions{ResetValues: true})
	if err != nil {
		t.Fatal(err)
	}
	if dep, err := c.Kube.AppsV1().Deployments(c.Namespace).Get(ctx, api.ControllerName, metav1.GetOptions{}); err != nil || *dep.Spec.Replicas != 1 {
		t.Errorf("controller replicas after --reset-values: want the default 1 (%v)", err)
	}
	if len(res.Changed) != 2 {
		t.Errorf("reset changed %v, want the controller Deployment and the Envoy DaemonSet", res.Changed)
	}

	// The copies of the CA bundle the controller publishes in other
	// namespaces (no controller runs here: made as it makes them), and a
	// same-named ConfigMap that is someone else's.
	published, users := env.Namespace(t, "published", nil), env.Namespace(t, "users", nil)
	for ns, labels := range map[string]map[string]string{published: {api.PartOfLabel: api.PartOfValue}, users: nil} {
		if _, err := c.Kube.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: api.CABundleConfigMap, Labels: labels}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Uninstall: everything but the CRDs is gone.
	var out bytes.Buffer
	ures, err := c.Uninstall(ctx, ch, UninstallOptions{Out: &out, CleanupTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !ures.ReleaseRemoved || len(ures.CRDsDeleted) != 0 || ures.CABundlesDeleted != 1 {
		t.Errorf("uninstall result %+v", ures)
	}
	if _, err := c.Kube.CoreV1().ConfigMaps(published).Get(ctx, api.CABundleConfigMap, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the published CA bundle in %s after uninstall: %v", published, err)
	}
	if _, err := c.Kube.CoreV1().ConfigMaps(users).Get(ctx, api.CABundleConfigMap, metav1.GetOptions{}); err != nil {
		t.Errorf("someone else's ConfigMap %s/%s was deleted: %v", users, api.CABundleConfigMap, err)
	}
	for o := range versions {
		_, err := get(ctx, c, o)
		if o.Kind == "CustomResourceDefinition" {
			if err != nil {
				t.Errorf("%s deleted without --purge: %v", o, err)
			}
			continue
		}
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s after uninstall: %v", o, err)
		}
	}
	if n := releaseSecrets(ctx, t, c); n != 0 {
		t.Errorf("%d release Secrets left", n)
	}
	if _, err := c.Uninstall(ctx, ch, UninstallOptions{}); !errors.Is(err, ErrNotInstalled) {
		t.Errorf("second uninstall: %v", err)
	}
	// --purge without a release still removes the CRDs and the namespace.
	ures, err = c.Uninstall(ctx, ch, UninstallOptions{Purge: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ures.CRDsDeleted {
		if _, err := get(ctx, c, objRef{"CustomResourceDefinition", "", n}); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	}
	if len(ures.CRDsDeleted) != 2 || !ures.NamespaceDeleted {
		t.Errorf("purge: %+v", ures)
	}
}

func assertNothingInstalled(ctx context.Context, t *testing.T, c *Client) {
	t.Helper()
	for _, n := range []string{"identities.nodemesh.io", "trafficpolicies.nodemesh.io"} {
		// Deleted is enough: the API server may take minutes to finish.
		crd, err := c.CRDs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, n, metav1.GetOptions{})
		if err == nil && crd.DeletionTimestamp == nil || err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("CRD %s left behind: %v", n, err)
		}
	}
	for _, o := range []objRef{{"ClusterRole", "", api.AgentName}, {"ClusterRoleBinding", "", api.AgentName}, {"DaemonSet", c.Namespace, api.AgentName}, {"Deployment", c.Namespace, api.ControllerName}} {
		if _, err := get(ctx, c, o); !apierrors.IsNotFound(err) {
			t.Errorf("%s left behind: %v", o, err)
		}
	}
	if n := releaseSecrets(ctx, t, c); n != 0 {
		t.Errorf("%d release Secrets left", n)
	}
	ns, err := c.Kube.CoreV1().Namespaces().Get(ctx, c.Namespace, metav1.GetOptions{})
	if err == nil && ns.DeletionTimestamp == nil {
		t.Errorf("namespace %s left behind", c.Namespace)
	}
}

// TestInstallInvalidValues: a value the schema rejects is named, and
// nothing reaches the cluster — not even the CRDs Helm would install first.
func TestInstallInvalidValues(t *testing.T) {
	_, c := connectTest(t)
	ctx := context.Background()
	ch, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Install(ctx, ch, InstallOptions{Values: map[string]any{"controller": map[string]any{"replicas": "two"}}})
	if !errors.Is(err, ErrInvalidValues) || !strings.Contains(err.Error(), "controller.replicas: got string, want integer") {
		t.Fatalf("want the schema error naming controller.replicas, got %v", err)
	}
	assertNothingInstalled(ctx, t, c)
}

// TestInstallFailurePartWay: when the API server refuses the install after
// Helm has created the CRDs (an object of the same name exists, not
// Helm's), everything is removed again.
func TestInstallFailurePartWay(t *testing.T) {
	_, c := connectTest(t)
	ctx := context.Background()
	ch, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	squatter := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: api.AgentName}}
	if _, err := c.Kube.RbacV1().ClusterRoles().Create(ctx, squatter, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = c.Install(ctx, ch, InstallOptions{})
	if err == nil || !strings.Contains(err.Error(), "everything it created was removed") || !strings.Contains(err.Error(), api.AgentName) {
		t.Fatalf("want a failed install naming the conflicting ClusterRole, got %v", err)
	}
	if err := c.Kube.RbacV1().ClusterRoles().Delete(ctx, api.AgentName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	assertNothingInstalled(ctx, t, c)
}

// TestWaitProgress: no kubelet runs here, so the test gives the workloads
// the pods and statuses a cluster would, and checks what --wait reports.
func TestWaitProgress(t *testing.T) {
	env, c := connectTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ch, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Install(ctx, ch, InstallOptions{}); err != nil {
		t.Fatal(err)
	}
	// Before any controller processed them.
	var out bytes.Buffer
	err = c.Wait(ctx, WaitOptions{Timeout: 300 * time.Millisecond, Interval: 100 * time.Millisecond, Out: &out})
	if !errors.Is(err, ErrNotReady) || !strings.Contains(out.String(), "not yet processed by the DaemonSet controller") {
		t.Fatalf("wait before controllers: %v\n%s", err, out.String())
	}

	// The states a real cluster goes through.
	dsStatus := func(name string, desired, ready int32) {
		ds, err := c.Kube.AppsV1().DaemonSets(c.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ds.Status = appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, DesiredNumberScheduled: desired, CurrentNumberScheduled: desired, UpdatedNumberScheduled: desired, NumberReady: ready}
		if _, err := c.Kube.AppsV1().DaemonSets(c.Namespace).UpdateStatus(ctx, ds, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	depStatus := func(ready int32) {
		d, err := c.Kube.AppsV1().Deployments(c.Namespace).Get(ctx, api.ControllerName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: ready}
		if _, err := c.Kube.AppsV1().Deployments(c.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	agentDS, err := c.Kube.AppsV1().DaemonSets(c.Namespace).Get(ctx, api.AgentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := func(component, node string, st corev1.PodStatus) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: component + "-" + node, Namespace: c.Namespace, Labels: map[string]string{"app.kubernetes.io/name": component}},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "img"}}},
			Status:     st,
		}
		if component == api.AgentName { // as the DaemonSet controller makes them
			p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(agentDS, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}
		}
		return p
	}
	waiting := func(reason, msg string) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "c", Image: "docker.io/envoyproxy/envoy:v9", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}}
	}
	crash := corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "agent", RestartCount: 4,
		State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "mount bpffs: permission denied"}}}}}
	ready := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	unschedulable := corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/2 nodes are available: 2 Insufficient memory."}}}
	for _, p := range []*corev1.Pod{
		pod(api.EnvoyName, "node-1", waiting("ImagePullBackOff", `Back-off pulling image "docker.io/envoyproxy/envoy:v9"`)),
		pod(api.EnvoyName, "node-2", ready),
		pod(api.AgentName, "node-1", crash),
		pod(api.AgentName, "node-2", ready),
	} {
		if _, err := env.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	ctrl := pod(api.ControllerName, "", unschedulable)
	ctrl.Name = api.ControllerName + "-5d8f9"
	if _, err := env.Create(ctx, ctrl); err != nil {
		t.Fatal(err)
	}
	dsStatus(api.EnvoyName, 2, 1)
	dsStatus(api.AgentName, 2, 1)
	depStatus(0)
	out.Reset()
	err = c.Wait(ctx, WaitOptions{Timeout: 300 * time.Millisecond, Interval: 100 * time.Millisecond, Out: &out})
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("want ErrNotReady, got %v", err)
	}
	for _, want := range []string{
		"⏳ nodemesh-controller: 0/1 ready — nodemesh-controller-5d8f9: pending: cannot be scheduled: 0/2 nodes are available: 2 Insufficient memory.",
		"⏳ nodemesh-agent: 1/2 ready — node-1: crash loop: container agent restarted 4 times, last exit code 1: mount bpffs: permission denied",
		`⏳ nodemesh-envoy: 1/2 ready — node-1: image pull failed (docker.io/envoyproxy/envoy:v9): Back-off pulling image "docker.io/envoyproxy/envoy:v9"`,
	} {
		if strings.Count(out.String(), want+"\n") != 1 {
			t.Errorf("want once: %s\ngot:\n%s", want, out.String())
		}
	}
	if !strings.Contains(err.Error(), "nodemesh-agent: 1/2 ready") {
		t.Errorf("timeout error should name what is not ready: %v", err)
	}

	// Status says the same, per node, and is not healthy.
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Healthy || st.Release == nil || st.Release.Status != "deployed" || len(st.Nodes) != 2 || st.XDSError == "" {
		t.Errorf("status: %+v", st)
	}
	if n := st.Nodes[0]; n.Node != "node-1" || !strings.HasPrefix(n.Agent, "crash loop") || !strings.HasPrefix(n.Envoy, "image pull failed") {
		t.Errorf("node-1: %+v", n)
	}

	// Everything becomes ready: the wait ends with the summary.
	for _, p := range []string{api.EnvoyName + "-node-1", api.AgentName + "-node-1", ctrl.Name} {
		got, err := c.Kube.CoreV1().Pods(c.Namespace).Get(ctx, p, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got.Status = ready
		if _, err := c.Kube.CoreV1().Pods(c.Namespace).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dsStatus(api.EnvoyName, 2, 2)
	dsStatus(api.AgentName, 2, 2)
	depStatus(1)
	out.Reset()
	if err := c.Wait(ctx, WaitOptions{Timeout: 5 * time.Second, Interval: 100 * time.Millisecond, Out: &out}); err != nil {
		t.Fatalf("wait: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "✅ nodemesh is ready") {
		t.Errorf("no summary:\n%s", out.String())
	}

	// Uninstall deletes the agent DaemonSet, whose agents on node-1 and
	// node-2 clean their nodes as they stop; node-2 answers, as the agent
	// does, on the DaemonSet. An answer of an earlier DaemonSet's agent
	// (another UID) does not count.
	stale := &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "cleaned-", Namespace: c.Namespace},
		InvolvedObject: corev1.ObjectReference{APIVersion: "apps/v1", Kind: "DaemonSet", Namespace: c.Namespace, Name: api.AgentName, UID: "an-earlier-install"},
		Reason:         api.NodeCleanedReason, Message: "earlier", Source: corev1.EventSource{Component: api.AgentName, Host: "node-1"}}
	if _, err := c.Kube.CoreV1().Events(c.Namespace).Create(ctx, stale, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for ctx.Err() == nil {
			if _, err := c.Kube.AppsV1().DaemonSets(c.Namespace).Get(ctx, api.AgentName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "cleaned-", Namespace: c.Namespace},
					InvolvedObject: corev1.ObjectReference{APIVersion: "apps/v1", Kind: "DaemonSet", Namespace: c.Namespace, Name: api.AgentName, UID: agentDS.UID},
					Reason:         api.NodeCleanedReason, Message: "removed programs, pins and CNI configuration", Source: corev1.EventSource{Component: api.AgentName, Host: "node-2"}}
				_, _ = c.Kube.CoreV1().Events(c.Namespace).Create(ctx, ev, metav1.CreateOptions{})
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	ures, err := c.Uninstall(ctx, ch, UninstallOptions{CleanupTimeout: 3 * time.Second, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ures.Cleaned) != "[node-2]" || fmt.Sprint(ures.Unconfirmed) != "[node-1]" {
		t.Errorf("cleanup: cleaned %v, unconfirmed %v", ures.Cleaned, ures.Unconfirmed)
	}
	if !strings.Contains(out.String(), "deleted the agent DaemonSet: the agents on 2 nodes remove") {
		t.Errorf("uninstall output:\n%s", out.String())
	}
}

// holdFinalizer keeps a deleted CRD Terminating until the test removes it:
// the state the API server leaves a CRD in for minutes when its storage is
// still starting ("could not list instances: storage is (re)initializing").
const holdFinalizer = "test.nodemesh.io/hold"

// setHold adds or removes holdFinalizer on a CRD.
func setHold(ctx context.Context, t *testing.T, c *Client, name string, hold bool) {
	t.Helper()
	api := c.CRDs.ApiextensionsV1().CustomResourceDefinitions()
	crd, err := api.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var fins []string
	for _, f := range crd.Finalizers {
		if f != holdFinalizer {
			fins = append(fins, f)
		}
	}
	if hold {
		fins = append(fins, holdFinalizer)
	}
	crd.Finalizers = fins
	if _, err := api.Update(ctx, crd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestTerminatingCRDs: a CRD the API server has not finished deleting is
// waited for by install (which would otherwise take it for present and
// lose its kinds a moment later), named with the server's reason when the
// wait ends; uninstall --purge reports such a CRD instead of failing.
func TestTerminatingCRDs(t *testing.T) {
	_, c := connectTest(t)
	ctx := context.Background()
	ch, err := Chart()
	if err != nil {
		t.Fatal(err)
	}
	const crdName = "identities.nodemesh.io"
	t.Cleanup(func() {
		for _, n := range []string{crdName, "trafficpolicies.nodemesh.io"} {
			setHold(ctx, t, c, n, false)
		}
	})
	defer func(d time.Duration) { crdTerminatingWait = d }(crdTerminatingWait)

	// A terminating CRD from an earlier uninstall.
	crds, err := chartCRDs(ch)
	if err != nil {
		t.Fatal(err)
	}
	for _, crd := range crds {
		if crd.Name != crdName {
			continue
		}
		crd = crd.DeepCopy()
		crd.Finalizers = []string{holdFinalizer}
		if _, err := c.CRDs.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CRDs.ApiextensionsV1().CustomResourceDefinitions().Delete(ctx, crdName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// It stays: install gives up, naming it, and installs nothing.
	crdTerminatingWait = 2 * time.Second
	var out bytes.Buffer
	_, err = c.Install(ctx, ch, InstallOptions{Out: &out})
	if err == nil || !strings.Contains(err.Error(), "CRD "+crdName+" is still being deleted") {
		t.Fatalf("want install to name the terminating CRD, got %v", err)
	}
	if !strings.Contains(out.String(), "⏳ CRD "+crdName+" is being deleted") {
		t.Errorf("progress does not say what install waits for:\n%s", out.String())
	}
	if _, err := c.Current(); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("a release after the refused install: %v", err)
	}

	// It goes while install waits: install goes on and creates it anew.
	crdTerminatingWait = time.Minute
	go func() {
		time.Sleep(time.Second)
		setHold(ctx, t, c, crdName, false)
	}()
	if _, err := c.Install(ctx, ch, InstallOptions{Out: &out}); err != nil {
		t.Fatal(err)
	}
	crd, err := c.CRDs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crdName, metav1.GetOptions{})
	if err != nil || crd.DeletionTimestamp != nil {
		t.Fatalf("after install, CRD %s: %v (deleting: %v)", crdName, err, err == nil && crd.DeletionTimestamp != nil)
	}

	// Purge while one CRD cannot go yet: reported, not an error.
	setHold(ctx, t, c, "trafficpolicies.nodemesh.io", true)
	crdTerminatingWait = 2 * time.Second
	res, err := c.Uninstall(ctx, ch, UninstallOptions{Purge: true, CleanupTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.CRDsTerminating) != 1 || !strings.HasPrefix(res.CRDsTerminating[0], "trafficpolicies.nodemesh.io (") {
		t.Errorf("terminating CRDs: %q", res.CRDsTerminating)
	}
	setHold(ctx, t, c, "trafficpolicies.nodemesh.io", false)
	assertNothingInstalled(ctx, t, c)
}
