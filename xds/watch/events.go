package watch

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	istioscheme "istio.io/client-go/pkg/clientset/versioned/scheme"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/nodemesh/nodemesh/api"
	"github.com/nodemesh/nodemesh/translate"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/xds"
)

// Event reasons.
const (
	// ReasonRejected: a node rejected configuration that came from the
	// resource.
	ReasonRejected = "XDSRejected"
)

// EventComponent is the source of the controller's Events.
const EventComponent = api.ControllerName

// reporter turns translation diagnostics and NACKs into Kubernetes Events on
// the resources they are about. A diagnostic is reported when it appears; it
// is reported again only after it has gone away and come back (Events are
// not a log of every recomputation).
type reporter struct {
	log         *slog.Logger
	recorder    record.EventRecorder
	broadcaster record.EventBroadcaster
	src         *sources

	mu       sync.Mutex
	reported map[string]bool
	// authzReported are the policy status Events of the last report.
	authzReported map[string]bool
}

func newReporter(kube kubernetes.Interface, src *sources, log *slog.Logger) *reporter {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = istioscheme.AddToScheme(scheme)
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	return &reporter{
		log: log, broadcaster: b, src: src, reported: map[string]bool{}, authzReported: map[string]bool{},
		recorder: b.NewRecorder(scheme, corev1.EventSource{Component: EventComponent}),
	}
}

func (r *reporter) stop() { r.broadcaster.Shutdown() }

// diagnostics reports the errors and warnings of a generation that were not
// in the previous one. Informational diagnostics stay in logs and the
// debug endpoint.
func (r *reporter) diagnostics(ds ir.Diagnostics) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := map[string]bool{}
	for _, d := range ds {
		if d.Severity == ir.SeverityInfo {
			continue
		}
		key := d.Resource.String() + "\x00" + string(d.Code) + "\x00" + d.Field + "\x00" + d.Message
		now[key] = true
		if r.reported[key] {
			continue
		}
		obj, ok := r.src.object(d.Resource.Kind, d.Resource.Namespace, d.Resource.Name)
		if !ok {
			r.log.Info("translation diagnostic", "diagnostic", d.String())
			continue
		}
		msg := d.Message
		if d.Field != "" {
			msg = d.Field + ": " + msg
		}
		r.recorder.Event(obj.(runtime.Object), corev1.EventTypeWarning, string(d.Code), msg)
		r.log.Warn("translation diagnostic", "diagnostic", d.String())
	}
	r.reported = now
}

// nack reports a rejection on the resources the rejected configuration came
// from (VirtualServices behind route configurations, DestinationRules and
// Services behind clusters and endpoints); when none can be found it is only
// logged.
func (r *reporter) nack(n xds.NACK) {
	// Nodes usually name the resource they choke on (Envoy: "Error adding
	// or updating listener(s) virtualOutbound: …"; gRPC: "resource \"9080\"
	// …"); when they do, only that resource's origins are blamed.
	blamed := n.Resources
	var named []types.Resource
	for _, res := range n.Resources {
		if name := cachev3.GetResourceName(res); name != "" && strings.Contains(n.Detail, name) {
			named = append(named, res)
		}
	}
	if len(named) > 0 {
		blamed = named
	}
	seen := map[ir.ResourceRef]bool{}
	var refs []ir.ResourceRef
	for _, res := range blamed {
		for _, ref := range translate.Origins(res) {
			if !seen[ref] {
				seen[ref] = true
				refs = append(refs, ref)
			}
		}
	}
	// The detail is the node's text, already bounded and escaped by the
	// cache (xds.NACK).
	short := n.TypeURL[strings.LastIndex(n.TypeURL, ".")+1:]
	msg := fmt.Sprintf("node %s rejected %s version %s: %s", n.Node, short, n.Version, n.Detail)
	if n.Suppressed > 0 {
		msg += fmt.Sprintf(" (and %d more rejections not reported)", n.Suppressed)
	}
	found := 0
	for _, ref := range refs {
		obj, ok := r.src.object(ref.Kind, ref.Namespace, ref.Name)
		if !ok {
			continue
		}
		found++
		r.recorder.Event(obj.(runtime.Object), corev1.EventTypeWarning, ReasonRejected, msg)
	}
	if found == 0 {
		r.log.Warn("rejected configuration traced to no resource", "node", n.Node, "type", short, "version", n.Version)
	}
}

// authz reports the AuthorizationPolicy status Events that were not in the
// previous report: a policy whose placement, degradations and diagnostics
// are unchanged is not reported again, one whose degradation went away and
// came back is. An Event about a policy the informer no longer has is
// dropped (it was deleted meanwhile).
func (r *reporter) authz(evs []authzEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := make(map[string]bool, len(evs))
	for _, e := range evs {
		key := e.ref.String() + "\x00" + e.typ + "\x00" + e.reason + "\x00" + e.message
		now[key] = true
		if r.authzReported[key] {
			continue
		}
		obj, ok := r.src.object(e.ref.Kind, e.ref.Namespace, e.ref.Name)
		if !ok {
			continue
		}
		r.recorder.Event(obj.(runtime.Object), e.typ, e.reason, e.message)
		if e.typ == corev1.EventTypeWarning {
			r.log.Warn("authorization policy", "policy", e.ref.String(), "reason", e.reason, "message", e.message)
		}
	}
	r.authzReported = now
}
