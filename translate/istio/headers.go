package istio

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// isInternalHeader: pseudo-headers and Host cannot be set by header operations
// (Istio's isInternalHeader); an authority in set/add becomes a host rewrite.
func isInternalHeader(name string) bool {
	return strings.HasPrefix(name, ":") || strings.EqualFold(name, "host")
}

func isAuthorityHeader(name string) bool {
	return strings.EqualFold(name, ":authority") || strings.EqualFold(name, "host")
}

// headerOps is Istio's TranslateHeadersOperations: set before add, each sorted
// by name; the authority, if set, is returned separately ("set" wins).
func headerOps(h *networking.Headers) (ir.HeaderOps, string) {
	if h == nil {
		return ir.HeaderOps{}, ""
	}
	reqSet, setAuth := headerList(h.GetRequest().GetSet(), false)
	reqAdd, addAuth := headerList(h.GetRequest().GetAdd(), true)
	respSet, _ := headerList(h.GetResponse().GetSet(), false)
	respAdd, _ := headerList(h.GetResponse().GetAdd(), true)
	auth := addAuth
	if setAuth != "" {
		auth = setAuth
	}
	return ir.HeaderOps{
		Request:        append(reqSet, reqAdd...),
		RequestRemove:  dropInternal(h.GetRequest().GetRemove()),
		Response:       append(respSet, respAdd...),
		ResponseRemove: dropInternal(h.GetResponse().GetRemove()),
	}, auth
}

func headerList(m map[string]string, appendValue bool) ([]ir.HeaderOp, string) {
	if len(m) == 0 {
		return nil, ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	authority := ""
	out := make([]ir.HeaderOp, 0, len(keys))
	for _, k := range keys {
		if isAuthorityHeader(k) {
			authority = m[k]
		}
		if isInternalHeader(k) {
			continue
		}
		out = append(out, ir.HeaderOp{Name: k, Value: m[k], Append: appendValue})
	}
	return out, authority
}

func dropInternal(keys []string) []string {
	var out []string
	for _, k := range keys {
		if !isInternalHeader(k) {
			out = append(out, k)
		}
	}
	return out
}
