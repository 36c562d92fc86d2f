//go:build linux

package agent

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/nodemesh/nodemesh/agent/policy"
	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/api/v1alpha1"
)

func newRecorder(kube kubernetes.Interface, node string) record.EventRecorder {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	return b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: api.AgentName, Host: node})
}

// EventReasonNotEnforceable is the Event reason for policy the agent cannot
// express (and enforces as deny).
const EventReasonNotEnforceable = "PolicyNotFullyEnforced"

// report logs new diagnostics and turns them into Events on their
// NetworkPolicy; a diagnostic is reported once while it persists.
func (a *Agent) report(diags []policy.Diagnostic) {
	now := map[string]bool{}
	for _, d := range diags {
		s := d.String()
		now[s] = true
		if a.lastDiags[s] {
			continue
		}
		a.log.Warn("policy not fully enforceable; enforced as deny", "kind", d.Kind, "namespace", d.Namespace, "policy", d.Name,
			"field", d.Field, "message", d.Message)
		if d.Name == "*" {
			continue
		}
		ref := &corev1.ObjectReference{APIVersion: "networking.k8s.io/v1", Kind: policy.KindNetworkPolicy, Namespace: d.Namespace, Name: d.Name}
		if d.Kind == policy.KindTrafficPolicy {
			ref.APIVersion, ref.Kind = v1alpha1.GroupVersion.String(), v1alpha1.TrafficPolicyKind
			if o, ok, _ := a.informers.traffic.GetStore().GetByKey(d.Namespace + "/" + d.Name); ok {
				if u, ok := o.(*unstructured.Unstructured); ok {
					ref.UID = u.GetUID()
				}
			}
		} else if np, err := a.informers.policies.NetworkPolicies(d.Namespace).Get(d.Name); err == nil {
			ref.UID = np.UID
		}
		a.recorder.Event(ref, corev1.EventTypeWarning, EventReasonNotEnforceable,
			fmt.Sprintf("node %s: %s: %s (enforced as deny)", a.cfg.NodeName, d.Field, d.Message))
	}
	a.lastDiags = now
	a.metrics.diagnostics.Set(float64(len(now)))
}
