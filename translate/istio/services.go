package istio

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// service is a Kubernetes Service as the translator sees it.
type service struct {
	ref       ir.ResourceRef
	name      string
	namespace string
	fqdn      string
	// vip is the ClusterIP; empty for headless Services.
	vip      string
	headless bool
	selector map[string]string
	ports    []servicePort
	obj      *corev1.Service
	ref_     *ir.ServiceRef
	// exportTo is the Service's visibility (its exportTo annotation or
	// the mesh default).
	exportTo exportSet
	// entry is the ServiceEntry that declares this host; nil for a
	// Kubernetes Service.
	entry *entryInfo
}

type servicePort struct {
	name       string
	port       uint32
	targetPort intstr.IntOrString
	protocol   ir.Protocol
	// field is the path of the port in the Service, for diagnostics.
	field ir.Path
}

// portByNumber finds a Service port.
func (s *service) portByNumber(n uint32) *servicePort {
	for i := range s.ports {
		if s.ports[i].port == n {
			return &s.ports[i]
		}
	}
	return nil
}

// serviceRef is shared by all the Service's clusters.
func (s *service) serviceRef() *ir.ServiceRef {
	if s.ref_ == nil {
		s.ref_ = &ir.ServiceRef{Host: s.fqdn, Name: s.name, Namespace: s.namespace}
	}
	return s.ref_
}

// indexServices builds the service registry, keyed by FQDN.
func (t *translator) indexServices() {
	t.services = make(map[string]*service, len(t.bag.Services))
	for _, obj := range t.bag.Services {
		ref := ir.ResourceRef{Kind: "Service", Namespace: obj.Namespace, Name: obj.Name}
		if obj.Spec.Type == corev1.ServiceTypeExternalName {
			t.diags.Warnf(ir.CodeUnsupportedField, ref, "spec.type",
				"ExternalName Services are not supported yet; %s is not routed", obj.Name)
			continue
		}
		s := &service{
			ref:       ref,
			name:      obj.Name,
			namespace: obj.Namespace,
			fqdn:      ir.ServiceFQDN(obj.Name, obj.Namespace, t.opts.ClusterDomain),
			selector:  obj.Spec.Selector,
			obj:       obj,
		}
		switch ip := obj.Spec.ClusterIP; ip {
		case corev1.ClusterIPNone:
			s.headless = true
		default:
			s.vip = ip
		}
		for i, p := range obj.Spec.Ports {
			field := ir.Path("spec.ports").Index(i)
			if p.Port <= 0 || p.Port > 65535 {
				t.diags.Errorf(ir.CodeInvalidValue, ref, string(field.Field("port")), "port %d is out of range", p.Port)
				continue
			}
			proto := portProtocol(p)
			if proto == ir.ProtocolUDP {
				t.diags.Infof(ir.CodeUnsupportedField, ref, string(field), "%s port %d is not proxied (Istio does not proxy it either)", p.Protocol, p.Port)
				continue
			}
			s.ports = append(s.ports, servicePort{name: p.Name, port: uint32(p.Port), targetPort: p.TargetPort, protocol: proto, field: field})
		}
		s.exportTo = t.serviceExportTo(s)
		t.services[s.fqdn] = s
		t.serviceList = append(t.serviceList, s)
	}
	slices.SortFunc(t.serviceList, func(a, b *service) int { return cmp.Compare(a.fqdn, b.fqdn) })
}
