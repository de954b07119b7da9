package authn

import (
	"testing"
	"time"
)

// The verified-token cache holds up to its bound, and only then evicts:
// first what has expired, then about half of the rest.
func TestTokenCacheBound(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	fresh := func() *Identity { return &Identity{Expiry: now.Add(time.Hour)} }
	key := func(i int) (k [32]byte) { k[0], k[1] = byte(i), byte(i>>8); return k }

	c := newTokenCache(4)
	for i := range 4 {
		c.put(key(i), fresh(), now)
	}
	for i := range 4 {
		if c.get(key(i), now) == nil {
			t.Fatalf("entry %d of 4 evicted from a cache of 4", i)
		}
	}
	c.put(key(4), fresh(), now)
	if n := len(c.byID); n > 4 || c.get(key(4), now) == nil {
		t.Fatalf("a fifth entry in a cache of 4: %d entries, the new one kept: %v", n, c.get(key(4), now) != nil)
	}

	// Full with mostly expired entries: those go, the fresh ones stay.
	c = newTokenCache(10)
	for i := range 8 {
		c.put(key(i), &Identity{Expiry: now.Add(-time.Second)}, now)
	}
	c.put(key(8), fresh(), now)
	c.put(key(9), fresh(), now)
	c.put(key(10), fresh(), now)
	if len(c.byID) != 3 || c.get(key(8), now) == nil || c.get(key(9), now) == nil || c.get(key(10), now) == nil {
		t.Fatalf("after evicting the expired: %d entries", len(c.byID))
	}

	// Full with fresh entries: fewer than half remain, the new one with them.
	c = newTokenCache(10)
	for i := range 10 {
		c.put(key(i), fresh(), now)
	}
	c.put(key(10), fresh(), now)
	if n := len(c.byID); n != 5 || c.get(key(10), now) == nil {
		t.Fatalf("after evicting from a full cache of 10: %d entries, want 4 kept and the new one", n)
	}
}
