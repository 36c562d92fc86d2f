package translate

import (
	"fmt"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/nodemesh/nodemesh/translate/envoy"
	"github.com/nodemesh/nodemesh/translate/input"
	"github.com/nodemesh/nodemesh/translate/ir"
	"github.com/nodemesh/nodemesh/translate/istio"
)

// JWKSFunc returns the key set of a JWT rule that has no inline jwks: the
// document at uri, or, with uri empty, at the jwks_uri of issuer's OpenID
// discovery document. The controller fetches (Istio's default,
// PILOT_JWT_ENABLE_REMOTE_JWKS=false) — the node Envoy has no cluster for
// an arbitrary key server, and a fetch from every node would multiply the
// load and the reach of a hostile URI. timeout bounds the fetch.
type JWKSFunc func(issuer, uri string, timeout time.Duration) (string, error)

// RejectingJWKS is the key set of a provider that must reject every token:
// istiod's PublicOnlyJwks (pilot/pkg/model/jwks_resolver.go), an RSA public
// key whose private key was discarded when it was made, so no token
// verifies against it. istiod uses it when it cannot fetch a key set.
const RejectingJWKS = `{"keys":[{"kty":"RSA","e":"AQAB","n":"0xObjM0UvS_oaazjpEYlAbwctEJ4L8pH3OuTb7qth7gUwqet-EzQB4dgFdvSdMgrLnSncQGRjpEYz3F3viIbH-3EN3TxSlPNviHxeOdyiBVfumN8dMxbLvVJUpfNOnvmMxJcl-8NNjAwcOjk4otSALaYgYYyOPyvKtgVdrQr-FoubWX4yrjxW-MJ2-7OBeepUUNOsVwGV23YX03sVkkyvY3otRflkBcY3_HKpBxJl9wk2GyOShN4_PNUF9-vwfnvOXMbCDX-w4PTef4geeb_GiT40YCKHTKMSPVanGRn5GExIWmki-mmqh94-mPTJyBR74ShspL3BxPZitDL574T1w"}]}`

// RequestAuthentications translates the bag's RequestAuthentications (kept
// by a Loader with KeepIgnored, or added by a watcher to Bag.Other) into
// the model. Diagnostics about resources read from files carry their file
// and line.
func RequestAuthentications(bag *input.Bag, opts AuthzOptions) ([]ir.RequestAuthn, ir.Diagnostics) {
	var ras []*securityv1.RequestAuthentication
	sources := map[ir.ResourceRef]*input.Source{}
	for _, o := range bag.Other {
		ra, ok := o.Typed.(*securityv1.RequestAuthentication)
		if !ok || ra == nil {
			continue
		}
		ras = append(ras, ra)
		if o.Source != nil {
			sources[o.Ref] = o.Source
		}
	}
	out, diags := istio.RequestAuthentications(ras, opts)
	locate(sources, diags)
	return out, diags
}

// WorkloadJWT builds the envoy.filters.http.jwt_authn filter of one pod's
// inbound HTTP ports from the RequestAuthentications that apply to it (the
// scope rules of AuthorizationPolicy: AppliesTo); nil when none does. The
// filter goes before the RBAC filters, which match the payload it writes.
// RequestAuthentication has no port selection: every inbound HTTP port of
// the pod gets the same filter, as on a sidecar.
//
// A rule's keys are its inline jwks, or what jwks returns for its jwksUri
// (or issuer); when jwks is nil or fails, and for a rule marked
// RejectTokens, the provider gets RejectingJWKS — tokens at its locations
// are rejected, never accepted unchecked (a Warning says so). An error
// means the filter failed validation and the pod's HTTP ports must not be
// served.
func WorkloadJWT(ras []ir.RequestAuthn, bag *input.Bag, pod *input.Pod, jwks JWKSFunc) (*hcmv3.HttpFilter, ir.Diagnostics, error) {
	var ps []envoy.JWTProvider
	var diags ir.Diagnostics
	for i := range ras {
		ra := &ras[i]
		if !AppliesTo(&ir.Policy{Scope: ra.Scope}, pod, bag.Services) {
			continue
		}
		for _, r := range ra.Rules {
			ps = append(ps, envoy.JWTProvider{Rule: r, JWKS: ruleKeys(ra.Source, r, jwks, &diags)})
		}
	}
	cfg, err := envoy.BuildJWTAuthn(ps)
	if err != nil || cfg == nil {
		return nil, diags, err
	}
	f, err := envoy.JWTFilter(cfg)
	if err != nil {
		return nil, diags, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return f, diags, nil
}

func ruleKeys(ref ir.ResourceRef, r ir.JWTRule, jwks JWKSFunc, diags *ir.Diagnostics) string {
	switch {
	case r.RejectTokens:
		return RejectingJWKS
	case r.JWKS != "":
		return r.JWKS
	case jwks == nil:
		diags.Warnf(ir.CodeDeniesMore, ref, r.Field+".jwksUri", "no key server is reachable from here (no JWKS fetcher): tokens of issuer %q are rejected", r.Issuer)
		return RejectingJWKS
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = ir.DefaultJWKSTimeout
	}
	doc, err := jwks(r.Issuer, r.JWKSURI, timeout)
	if err == nil {
		// A fetched document is as untrusted as an inline one.
		var private, skipped int
		doc, private, skipped, err = istio.PublicJWKS(doc)
		if err == nil && private+skipped > 0 {
			diags.Warnf(ir.CodeInvalidValue, ref, r.Field+".jwksUri", "the key set holds %d private and %d unusable key(s): only the public, usable ones are used", private, skipped)
		}
	}
	if err != nil {
		diags.Warnf(ir.CodeDeniesMore, ref, r.Field+".jwksUri", "cannot get the key set: %v: tokens of issuer %q are rejected until it can", err, r.Issuer)
		return RejectingJWKS
	}
	return doc
}
