package authn

import (
	"sync"
	"time"
)

// tokenCache remembers verified tokens by their SHA-256 until they expire, so
// repeated calls with one token pay no signature check. It holds no token.
type tokenCache struct {
	mu   sync.RWMutex
	max  int
	byID map[[32]byte]*Identity
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, byID: make(map[[32]byte]*Identity)}
}

func (c *tokenCache) get(key [32]byte, now time.Time) *Identity {
	c.mu.RLock()
	id := c.byID[key]
	c.mu.RUnlock()
	if id == nil || !now.Before(id.Expiry) {
		return nil
	}
	return id
}

// put remembers id; now is the verifier's clock, which also decides what
// has expired when the cache is full.
func (c *tokenCache) put(key [32]byte, id *Identity, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.byID) >= c.max {
		c.evict(now)
	}
	c.byID[key] = id
}

// evict drops expired entries, then, if still full, about half of the rest
// (map order is random, so this is a random eviction).
func (c *tokenCache) evict(now time.Time) {
	for k, id := range c.byID {
		if !now.Before(id.Expiry) {
			delete(c.byID, k)
		}
	}
	for k := range c.byID {
		if len(c.byID) < c.max/2 {
			break
		}
		delete(c.byID, k)
	}
}
