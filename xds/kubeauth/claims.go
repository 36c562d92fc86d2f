package kubeauth

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/nodemesh/nodemesh/xds"
)

// maxTokenBytes bounds a token before anything reads it (a ServiceAccount
// token is about a kilobyte).
const maxTokenBytes = 16 << 10

// claims are what the controller reads of a token before and after the API
// server verified it: when it expires (the cache keeps it until then) and
// whom it is for.
type claims struct {
	Exp time.Time
	Aud []string
}

// readClaims reads a JWT's claims without verifying it: a cheap filter
// that refuses what cannot be a valid token of the audience before a
// TokenReview is spent on it, with a message that says what is wrong (a
// misconfigured client learns it sends the API server's token). The
// signature is the API server's to check.
func readClaims(token, audience string, now time.Time) (*claims, error) {
	bad := func(format string, args ...any) error {
		return xds.Refuse(codes.Unauthenticated, xds.ReasonBadToken, "token: "+format, args...)
	}
	if len(token) > maxTokenBytes {
		return nil, bad("longer than %d bytes", maxTokenBytes)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, bad("not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, bad("not a JWT (claims are not base64url)")
	}
	var c struct {
		Exp *json.Number    `json:"exp"`
		Aud json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, bad("not a JWT (claims are not JSON)")
	}
	if c.Exp == nil {
		// A token that never expires (a legacy Secret token) is not a
		// projected token; refuse it rather than cache it forever.
		return nil, bad("it has no expiry: use a projected ServiceAccount token")
	}
	secs, err := c.Exp.Int64()
	if err != nil {
		return nil, bad("exp is not a number")
	}
	out := &claims{Exp: time.Unix(secs, 0)}
	if !now.Before(out.Exp) {
		return nil, bad("expired at %s", out.Exp.UTC().Format(time.RFC3339))
	}
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		out.Aud = []string{one}
	} else if err := json.Unmarshal(c.Aud, &out.Aud); err != nil {
		return nil, bad("aud is neither a string nor a list")
	}
	if !slices.Contains(out.Aud, audience) {
		return nil, bad("its audience is %s, not %q", quoteList(out.Aud, 4), audience)
	}
	return out, nil
}

// quoteList quotes at most n bounded strings of a client's.
func quoteList(l []string, n int) string {
	var q []string
	for i, s := range l {
		if i == n {
			q = append(q, "…")
			break
		}
		if len(s) > 64 {
			s = s[:64] + "…"
		}
		q = append(q, `"`+s+`"`)
	}
	return "[" + strings.Join(q, " ") + "]"
}
