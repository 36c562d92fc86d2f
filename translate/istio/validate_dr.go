package istio

import (
	"regexp"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// dns1123Label is what Istio requires of subset names (they become part of
// cluster names).
var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// validateDestinationRule applies Istio's validation and reports what
// nodemesh does not support. It returns nil when nothing of the rule is usable.
func (t *translator) validateDestinationRule(obj *networkingv1.DestinationRule) *drInfo {
	ref := ir.ResourceRef{Kind: "DestinationRule", Namespace: obj.Namespace, Name: obj.Name}
	spec := &obj.Spec
	if spec.Host == "" {
		t.diags.Errorf(ir.CodeInvalidValue, ref, "spec.host", "host is required")
		return nil
	}
	if spec.WorkloadSelector != nil {
		t.diags.Warnf(ir.CodeUnsupportedField, ref, "spec.workloadSelector",
			"DestinationRules with a workloadSelector apply to the selected clients' sidecars only; not supported yet, the rule is ignored")
		return nil
	}
	if !t.checkExportTo(ref, spec.ExportTo) {
		return nil
	}
	dr := &drInfo{obj: obj, ref: ref, host: resolveHost(spec.Host, obj.Namespace, t.opts.ClusterDomain)}
	// Istio's setDestinationRules: the rule's own exportTo decides the
	// namespace-local index (empty counts as local); the mesh default
	// decides whether a rule without exportTo is private only.
	dr.exportTo = exportToOf(obj.Namespace, spec.ExportTo, t.opts.DefaultDestinationRuleExportTo)
	dr.local = len(spec.ExportTo) == 0 || dr.exportTo.public() || slices.Contains(dr.exportTo, obj.Namespace)
	dr.privateOnly = len(dr.exportTo) == 1 && dr.exportTo[0] == obj.Namespace
	if tp := spec.TrafficPolicy; tp != nil {
		if t.validTrafficPolicy(ref, "spec.trafficPolicy", tp, true) {
			dr.policy = tp
		}
		dr.portPolicies = t.portLevelPolicies(ref, "spec.trafficPolicy", tp)
	}
	names := map[string]bool{}
	for i, s := range spec.Subsets {
		field := ir.Path("spec.subsets").Index(i)
		switch {
		case s.Name == "":
			t.diags.Errorf(ir.CodeInvalidValue, ref, string(field.Field("name")), "subset name is required; the subset is ignored")
			continue
		case !dns1123Label.MatchString(s.Name):
			t.diags.Errorf(ir.CodeInvalidValue, ref, string(field.Field("name")),
				"subset name %q must be a DNS-1123 label (lower case letters, digits and '-'); the subset is ignored", s.Name)
			continue
		case names[s.Name]:
			t.diags.Errorf(ir.CodeInvalidValue, ref, string(field.Field("name")), "duplicate subset name %q; the later one is ignored", s.Name)
			continue
		}
		names[s.Name] = true
		si := &subsetInfo{name: s.Name, selector: newSelector(s.Labels), dr: dr, field: field}
		if tp := s.TrafficPolicy; tp != nil {
			pf := field.Field("trafficPolicy")
			if t.validTrafficPolicy(ref, pf, tp, true) {
				si.policy = tp
			}
			si.portPolicies = t.portLevelPolicies(ref, pf, tp)
		}
		dr.subsets = append(dr.subsets, si)
	}
	return dr
}

func (t *translator) portLevelPolicies(ref ir.ResourceRef, path ir.Path, tp *networking.TrafficPolicy) map[uint32]portPolicy {
	if len(tp.PortLevelSettings) == 0 {
		return nil
	}
	out := map[uint32]portPolicy{}
	seen := map[uint32]bool{}
	for i, pls := range tp.PortLevelSettings {
		field := path.Field("portLevelSettings").Index(i)
		n := pls.GetPort().GetNumber()
		if n == 0 || n > 65535 {
			t.diags.Errorf(ir.CodeInvalidValue, ref, string(field.Field("port")), "port.number must be 1–65535; the setting is ignored")
			continue
		}
		// Istio's GetPortLevelTrafficPolicy takes the first entry for a port;
		// a later one never applies, even when the first is invalid and
		// left out (istiod rejects such a rule as a whole).
		if seen[n] {
			t.diags.Errorf(ir.CodeInvalidValue, ref, string(field.Field("port")), "port %d has several portLevelSettings; the later one is ignored", n)
			continue
		}
		seen[n] = true
		p := &networking.TrafficPolicy{
			LoadBalancer:     pls.LoadBalancer,
			ConnectionPool:   pls.ConnectionPool,
			OutlierDetection: pls.OutlierDetection,
			Tls:              pls.Tls,
		}
		if t.validTrafficPolicy(ref, field, p, false) {
			out[n] = portPolicy{policy: p, field: field}
		}
	}
	return out
}

// validTrafficPolicy reports problems in a traffic policy; false means the
// policy must not be applied (clusters keep Istio's defaults for it).
func (t *translator) validTrafficPolicy(ref ir.ResourceRef, path ir.Path, tp *networking.TrafficPolicy, topLevel bool) bool {
	ok := true
	bad := func(field ir.Path, format string, args ...any) {
		t.diags.Errorf(ir.CodeInvalidValue, ref, string(field), format+"; the traffic policy is not applied", args...)
		ok = false
	}
	unsupported := func(field ir.Path, format string, args ...any) {
		t.diags.Warnf(ir.CodeUnsupportedField, ref, string(field), format, args...)
	}
	if topLevel {
		if tp.Tunnel != nil {
			unsupported(path.Field("tunnel"), "tunnel is not supported yet; ignored")
		}
		if tp.ProxyProtocol != nil {
			unsupported(path.Field("proxyProtocol"), "proxyProtocol is not supported yet; ignored")
		}
		if rb := tp.RetryBudget; rb != nil {
			f := path.Field("retryBudget")
			if p := rb.GetPercent(); p != nil && (p.GetValue() < 0 || p.GetValue() > 100) {
				bad(f.Field("percent"), "percent must be 0–100")
			}
			if rb.BudgetInterval != nil {
				unsupported(f.Field("budgetInterval"), "budgetInterval has no Envoy equivalent; ignored")
			}
		}
	}
	if lb := tp.LoadBalancer; lb != nil {
		f := path.Field("loadBalancer")
		if lb.LocalityLbSetting != nil {
			unsupported(f.Field("localityLbSetting"), "locality load balancing is not supported yet; ignored")
		}
		if lb.ZoneAwareLbSetting != nil {
			unsupported(f.Field("zoneAwareLbSetting"), "zone-aware load balancing is not supported yet; ignored")
		}
		if lb.Warmup != nil && lb.WarmupDurationSecs != nil {
			bad(f, "only one of warmup and warmupDurationSecs may be set")
		}
		if w := lb.Warmup; w != nil {
			if w.Duration == nil || w.Duration.AsDuration() <= 0 {
				bad(f.Field("warmup").Field("duration"), "duration must be positive")
			}
			if mp := w.MinimumPercent; mp != nil && (mp.Value < 0 || mp.Value > 100) {
				bad(f.Field("warmup").Field("minimumPercent"), "minimumPercent must be 0–100")
			}
			if a := w.Aggression; a != nil && a.Value < 1 {
				bad(f.Field("warmup").Field("aggression"), "aggression must be at least 1")
			}
		}
		if d := lb.WarmupDurationSecs; d != nil && d.AsDuration() <= 0 {
			bad(f.Field("warmupDurationSecs"), "warmupDurationSecs must be positive")
		}
		if ch := lb.GetConsistentHash(); ch != nil {
			cf := f.Field("consistentHash")
			switch k := ch.HashKey.(type) {
			case nil:
				bad(cf, "a hash key (httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName) is required")
			case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
				if k.HttpHeaderName == "" {
					bad(cf.Field("httpHeaderName"), "must not be empty")
				}
			case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
				if k.HttpQueryParameterName == "" {
					bad(cf.Field("httpQueryParameterName"), "must not be empty")
				}
			case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
				if !k.UseSourceIp {
					bad(cf.Field("useSourceIp"), "useSourceIp: false selects no hash key")
				}
			case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
				if k.HttpCookie.GetName() == "" {
					bad(cf.Field("httpCookie").Field("name"), "cookie name is required")
				}
				if d := k.HttpCookie.GetTtl(); d != nil && d.AsDuration() < 0 {
					bad(cf.Field("httpCookie").Field("ttl"), "ttl must not be negative")
				}
			}
			if rh := ch.GetRingHash(); rh != nil && rh.MinimumRingSize > 8388608 {
				bad(cf.Field("ringHash").Field("minimumRingSize"), "minimumRingSize must be at most 8388608 (Envoy's limit)")
			}
			if ch.MinimumRingSize > 8388608 {
				bad(cf.Field("minimumRingSize"), "minimumRingSize must be at most 8388608 (Envoy's limit)")
			}
			if mg := ch.GetMaglev(); mg != nil && mg.TableSize != 0 && (mg.TableSize > 5000011 || !isPrime(mg.TableSize)) {
				bad(cf.Field("maglev").Field("tableSize"), "tableSize must be a prime number no larger than 5000011 (Envoy rejects others)")
			}
		}
	}
	if cp := tp.ConnectionPool; cp != nil {
		f := path.Field("connectionPool")
		if tcp := cp.Tcp; tcp != nil {
			tf := f.Field("tcp")
			if tcp.MaxConnections < 0 {
				bad(tf.Field("maxConnections"), "must not be negative")
			}
			if d := tcp.ConnectTimeout; d != nil && d.AsDuration() <= 0 {
				bad(tf.Field("connectTimeout"), "connectTimeout must be positive")
			}
			if d := tcp.MaxConnectionDuration; d != nil && d.AsDuration() < 0 {
				bad(tf.Field("maxConnectionDuration"), "must not be negative")
			}
			if d := tcp.IdleTimeout; d != nil && d.AsDuration() < 0 {
				bad(tf.Field("idleTimeout"), "must not be negative")
			}
		}
		if h := cp.Http; h != nil {
			hf := f.Field("http")
			for name, v := range map[string]int32{
				"http1MaxPendingRequests": h.Http1MaxPendingRequests, "http2MaxRequests": h.Http2MaxRequests,
				"maxRequestsPerConnection": h.MaxRequestsPerConnection, "maxRetries": h.MaxRetries,
				"maxConcurrentStreams": h.MaxConcurrentStreams,
			} {
				if v < 0 {
					bad(hf.Field(name), "must not be negative")
				}
			}
			if d := h.IdleTimeout; d != nil && d.AsDuration() < 0 {
				bad(hf.Field("idleTimeout"), "must not be negative")
			}
		}
	}
	if od := tp.OutlierDetection; od != nil {
		f := path.Field("outlierDetection")
		if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
			bad(f.Field("maxEjectionPercent"), "must be 0–100")
		}
		if od.MinHealthPercent < 0 || od.MinHealthPercent > 100 {
			bad(f.Field("minHealthPercent"), "must be 0–100")
		}
		if od.ConsecutiveErrors < 0 {
			bad(f.Field("consecutiveErrors"), "must not be negative")
		} else if od.ConsecutiveErrors != 0 {
			// Istio's validateOutlierDetection (pkg/config/validation) warns
			// with this message and its cluster builder ignores the field.
			t.diags.Warnf(ir.CodeUnsupportedField, ref, string(f.Field("consecutiveErrors")),
				"outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead; it is ignored, as Istio ignores it")
		}
		if d := od.Interval; d != nil && d.AsDuration() <= 0 {
			bad(f.Field("interval"), "interval must be positive")
		}
		if d := od.BaseEjectionTime; d != nil && d.AsDuration() <= 0 {
			bad(f.Field("baseEjectionTime"), "baseEjectionTime must be positive")
		}
		if len(od.OutlierDetectionHttpErrorCodes) > 0 {
			unsupported(f.Field("outlierDetectionHttpErrorCodes"), "outlierDetectionHttpErrorCodes is not supported yet; only 5xx and gateway errors count")
		}
	}
	if tls := tp.Tls; tls != nil {
		f := path.Field("tls")
		switch tls.Mode {
		case networking.ClientTLSSettings_ISTIO_MUTUAL:
			if !t.opts.IstioMTLS {
				unsupported(f.Field("mode"), "ISTIO_MUTUAL needs Istio's workload certificates, which nodemesh serves only with Istio mTLS enabled (chart value mtls.enabled); connections stay plaintext")
			}
		case networking.ClientTLSSettings_MUTUAL:
			if tls.CredentialName == "" && (tls.ClientCertificate == "" || tls.PrivateKey == "") {
				bad(f, "MUTUAL needs clientCertificate and privateKey (or credentialName)")
			}
		}
		if tls.CredentialName != "" && tls.Mode != networking.ClientTLSSettings_DISABLE {
			switch {
			case !t.opts.IstioMTLS:
				unsupported(f.Field("credentialName"), "credentialName needs the node agent's Secret discovery service, which nodemesh uses only with Istio mTLS enabled (chart value mtls.enabled); the certificates are not loaded")
			case strings.Contains(tls.CredentialName, "/") || strings.Contains(tls.CredentialName, ":"):
				// A namespace or another secret type in the name could make
				// the node's SDS server load a Secret of another namespace.
				bad(f.Field("credentialName"), "credentialName must name a Secret of the DestinationRule's namespace (no namespace/ and no scheme://)")
			}
		}
	}
	return ok
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for i := uint64(2); i*i <= n; i++ {
		if n%i == 0 {
			return false
		}
	}
	return true
}
