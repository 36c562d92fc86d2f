package istio

import (
	"strings"
)

// resolveHost is Istio's ResolveShortnameToFQDN: a name without dots is a
// Service in the resource's namespace; anything else is taken as written.
func resolveHost(host, namespace, clusterDomain string) string {
	if host == "" || host == "*" || strings.Contains(host, ".") {
		return host
	}
	return host + "." + namespace + ".svc." + clusterDomain
}

// hostMatches reports whether a concrete host matches a pattern that may be a
// wildcard ("*", "*.example.com").
func hostMatches(host, pattern string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(host, pattern[1:])
	case strings.HasPrefix(pattern, "*"):
		return strings.HasSuffix(host, pattern[1:])
	default:
		return host == pattern
	}
}

// hostSpecificity ranks patterns: an exact host beats any wildcard, and a
// longer wildcard beats a shorter one.
func hostSpecificity(pattern string) int {
	if !strings.HasPrefix(pattern, "*") {
		return 1 << 20
	}
	return len(pattern)
}

func isWildcard(host string) bool { return strings.HasPrefix(host, "*") }
