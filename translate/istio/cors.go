package istio

import (
	"time"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// translateCORS is Istio's TranslateCORSPolicy.
func translateCORS(in *networking.CorsPolicy) *ir.CORS {
	if in == nil {
		return nil
	}
	out := &ir.CORS{
		AllowMethods:                 in.AllowMethods,
		AllowHeaders:                 in.AllowHeaders,
		ExposeHeaders:                in.ExposeHeaders,
		ForwardNotMatchingPreflights: in.UnmatchedPreflights != networking.CorsPolicy_IGNORE,
	}
	if in.AllowOrigins != nil {
		for _, o := range in.AllowOrigins {
			out.AllowOrigins = append(out.AllowOrigins, stringMatch(o))
		}
	} else {
		for _, o := range in.AllowOrigin { // deprecated, still honoured
			out.AllowOrigins = append(out.AllowOrigins, ir.StringMatch{Exact: &o})
		}
	}
	if in.MaxAge != nil {
		// Envoy takes whole seconds.
		out.MaxAge = ir.D(time.Duration(in.MaxAge.GetSeconds()) * time.Second)
	}
	if in.AllowCredentials != nil {
		v := in.AllowCredentials.Value
		out.AllowCredentials = &v
	}
	return out
}
