package input

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/nodemesh/nodemesh/api"
)

// SidecarContainer is the name of Istio's proxy container (or native
// sidecar init container) in an injected Pod.
const SidecarContainer = api.IstioProxyContainer

// Pod is what translation reads of a Kubernetes Pod. Pods are most of a
// cluster's objects, and a corev1.Pod takes over a kilobyte before it holds
// anything: the controller's informer cache and the translator keep this
// instead (about an eighth of the size). It is a runtime.Object whose
// metadata informers reach through GetObjectMeta, so informers can store it
// (see PodFrom).
type Pod struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	UID               types.UID         `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	DeletionTimestamp *metav1.Time      `json:"deletionTimestamp,omitempty"`

	NodeName    string          `json:"nodeName,omitempty"`
	HostNetwork bool            `json:"hostNetwork,omitempty"`
	Phase       corev1.PodPhase `json:"phase,omitempty"`
	// Ready is the status of the Ready condition, "" when the Pod has none
	// (a Pod written in a manifest).
	Ready corev1.ConditionStatus `json:"ready,omitempty"`
	// IPs are status.podIPs, or status.podIP alone.
	IPs []string `json:"ips,omitempty"`
	// Ports are the named ports of the Pod's containers, in order (what a
	// Service's named targetPort resolves against).
	Ports []NamedPort `json:"ports,omitempty"`
	// Sidecar says the Pod has an Istio proxy container or native sidecar.
	Sidecar bool `json:"sidecar,omitempty"`
	// ServiceAccount is spec.serviceAccountName ("" reads as "default"):
	// the pod's Istio identity (TD/ns/NS/sa/SA) — its client certificate's
	// with Istio mTLS, and what the node Envoy's inbound RBAC matches by
	// the pod's addresses.
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// NamedPort is a named container port.
type NamedPort struct {
	Name string `json:"name"`
	Port int32  `json:"port"`
}

// PodFrom keeps what translation reads of a Pod.
func PodFrom(p *corev1.Pod) *Pod {
	out := &Pod{
		Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
		Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp,
		NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork, Phase: p.Status.Phase,
		ServiceAccount: p.Spec.ServiceAccountName,
	}
	if len(p.Status.PodIPs) > 0 {
		out.IPs = make([]string, len(p.Status.PodIPs))
		for i, ip := range p.Status.PodIPs {
			out.IPs[i] = ip.IP
		}
	} else if p.Status.PodIP != "" {
		out.IPs = []string{p.Status.PodIP}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Ready = c.Status
			break
		}
	}
	for _, c := range p.Spec.Containers {
		out.Sidecar = out.Sidecar || c.Name == SidecarContainer
		for _, cp := range c.Ports {
			if cp.Name != "" {
				out.Ports = append(out.Ports, NamedPort{Name: cp.Name, Port: cp.ContainerPort})
			}
		}
	}
	for _, c := range p.Spec.InitContainers { // native sidecars
		out.Sidecar = out.Sidecar || c.Name == SidecarContainer
	}
	return out
}

// NamedPort returns the container port of a name.
func (p *Pod) NamedPort(name string) (int32, bool) {
	for _, np := range p.Ports {
		if np.Name == name {
			return np.Port, true
		}
	}
	return 0, false
}

// Equal says whether two Pods read the same, resource version aside.
func (p *Pod) Equal(o *Pod) bool {
	a, b := *p, *o
	a.ResourceVersion, b.ResourceVersion = "", ""
	return a.Name == b.Name && a.Namespace == b.Namespace && a.UID == b.UID &&
		maps.Equal(a.Labels, b.Labels) && a.DeletionTimestamp.Equal(b.DeletionTimestamp) &&
		a.NodeName == b.NodeName && a.HostNetwork == b.HostNetwork && a.Phase == b.Phase && a.Ready == b.Ready &&
		slices.Equal(a.IPs, b.IPs) && slices.Equal(a.Ports, b.Ports) && a.Sidecar == b.Sidecar &&
		a.ServiceAccount == b.ServiceAccount
}

// DeepCopy copies a Pod.
func (p *Pod) DeepCopy() *Pod {
	if p == nil {
		return nil
	}
	out := *p
	out.Labels = maps.Clone(p.Labels)
	if p.DeletionTimestamp != nil {
		out.DeletionTimestamp = p.DeletionTimestamp.DeepCopy()
	}
	out.IPs, out.Ports = slices.Clone(p.IPs), slices.Clone(p.Ports)
	return &out
}

// DeepCopyObject implements runtime.Object.
func (p *Pod) DeepCopyObject() runtime.Object { return p.DeepCopy() }

// podKind is the kind of every Pod (runtime.Object).
var podKind = &metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}

// GetObjectKind implements runtime.Object: v1 Pod.
func (p *Pod) GetObjectKind() schema.ObjectKind { return podKind }

// GetObjectMeta gives informers (meta.Accessor) the Pod's metadata, made
// on demand: a Pod keeps only the fields it has.
func (p *Pod) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
		Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp}
}

// GetName is the Pod's name.
func (p *Pod) GetName() string { return p.Name }

// GetNamespace is the Pod's namespace.
func (p *Pod) GetNamespace() string { return p.Namespace }

// IstioTLSModeLabel is the label Istio's injector puts on a Pod it gave a
// sidecar; the value istio means the sidecar accepts Istio mTLS.
const IstioTLSModeLabel = "security.istio.io/tlsMode"

// AcceptsIstioMTLS says the Pod has an Istio sidecar that accepts Istio
// mTLS: the injector's tlsMode label says istio and the proxy container is
// really there (a label alone, on a pod without a proxy, would make clients
// send TLS that nothing terminates).
func (p *Pod) AcceptsIstioMTLS() bool {
	return p.Sidecar && p.Labels[IstioTLSModeLabel] == "istio"
}

// IdentityAccount is the Pod's service account, "default" when unset (as
// the API server defaults it).
func (p *Pod) IdentityAccount() string {
	if p.ServiceAccount == "" {
		return "default"
	}
	return p.ServiceAccount
}
