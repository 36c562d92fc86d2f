package migration

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// workloadFindings checks what restarting each workload without a sidecar
// needs: a Service in front of it, and no per-pod injection override.
func (a *analysis) workloadFindings() {
	for _, w := range a.inv.Workloads {
		ns := w.Ref.Namespace
		if v := w.Template.Labels[PodInjectLabel]; v == "true" {
			a.addAt(ns, w.Ref, "spec.template.metadata.labels", Unsupported, "PodInjection",
				PodInjectLabel+"=true on the pod template injects the sidecar whatever the namespace says: the pods keep their sidecar after the restart, and apply's verification fails",
				"remove the label from the pod template (or set it to \"false\") before moving")
		}
		if w.HasSidecar() {
			a.addAt(ns, w.Ref, "spec.template.spec.containers", Unsupported, "SidecarInTemplate",
				"the pod template itself contains an istio-proxy container (not injected by the webhook): restarting does not remove it",
				"remove the istio-proxy container from the manifest and let the namespace label decide")
		}
		if !a.hasService(ns, w.Template.Labels) {
			a.addAt(ns, w.Ref, "spec.template.metadata.labels", Changed, "NoService",
				"no Service selects its pods: it moves as a client only; callers that reach it by pod IP bypass the node Envoy, and the route checks of apply cannot cover it",
				"add a Service if other workloads call it, or accept that only its outbound traffic is routed by nodemesh")
		}
	}
}

func (a *analysis) hasService(ns string, labels map[string]string) bool {
	for _, s := range a.inv.servicesOf(ns) {
		if len(s.Spec.Selector) > 0 && hasLabels(s.Spec.Selector, labels) {
			return true
		}
	}
	return false
}

// envCalls lists the namespaces a pod template names in environment values
// and arguments (name.namespace or name.namespace.svc...).
func (a *analysis) envCalls(ns string, spec *corev1.PodSpec) map[string]bool {
	var texts []string
	for _, c := range spec.Containers {
		texts = append(texts, c.Args...)
		texts = append(texts, c.Command...)
		for _, e := range c.Env {
			texts = append(texts, e.Value)
		}
	}
	out := map[string]bool{}
	for _, s := range a.inv.Bag.Services {
		if s.Namespace == ns {
			continue
		}
		needle := fmt.Sprintf("%s.%s", s.Name, s.Namespace)
		for _, t := range texts {
			if i := strings.Index(t, needle); i >= 0 {
				end := i + len(needle)
				if end == len(t) || !isDNSChar(t[end]) || strings.HasPrefix(t[end:], ".svc") {
					out[s.Namespace] = true
				}
			}
		}
	}
	return out
}

func isDNSChar(c byte) bool {
	return c == '-' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}
