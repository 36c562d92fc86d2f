package kubeauth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// ttlCache maps keys to values until their expiry, holding at most max
// entries: when full, expired entries go first, then the one expiring
// soonest. A client with many valid tokens can only make the controller
// forget other tokens (one more TokenReview each), never grow it.
type ttlCache[V any] struct {
	max int

	mu sync.Mutex
	m  map[tokenKey]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v   V
	exp time.Time
}

// tokenKey is a token's digest with what it was checked for: the cache
// never holds a token itself.
type tokenKey struct {
	purpose string
	digest  [sha256.Size]byte
}

func keyOf(purpose, token string) tokenKey {
	return tokenKey{purpose: purpose, digest: sha256.Sum256([]byte(token))}
}

func newTTLCache[V any](max int) *ttlCache[V] {
	return &ttlCache[V]{max: max, m: map[tokenKey]ttlEntry[V]{}}
}

func (c *ttlCache[V]) get(k tokenKey, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || !now.Before(e.exp) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[V]) put(k tokenKey, v V, exp time.Time, now time.Time) {
	if !now.Before(exp) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for key, e := range c.m {
			if !now.Before(e.exp) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= c.max {
			var soonest tokenKey
			first := true
			for key, e := range c.m {
				if first || e.exp.Before(c.m[soonest].exp) {
					soonest, first = key, false
				}
			}
			delete(c.m, soonest)
		}
	}
	c.m[k] = ttlEntry[V]{v: v, exp: exp}
}

func (c *ttlCache[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
