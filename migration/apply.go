package migration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Migrator applies and rolls back migrations against a cluster.
type Migrator struct {
	Client kubernetes.Interface
	// Dynamic lists the cluster for analysis; without it apply skips the
	// analysis gate.
	Dynamic dynamic.Interface
	// Progress receives one line per step.
	Progress io.Writer
	// Readiness decides when a rollout is done (RolloutStatus when nil).
	Readiness Readiness
	// Routes checks that the controller serves the namespace's Services
	// (skipped when nil or unreachable).
	Routes RouteChecker
	// Probe checks connectivity through the node Envoy (skipped when nil).
	Probe Prober
	// RolloutTimeout bounds each rollout (5 minutes when zero).
	RolloutTimeout time.Duration
	// ControllerNamespace is where nodemesh runs (nodemesh-system).
	ControllerNamespace string
	// Force moves a namespace that analysis finds blocked.
	Force bool
	// DryRun checks the preconditions and prints the plan only.
	DryRun bool
	// Analysis options (cluster domain, root namespace).
	Analysis Options
	// AfterStep, when set, is called after each completed step; an error
	// stops apply there as an interruption would (tests use it).
	AfterStep func(step string) error

	now func() time.Time
}

// ControllerDeployment is the Deployment whose presence says nodemesh is
// installed.
const ControllerDeployment = api.ControllerName

// state is what the backup ConfigMap records.
type state struct {
	Phase string `json:"phase"`
	// Labels are the namespace's original values of the labels apply
	// changes; a missing key was absent.
	Labels map[string]string `json:"labels"`
	// SidecarPods is how many pods had a sidecar before the move.
	SidecarPods int             `json:"sidecarPods"`
	Workloads   []workloadState `json:"workloads"`
	StartedAt   string          `json:"startedAt"`
}

type workloadState struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Original is the template's restartedAt annotation before the move
	// (nil: absent).
	Original *string `json:"original"`
	// RestartedAt is the value apply set; empty until it restarts it.
	RestartedAt string `json:"restartedAt,omitempty"`
	Done        bool   `json:"done,omitempty"`
}

const (
	phaseApplying = "applying"
	phaseApplied  = "applied"
	stateKey      = "state.json"
)

var managedLabels = []string{InjectionLabel, RevisionLabel, api.DataplaneModeLabel}

func (m *Migrator) progress(format string, args ...any) {
	if m.Progress != nil {
		fmt.Fprintf(m.Progress, format+"\n", args...)
	}
}

func (m *Migrator) clock() time.Time {
	if m.now != nil {
		return m.now()
	}
	return time.Now()
}

func (m *Migrator) controllerNS() string {
	if m.ControllerNamespace == "" {
		return api.DefaultNamespace
	}
	return m.ControllerNamespace
}

func (m *Migrator) timeout() time.Duration {
	if m.RolloutTimeout == 0 {
		return 5 * time.Minute
	}
	return m.RolloutTimeout
}

func (m *Migrator) step(name string) error {
	if m.AfterStep != nil {
		return m.AfterStep(name)
	}
	return nil
}

// preflight checks what must hold before anything changes.
func (m *Migrator) preflight(ctx context.Context, ns string) (*corev1.Namespace, error) {
	obj, err := m.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("namespace %q: %w", ns, ErrNamespaceNotFound)
	case apierrors.IsForbidden(err):
		return nil, fmt.Errorf("get namespace %s: %w", ns, ErrForbidden)
	case err != nil:
		return nil, fmt.Errorf("get namespace %s: %w", ns, err)
	}
	if err := m.checkPermissions(ctx, ns); err != nil {
		return nil, err
	}
	_, err = m.Client.AppsV1().Deployments(m.controllerNS()).Get(ctx, ControllerDeployment, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: no Deployment %s/%s (install nodemesh first: nodemesh install)", ErrNotInstalled, m.controllerNS(), ControllerDeployment)
	}
	if err != nil {
		return nil, fmt.Errorf("look for nodemesh's controller: %w", err)
	}
	return obj, nil
}

// checkPermissions asks the API server whether the credentials may do
// everything apply and rollback do, before any of it is done.
func (m *Migrator) checkPermissions(ctx context.Context, ns string) error {
	type perm struct{ verb, group, resource, ns string }
	perms := []perm{
		{"patch", "", "namespaces", ""},
		{"create", "", "configmaps", ns}, {"update", "", "configmaps", ns}, {"delete", "", "configmaps", ns},
		{"list", "", "pods", ns},
		{"patch", "apps", "deployments", ns}, {"patch", "apps", "statefulsets", ns}, {"patch", "apps", "daemonsets", ns},
		{"list", "apps", "deployments", ns}, {"list", "policy", "poddisruptionbudgets", ns},
	}
	if _, ok := m.Probe.(*PodProbe); ok {
		perms = append(perms, perm{"create", "", "pods", ns}, perm{"get", "", "pods", ns}, perm{"delete", "", "pods", ns}, perm{"list", "", "services", ns})
	}
	var missing []string
	for _, p := range perms {
		r, err := m.Client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: p.verb, Group: p.group, Resource: p.resource, Namespace: p.ns,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("check permissions: %w", err)
		}
		if !r.Status.Allowed {
			res := p.resource
			if p.group != "" {
				res += "." + p.group
			}
			missing = append(missing, p.verb+" "+res)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: the credentials may not %s in namespace %s", ErrForbidden, strings.Join(missing, ", "), ns)
	}
	return nil
}

func (m *Migrator) loadState(ctx context.Context, ns string) (*state, *corev1.ConfigMap, error) {
	cm, err := m.Client.CoreV1().ConfigMaps(ns).Get(ctx, BackupConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read the migration record: %w", err)
	}
	st := &state{}
	if err := json.Unmarshal([]byte(cm.Data[stateKey]), st); err != nil {
		return nil, nil, fmt.Errorf("configmap %s/%s: %w", ns, BackupConfigMap, err)
	}
	return st, cm, nil
}

func (m *Migrator) saveState(ctx context.Context, ns string, st *state) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	cms := m.Client.CoreV1().ConfigMaps(ns)
	cm, err := cms.Get(ctx, BackupConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: BackupConfigMap, Namespace: ns,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "nodemesh"}},
			Data: map[string]string{stateKey: string(data)},
		}, metav1.CreateOptions{})
		return wrapf(err, "record the migration state")
	}
	if err != nil {
		return fmt.Errorf("record the migration state: %w", err)
	}
	cm.Data = map[string]string{stateKey: string(data)}
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	return wrapf(err, "record the migration state")
}

func wrapf(err error, what string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// listWorkloads returns the namespace's workloads in restart order.
func (m *Migrator) listWorkloads(ctx context.Context, ns string) ([]*Workload, error) {
	var out []*Workload
	deps, err := m.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list deployments: %w", err)
	}
	for _, d := range deps.Items {
		out = append(out, &Workload{Ref: ir.ResourceRef{Kind: "Deployment", Namespace: ns, Name: d.Name}, Selector: d.Spec.Selector, Template: d.Spec.Template})
	}
	sts, err := m.Client.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list statefulsets: %w", err)
	}
	for _, s := range sts.Items {
		out = append(out, &Workload{Ref: ir.ResourceRef{Kind: "StatefulSet", Namespace: ns, Name: s.Name}, Selector: s.Spec.Selector, Template: s.Spec.Template})
	}
	dss, err := m.Client.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list daemonsets: %w", err)
	}
	for _, s := range dss.Items {
		out = append(out, &Workload{Ref: ir.ResourceRef{Kind: "DaemonSet", Namespace: ns, Name: s.Name}, Selector: s.Spec.Selector, Template: s.Spec.Template})
	}
	return restartOrder(out), nil
}

func (m *Migrator) sidecarPods(ctx context.Context, ns string) (withSidecar, total int, err error) {
	pods, err := m.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, 0, fmt.Errorf("list pods: %w", err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		total++
		if hasSidecar(&p) {
			withSidecar++
		}
	}
	return withSidecar, total, nil
}

func hasSidecar(p *corev1.Pod) bool {
	for _, c := range append(slices.Clone(p.Spec.Containers), p.Spec.InitContainers...) {
		if c.Name == SidecarContainer {
			return true
		}
	}
	return false
}

func isMigrated(obj *corev1.Namespace) bool {
	_, inj := obj.Labels[InjectionLabel]
	_, rev := obj.Labels[RevisionLabel]
	return obj.Labels[api.DataplaneModeLabel] == api.DataplaneModeNodemesh && !inj && !rev
}

// Apply moves a namespace to nodemesh (see the package documentation and
// `nodemesh migrate apply --help`). It resumes a migration an earlier run
// left unfinished. On a failed step it rolls back and returns an error that
// wraps ErrRolledBack and says what failed; on an interruption (ctx done) it
// stops, and the next run resumes.
func (m *Migrator) Apply(ctx context.Context, ns string) error {
	obj, err := m.preflight(ctx, ns)
	if err != nil {
		return err
	}
	st, _, err := m.loadState(ctx, ns)
	if err != nil {
		return err
	}
	switch {
	case st != nil && st.Phase == phaseApplied, st == nil && isMigrated(obj):
		return fmt.Errorf("namespace %q: %w (%s=%s; roll back with: nodemesh migrate rollback -n %s)", ns, ErrAlreadyMigrated, api.DataplaneModeLabel, api.DataplaneModeNodemesh, ns)
	}
	resume := st != nil
	if resume {
		m.progress("resuming the migration of %s started at %s", ns, st.StartedAt)
	} else if err := m.gate(ctx, ns); err != nil {
		return err
	}
	if m.DryRun {
		m.progress("dry run: preconditions hold; nothing changed (see: nodemesh migrate plan -n %s)", ns)
		return nil
	}
	if !resume {
		if st, err = m.record(ctx, ns, obj); err != nil {
			return err
		}
		m.progress("✓ recorded the pre-migration state in ConfigMap %s/%s", ns, BackupConfigMap)
		if err := m.step("record"); err != nil {
			return err
		}
	}
	if err := m.forward(ctx, ns, st); err != nil {
		if ctx.Err() != nil || errors.Is(err, errInterrupted) {
			m.progress("interrupted: run apply again to resume, or rollback to undo")
			return err
		}
		m.progress("✗ %v", err)
		m.progress("rolling back %s", ns)
		// The caller's context may be near its end; rolling back must finish.
		rbErr := m.rollback(context.WithoutCancel(ctx), ns, st)
		if rbErr != nil {
			return fmt.Errorf("migration of %s failed: %v; and the rollback failed too: %w", ns, err, rbErr)
		}
		return fmt.Errorf("%w: %s: %v", ErrRolledBack, ns, err)
	}
	return nil
}

// errInterrupted stops apply at a step without rolling back (AfterStep).
var errInterrupted = errors.New("interrupted")

// ErrInterrupted is what AfterStep returns to simulate an interruption.
var ErrInterrupted = errInterrupted

// gate refuses a namespace that analysis finds blocked (unless Force).
func (m *Migrator) gate(ctx context.Context, ns string) error {
	if m.Dynamic == nil {
		return nil
	}
	inv, err := LoadCluster(ctx, m.Dynamic)
	if err != nil {
		return err
	}
	opts := m.Analysis
	opts.Namespaces = []string{ns}
	r := Analyze(inv, opts)
	nr := r.Namespace(ns)
	var blocking []string
	for _, f := range nr.Findings {
		if f.Level == Unsupported {
			blocking = append(blocking, fmt.Sprintf("%s %s: %s", f.Resource, f.Field, f.Message))
		}
	}
	m.progress("✓ analysis: %s", nr.Verdict)
	if len(blocking) > 0 && !m.Force {
		return fmt.Errorf("%w: %s (see: nodemesh migrate analyze -n %s; --force moves it anyway):\n  %s", ErrBlocked, ns, ns, strings.Join(blocking, "\n  "))
	}
	return nil
}

func (m *Migrator) record(ctx context.Context, ns string, obj *corev1.Namespace) (*state, error) {
	ws, err := m.listWorkloads(ctx, ns)
	if err != nil {
		return nil, err
	}
	withSidecar, _, err := m.sidecarPods(ctx, ns)
	if err != nil {
		return nil, err
	}
	st := &state{Phase: phaseApplying, Labels: map[string]string{}, SidecarPods: withSidecar, StartedAt: m.clock().UTC().Format(time.RFC3339)}
	for _, l := range managedLabels {
		if v, ok := obj.Labels[l]; ok {
			st.Labels[l] = v
		}
	}
	for _, w := range ws {
		ws := workloadState{Kind: w.Ref.Kind, Name: w.Ref.Name}
		if v, ok := w.Template.Annotations[restartAnnotation]; ok {
			ws.Original = &v
		}
		st.Workloads = append(st.Workloads, ws)
	}
	if err := m.saveState(ctx, ns, st); err != nil {
		return nil, err
	}
	labels, _ := json.Marshal(st.Labels)
	return st, m.patchNamespace(ctx, ns, map[string]any{
		"metadata": map[string]any{"annotations": map[string]any{PhaseAnnotation: phaseApplying, LabelsAnnotation: string(labels)}},
	})
}

func (m *Migrator) patchNamespace(ctx context.Context, ns string, patch map[string]any) error {
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = m.Client.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, data, metav1.PatchOptions{})
	return wrapf(err, "patch namespace "+ns)
}

// forward runs the steps after record; each is skipped when already done.
func (m *Migrator) forward(ctx context.Context, ns string, st *state) error {
	labels := map[string]any{api.DataplaneModeLabel: api.DataplaneModeNodemesh, InjectionLabel: nil, RevisionLabel: nil}
	if err := m.patchNamespace(ctx, ns, map[string]any{"metadata": map[string]any{"labels": labels}}); err != nil {
		return err
	}
	m.progress("✓ labelled %s %s=%s, removed %s and %s", ns, api.DataplaneModeLabel, api.DataplaneModeNodemesh, InjectionLabel, RevisionLabel)
	if err := m.step("relabel"); err != nil {
		return err
	}
	for i := range st.Workloads {
		w := &st.Workloads[i]
		if w.Done {
			continue
		}
		ref := ir.ResourceRef{Kind: w.Kind, Namespace: ns, Name: w.Name}
		if w.RestartedAt == "" {
			if err := m.waitDisruption(ctx, ref); err != nil {
				return err
			}
			w.RestartedAt = m.clock().UTC().Format(time.RFC3339Nano)
			// Recorded before the patch: a resumed run then knows the value.
			if err := m.saveState(ctx, ns, st); err != nil {
				return err
			}
			if err := m.setRestartedAt(ctx, ref, &w.RestartedAt); err != nil {
				return err
			}
			m.progress("  restarting %s/%s", w.Kind, w.Name)
		} else if err := m.setRestartedAt(ctx, ref, &w.RestartedAt); err != nil { // idempotent
			return err
		}
		if err := m.waitReady(ctx, ref); err != nil {
			return err
		}
		w.Done = true
		if err := m.saveState(ctx, ns, st); err != nil {
			return err
		}
		m.progress("✓ restarted %s/%s (%d/%d)", w.Kind, w.Name, i+1, len(st.Workloads))
		if err := m.step("restart " + w.Kind + "/" + w.Name); err != nil {
			return err
		}
	}
	if err := m.verify(ctx, ns, st, false); err != nil {
		return err
	}
	st.Phase = phaseApplied
	if err := m.saveState(ctx, ns, st); err != nil {
		return err
	}
	if err := m.patchNamespace(ctx, ns, map[string]any{"metadata": map[string]any{"annotations": map[string]any{PhaseAnnotation: phaseApplied}}}); err != nil {
		return err
	}
	m.progress("✓ %s is on nodemesh", ns)
	return nil
}

// setRestartedAt sets (or, with nil, removes) a workload's pod template
// restartedAt annotation, as `kubectl rollout restart` sets it.
func (m *Migrator) setRestartedAt(ctx context.Context, ref ir.ResourceRef, v *string) error {
	var val any
	if v != nil {
		val = *v
	}
	patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
		"annotations": map[string]any{restartAnnotation: val}}}}})
	var err error
	apps := m.Client.AppsV1()
	switch ref.Kind {
	case "Deployment":
		_, err = apps.Deployments(ref.Namespace).Patch(ctx, ref.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	case "StatefulSet":
		_, err = apps.StatefulSets(ref.Namespace).Patch(ctx, ref.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	case "DaemonSet":
		_, err = apps.DaemonSets(ref.Namespace).Patch(ctx, ref.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	default:
		err = fmt.Errorf("unknown workload kind %s", ref.Kind)
	}
	if apierrors.IsNotFound(err) {
		return nil // deleted since: nothing to restart
	}
	return wrapf(err, "restart "+ref.String())
}

// waitDisruption waits until every PodDisruptionBudget selecting the
// workload's pods allows a disruption, when its rollout takes a pod down
// before bringing a new one up (a Deployment that surges does not).
func (m *Migrator) waitDisruption(ctx context.Context, ref ir.ResourceRef) error {
	sel, takesDown, err := m.disruptive(ctx, ref)
	if err != nil || !takesDown {
		return err
	}
	deadline := m.clock().Add(m.timeout())
	for {
		pdbs, err := m.Client.PolicyV1().PodDisruptionBudgets(ref.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("list PodDisruptionBudgets: %w", err)
		}
		var blocking []string
		for _, p := range pdbs.Items {
			if p.Spec.Selector != nil && hasLabels(p.Spec.Selector.MatchLabels, sel) && p.Status.DisruptionsAllowed < 1 {
				blocking = append(blocking, p.Name)
			}
		}
		if len(blocking) == 0 {
			return nil
		}
		if m.clock().After(deadline) {
			return fmt.Errorf("restart %s: PodDisruptionBudget %s allows no disruption", ref, strings.Join(blocking, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (m *Migrator) disruptive(ctx context.Context, ref ir.ResourceRef) (map[string]string, bool, error) {
	apps := m.Client.AppsV1()
	switch ref.Kind {
	case "Deployment":
		d, err := apps.Deployments(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, false, wrapf(err, "get "+ref.String())
		}
		return d.Spec.Template.Labels, deploymentTakesDown(d), nil
	case "StatefulSet":
		s, err := apps.StatefulSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, false, wrapf(err, "get "+ref.String())
		}
		return s.Spec.Template.Labels, true, nil
	case "DaemonSet":
		s, err := apps.DaemonSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, false, wrapf(err, "get "+ref.String())
		}
		return s.Spec.Template.Labels, true, nil
	}
	return nil, false, nil
}

func deploymentTakesDown(d *appsv1.Deployment) bool {
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return true
	}
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	ru := d.Spec.Strategy.RollingUpdate
	if ru == nil || ru.MaxUnavailable == nil {
		return replicas*25/100 > 0 // the default 25 %, rounded down
	}
	if ru.MaxUnavailable.StrVal != "" {
		var pct int32
		fmt.Sscanf(ru.MaxUnavailable.StrVal, "%d%%", &pct)
		return replicas*pct/100 > 0
	}
	return ru.MaxUnavailable.IntVal > 0
}

func (m *Migrator) waitReady(ctx context.Context, ref ir.ResourceRef) error {
	r := m.Readiness
	if r == nil {
		r = RolloutStatus{}
	}
	deadline := m.clock().Add(m.timeout())
	for {
		done, why, err := r.Ready(ctx, m.Client, ref)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if m.clock().After(deadline) {
			return fmt.Errorf("rollout of %s did not become ready within %s: %s", ref, m.timeout(), why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// verify checks the namespace after the restarts: every workload ready, the
// sidecars gone (or, after a rollback, back), routes served, a probe.
func (m *Migrator) verify(ctx context.Context, ns string, st *state, rolledBack bool) error {
	for _, w := range st.Workloads {
		if err := m.waitReady(ctx, ir.ResourceRef{Kind: w.Kind, Namespace: ns, Name: w.Name}); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
	}
	withSidecar, total, err := m.sidecarPods(ctx, ns)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	switch {
	case !rolledBack && withSidecar > 0:
		return fmt.Errorf("verify: %d of %d pods of %s still have an %s container (a %s=true pod label, or a template that contains it)", withSidecar, total, ns, SidecarContainer, PodInjectLabel)
	case rolledBack && st.SidecarPods > 0 && withSidecar < total:
		return fmt.Errorf("verify: %d of %d pods of %s have no %s container after the rollback: is Istio's injector running?", total-withSidecar, total, ns, SidecarContainer)
	}
	if rolledBack {
		m.progress("✓ verified: workloads ready, %d/%d pods with sidecars", withSidecar, total)
		return nil
	}
	m.progress("✓ verified: workloads ready, no %s container in %d pods", SidecarContainer, total)
	if m.Routes != nil {
		svcs, err := m.Client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fmt.Errorf("verify: list services: %w", err)
		}
		// Routes (virtual hosts) exist for HTTP ports only; a TCP-only
		// Service has a filter chain and no route.
		hosts := routeHosts(svcs.Items, ns, m.clusterDomain())
		switch missing, err := m.Routes.Serves(ctx, hosts); {
		case len(hosts) == 0:
			m.progress("- skipped the route check: no Service of %s has an HTTP port", ns)
		case errors.Is(err, ErrUnreachable):
			m.progress("- skipped the route check: %v", err)
		case err != nil:
			return fmt.Errorf("verify routes: %w", err)
		case len(missing) > 0:
			return fmt.Errorf("verify routes: the controller serves no route for %s", strings.Join(missing, ", "))
		default:
			m.progress("✓ the controller serves routes for %d Services", len(hosts))
		}
	}
	if m.Probe != nil {
		summary, err := m.Probe.Probe(ctx, ns)
		if err != nil {
			return fmt.Errorf("verify connectivity: %w", err)
		}
		m.progress("✓ connectivity probe: %s", summary)
	}
	return nil
}

func (m *Migrator) clusterDomain() string {
	if d := m.Analysis.Istio.ClusterDomain; d != "" {
		return d
	}
	return ir.DefaultClusterDomain
}

// routeHosts are the names of the Services with an HTTP port, whose routes
// the controller must serve.
func routeHosts(svcs []corev1.Service, ns, domain string) []string {
	var hosts []string
	for _, s := range svcs {
		if len(ProbeTargets([]corev1.Service{s})) > 0 {
			hosts = append(hosts, s.Name+"."+ns+".svc."+domain)
		}
	}
	return hosts
}

// Rollback restores a namespace from its migration record.
func (m *Migrator) Rollback(ctx context.Context, ns string) error {
	if _, err := m.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return fmt.Errorf("namespace %q: %w", ns, ErrNamespaceNotFound)
	} else if err != nil {
		return fmt.Errorf("get namespace %s: %w", ns, err)
	}
	if err := m.checkPermissions(ctx, ns); err != nil {
		return err
	}
	st, _, err := m.loadState(ctx, ns)
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("%w: namespace %s has no ConfigMap %s (apply records it first)", ErrNoBackup, ns, BackupConfigMap)
	}
	return m.rollback(ctx, ns, st)
}

func (m *Migrator) rollback(ctx context.Context, ns string, st *state) error {
	labels := map[string]any{}
	for _, l := range managedLabels {
		if v, ok := st.Labels[l]; ok {
			labels[l] = v
		} else {
			labels[l] = nil
		}
	}
	if err := m.patchNamespace(ctx, ns, map[string]any{"metadata": map[string]any{"labels": labels}}); err != nil {
		return err
	}
	m.progress("✓ restored the labels of %s: %v", ns, labelList(st.Labels))
	for i := len(st.Workloads) - 1; i >= 0; i-- {
		w := st.Workloads[i]
		if w.RestartedAt == "" {
			continue
		}
		ref := ir.ResourceRef{Kind: w.Kind, Namespace: ns, Name: w.Name}
		if err := m.setRestartedAt(ctx, ref, w.Original); err != nil {
			return err
		}
		if err := m.waitReady(ctx, ref); err != nil {
			return err
		}
		m.progress("✓ restored %s/%s", w.Kind, w.Name)
	}
	if err := m.verify(ctx, ns, st, true); err != nil {
		return err
	}
	if err := m.Client.CoreV1().ConfigMaps(ns).Delete(ctx, BackupConfigMap, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove the migration record: %w", err)
	}
	if err := m.patchNamespace(ctx, ns, map[string]any{"metadata": map[string]any{"annotations": map[string]any{PhaseAnnotation: nil, LabelsAnnotation: nil}}}); err != nil {
		return err
	}
	m.progress("✓ %s is back on sidecars", ns)
	return nil
}

func labelList(l map[string]string) string {
	if len(l) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}
