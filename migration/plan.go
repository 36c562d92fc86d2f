package migration

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate/ir"
)

// Names of what apply records.
const (
	// BackupConfigMap holds the pre-migration state in the namespace.
	BackupConfigMap = "nodemesh-migration"
	// PhaseAnnotation on the namespace says where a migration stands.
	PhaseAnnotation = "nodemesh.io/migration"
	// LabelsAnnotation on the namespace keeps its pre-migration labels.
	LabelsAnnotation = "nodemesh.io/pre-migration-labels"
)

// Step is one step of a plan, with how to check it and how to undo it.
type Step struct {
	Name      string   `json:"name"`
	Changes   []string `json:"changes"`
	PreCheck  string   `json:"preCheck"`
	PostCheck string   `json:"postCheck"`
	Rollback  string   `json:"rollback"`
}

// Plan is what apply will do to a namespace, in order.
type Plan struct {
	Namespace string  `json:"namespace"`
	Verdict   Verdict `json:"verdict"`
	// Blocking are the unsupported findings; apply refuses while there are any.
	Blocking []Finding `json:"blocking,omitempty"`
	Steps    []Step    `json:"steps"`
}

// restartOrder is the order apply restarts workloads in: Deployments, then
// StatefulSets, then DaemonSets (node-wide, slowest), by name.
func restartOrder(ws []*Workload) []*Workload {
	rank := map[string]int{"Deployment": 0, "StatefulSet": 1, "DaemonSet": 2}
	out := slices.Clone(ws)
	slices.SortFunc(out, func(a, b *Workload) int {
		return cmp.Or(cmp.Compare(rank[a.Ref.Kind], rank[b.Ref.Kind]), cmp.Compare(a.Ref.Name, b.Ref.Name))
	})
	return out
}

// MakePlan lays out the steps of moving ns, from its analysis.
func MakePlan(inv *Inventory, r *Report, ns string) (*Plan, error) {
	nr := r.Namespace(ns)
	if nr == nil {
		return nil, fmt.Errorf("%w: %s is not in the input", ErrNamespaceNotFound, ns)
	}
	p := &Plan{Namespace: ns, Verdict: nr.Verdict}
	for _, f := range nr.Findings {
		if f.Level == Unsupported {
			p.Blocking = append(p.Blocking, f)
		}
	}
	labels := map[string]string{}
	if obj := inv.namespace(ns); obj != nil {
		labels = obj.Labels
	}
	var remove []string
	for _, l := range []string{InjectionLabel, RevisionLabel} {
		if v, ok := labels[l]; ok {
			remove = append(remove, fmt.Sprintf("remove label %s=%s", l, v))
		}
	}
	p.Steps = append(p.Steps, Step{
		Name: "preflight",
		Changes: []string{"none: checks that the namespace exists, is not migrated yet, that nodemesh is installed, " +
			"that the credentials may patch the namespace and its workloads and write a ConfigMap, and that analysis finds nothing blocking"},
		PreCheck:  "kubectl get ns " + ns,
		PostCheck: "every check passed",
		Rollback:  "nothing to undo",
	}, Step{
		Name: "record",
		Changes: []string{
			fmt.Sprintf("create ConfigMap %s/%s with the namespace's labels and each workload's %s annotation", ns, BackupConfigMap, restartAnnotation),
			fmt.Sprintf("annotate namespace %s: %s=applying, %s=<labels as JSON>", ns, PhaseAnnotation, LabelsAnnotation),
		},
		PreCheck:  "no ConfigMap " + BackupConfigMap + " in a finished state",
		PostCheck: "kubectl -n " + ns + " get configmap " + BackupConfigMap,
		Rollback:  fmt.Sprintf("kubectl -n %s delete configmap %s; kubectl annotate ns %s %s- %s-", ns, BackupConfigMap, ns, PhaseAnnotation, LabelsAnnotation),
	})
	relabel := append([]string{fmt.Sprintf("set label %s=%s", api.DataplaneModeLabel, api.DataplaneModeNodemesh)}, remove...)
	p.Steps = append(p.Steps, Step{
		Name:      "relabel",
		Changes:   relabel,
		PreCheck:  "the backup ConfigMap exists",
		PostCheck: fmt.Sprintf("kubectl get ns %s -L %s,%s,%s", ns, api.DataplaneModeLabel, InjectionLabel, RevisionLabel),
		Rollback:  "restore the recorded labels: " + restoreLabels(ns, labels),
	})
	for _, w := range restartOrder(inv.workloadsOf(ns)) {
		kind := strings.ToLower(w.Ref.Kind)
		p.Steps = append(p.Steps, Step{
			Name: "restart " + w.Ref.Kind + "/" + w.Ref.Name,
			Changes: []string{fmt.Sprintf("set pod template annotation %s=<now> (kubectl -n %s rollout restart %s/%s), after the PodDisruptionBudgets selecting its pods allow a disruption when the rollout takes pods down first",
				restartAnnotation, ns, kind, w.Ref.Name)},
			PreCheck:  fmt.Sprintf("kubectl -n %s rollout status %s/%s (ready before the restart)", ns, kind, w.Ref.Name),
			PostCheck: fmt.Sprintf("kubectl -n %s rollout status %s/%s; its new pods have no %s container", ns, kind, w.Ref.Name, SidecarContainer),
			Rollback:  fmt.Sprintf("restore the recorded %s annotation (the previous pod template, so the previous ReplicaSet comes back with its sidecars) and wait for the rollout", restartAnnotation),
		})
	}
	p.Steps = append(p.Steps, Step{
		Name: "verify",
		Changes: []string{"none: every workload ready; no pod of the namespace has an " + SidecarContainer + " container; " +
			"the controller serves routes for the namespace's Services (its debug endpoint, when reachable); a short connectivity probe"},
		PreCheck:  "all restarts done",
		PostCheck: fmt.Sprintf("namespace annotation %s=applied", PhaseAnnotation),
		Rollback:  "nodemesh migrate rollback -n " + ns + " (apply does it by itself when a check fails)",
	})
	return p, nil
}

func restoreLabels(ns string, labels map[string]string) string {
	parts := []string{"kubectl label ns " + ns, api.DataplaneModeLabel + "-"}
	if v, ok := labels[api.DataplaneModeLabel]; ok {
		parts[1] = api.DataplaneModeLabel + "=" + v
	}
	for _, l := range []string{InjectionLabel, RevisionLabel} {
		if v, ok := labels[l]; ok {
			parts = append(parts, l+"="+v)
		}
	}
	return strings.Join(parts, " ") + " --overwrite"
}

// Write renders the plan: table, json or yaml.
func (p *Plan) Write(w io.Writer, format string) error {
	if format != "table" {
		return writeData(w, p, format)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "Plan for namespace %s (analysis: %s)\n", p.Namespace, p.Verdict)
	if len(p.Blocking) > 0 {
		fmt.Fprintf(&b, "\nBLOCKED: apply refuses until these are resolved (or --force):\n")
		for _, f := range p.Blocking {
			fmt.Fprintf(&b, "  - %s %s: %s\n", ir.ResourceRef(f.Resource), f.Field, f.Message)
		}
	}
	for i, s := range p.Steps {
		fmt.Fprintf(&b, "\n%d. %s\n", i+1, s.Name)
		for _, c := range s.Changes {
			fmt.Fprintf(&b, "   change:     %s\n", c)
		}
		fmt.Fprintf(&b, "   pre-check:  %s\n   post-check: %s\n   rollback:   %s\n", s.PreCheck, s.PostCheck, s.Rollback)
	}
	_, err := w.Write(b.Bytes())
	return err
}
