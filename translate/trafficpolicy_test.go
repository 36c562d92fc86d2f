package translate

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// istioConsecutiveErrorsWarning is the warning of Istio's
// validateOutlierDetection (pkg/config/validation/validation.go at the pinned
// Istio version) for the deprecated outlierDetection.consecutiveErrors.
const istioConsecutiveErrorsWarning = "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead"

// TestConsecutiveErrorsDeprecated checks that every consecutiveErrors (a
// top-level policy, mixed with the newer fields, and a subset's) is reported
// with Istio's validation warning, as a warning: the rule still applies,
// without the field, as istiod applies it (the clusters themselves are
// compared with istiod's by TestIstioOracleClusters/local/dr-traffic-policy).
func TestConsecutiveErrorsDeprecated(t *testing.T) {
	res := translateFiles(t, []string{filepath.Join(localOracle, "dr-traffic-policy", "input.yaml")})
	want := map[string]bool{
		"legacy spec.trafficPolicy.outlierDetection.consecutiveErrors":           false,
		"mixed spec.trafficPolicy.outlierDetection.consecutiveErrors":            false,
		"mixed spec.subsets[0].trafficPolicy.outlierDetection.consecutiveErrors": false,
	}
	for _, d := range res.Diagnostics {
		if !strings.HasSuffix(d.Field, "consecutiveErrors") {
			continue
		}
		key := d.Resource.Name + " " + d.Field
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected diagnostic %s: %s", key, d.Message)
			continue
		}
		want[key] = true
		if d.Severity != ir.SeverityWarning {
			t.Errorf("%s: severity %s, want warning (Istio accepts the rule)", key, d.Severity)
		}
		if !strings.HasPrefix(d.Message, istioConsecutiveErrorsWarning) {
			t.Errorf("%s: message %q does not start with Istio's %q", key, d.Message, istioConsecutiveErrorsWarning)
		}
	}
	for key, seen := range want {
		if !seen {
			t.Errorf("no deprecation warning for %s", key)
		}
	}
	// The rule still applies: its interval is on the cluster.
	i := slices.IndexFunc(res.IR.Clusters, func(c ir.Cluster) bool { return c.Name == "outbound|8080||legacy.default.svc.cluster.local" })
	if i < 0 || res.IR.Clusters[i].Outlier == nil || res.IR.Clusters[i].Outlier.Interval == nil {
		t.Fatalf("legacy's outlier detection (interval 2s) is not applied")
	}
	if o := res.IR.Clusters[i].Outlier; o.ConsecutiveGatewayFailure != nil || o.Consecutive5xx != nil {
		t.Errorf("consecutiveErrors was mapped (%+v); Istio ignores it", o)
	}
}
