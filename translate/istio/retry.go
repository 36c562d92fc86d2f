package istio

import (
	"net/http"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"github.com/nodemesh/nodemesh/translate/ir"
)

// defaultRetryOn is Istio's default retry condition (503 is no longer part of
// it since istio/istio#52111).
const defaultRetryOn = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"

// retryPolicy is Istio's retry.ConvertPolicy: unset → the default policy
// (2 attempts), attempts 0 → no policy, otherwise the default overridden by
// what is set. Under consistent hashing the previous-hosts predicate is
// dropped so that retries stay on the hashed host.
func retryPolicy(in *networking.HTTPRetry, consistentHash bool) *ir.RetryPolicy {
	out := &ir.RetryPolicy{Attempts: 2, RetryOn: defaultRetryOn, PreviousHosts: !consistentHash, HostSelectionMaxAttempts: 5}
	if in == nil {
		return out
	}
	if in.Attempts <= 0 {
		return nil
	}
	out.Attempts = uint32(in.Attempts)
	if in.RetryOn != "" {
		out.RetryOn, out.RetriableStatusCodes = parseRetryOn(in.RetryOn)
		if len(out.RetriableStatusCodes) > 0 && !strings.Contains(out.RetryOn, "retriable-status-codes") {
			if out.RetryOn != "" {
				out.RetryOn += ","
			}
			out.RetryOn += "retriable-status-codes"
		}
	}
	if in.PerTryTimeout != nil {
		out.PerTryTimeout = ir.D(in.PerTryTimeout.AsDuration())
	}
	if in.RetryIgnorePreviousHosts != nil {
		out.PreviousHosts = in.RetryIgnorePreviousHosts.Value
	}
	if in.RetryRemoteLocalities.GetValue() {
		out.RetryRemoteLocalities = true
	}
	if in.Backoff != nil {
		out.BackoffBase = ir.D(in.Backoff.AsDuration())
	}
	return out
}

// parseRetryOn splits numeric HTTP status codes out of a retryOn list.
func parseRetryOn(retryOn string) (string, []uint32) {
	var codes []uint32
	var conds []string
	for _, part := range strings.Split(retryOn, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if i, err := strconv.Atoi(part); err == nil && http.StatusText(i) != "" {
			codes = append(codes, uint32(i))
			continue
		}
		conds = append(conds, part)
	}
	return strings.Join(conds, ","), codes
}
