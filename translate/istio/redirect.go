package istio

import (
	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// translateRedirect is Istio's ApplyRedirect for a sidecar (plain HTTP):
// derivePort FROM_REQUEST_PORT becomes the port being routed, and :80 for
// http (:443 for https) is left implicit.
func translateRedirect(r *networking.HTTPRedirect, port uint32) *ir.Redirect {
	out := &ir.Redirect{Host: r.Authority, Path: r.Uri, PrefixRewrite: r.PrefixRewrite, Scheme: r.Scheme, Code: r.RedirectCode}
	if out.Code == 0 {
		out.Code = 301
	}
	if r.RedirectPort != nil {
		switch rp := r.RedirectPort.(type) {
		case *networking.HTTPRedirect_DerivePort:
			if rp.DerivePort == networking.HTTPRedirect_FROM_REQUEST_PORT {
				out.Port = port
			}
		case *networking.HTTPRedirect_Port:
			out.Port = rp.Port
		}
		scheme := r.Scheme
		if scheme == "" {
			scheme = "http"
		}
		if (out.Port == 80 && scheme == "http") || (out.Port == 443 && scheme == "https") {
			out.Port = 0
		}
	}
	return out
}

func translateDirectResponse(d *networking.HTTPDirectResponse) *ir.DirectResponse {
	out := &ir.DirectResponse{Status: d.Status}
	switch b := d.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		out.Body = b.String_
	case *networking.HTTPBody_Bytes:
		out.Body, out.BodyIsBytes = string(b.Bytes), true
	}
	return out
}
