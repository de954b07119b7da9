package authn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// KeySet is an issuer's published signing keys, fetched on first use (from
// JWKSURI, or from the jwks_uri of the Discovery document), looked up by kid,
// and fetched again on an unknown kid (at most once per RefreshMinInterval)
// or when older than MaxAge (default DefaultKeysMaxAge). It is safe for
// concurrent use.
type KeySet struct {
	JWKSURI            string
	Discovery          string
	RefreshMinInterval time.Duration
	MaxAge             time.Duration
	HTTPClient         *http.Client

	fetchMu     sync.Mutex // serialises fetches
	lastAttempt time.Time  // guarded by fetchMu

	mu        sync.RWMutex
	set       jwk.Set
	fetchedAt time.Time
	// gen counts the key sets fetched, so a holder of something verified
	// with an earlier set knows to ask whether its key is still published.
	gen atomic.Uint64
	// failures counts the fetches that failed, for metrics.
	failures atomic.Int64
}

// Generation changes whenever a fetched key set replaces the current one.
func (ks *KeySet) Generation() uint64 { return ks.gen.Load() }

// Published reports whether kid is in the current key set. A key the issuer
// has withdrawn is no longer published, and what it signed is not trusted.
func (ks *KeySet) Published(kid string) bool {
	set, _ := ks.current()
	if set == nil {
		return false
	}
	_, ok := set.LookupKeyID(kid)
	return ok
}

// RefreshIfStale fetches the key set again when it is older than MaxAge (at
// most once per RefreshMinInterval), so that a withdrawn key stops verifying
// even for tokens answered from a cache.
func (ks *KeySet) RefreshIfStale(ctx context.Context, now time.Time) {
	if set, fetched := ks.current(); set != nil && now.Sub(fetched) >= ks.maxAge() {
		_, _ = ks.refresh(ctx, now, false)
	}
}

// Key returns the key for kid. Keys that cannot be had are a 503 *Error; a
// kid the issuer does not publish is a 401 *Error.
func (ks *KeySet) Key(ctx context.Context, kid string, now time.Time) (jwk.Key, error) {
	set, fetched := ks.current()
	if set != nil {
		if k, ok := set.LookupKeyID(kid); ok && now.Sub(fetched) < ks.maxAge() {
			return k, nil
		}
	}
	set, err := ks.refresh(ctx, now, set == nil)
	if set == nil {
		return nil, &Error{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable",
			Description: "identity provider keys are unavailable", err: err}
	}
	if k, ok := set.LookupKeyID(kid); ok {
		return k, nil
	}
	return nil, invalid("token signed by an unknown key")
}

// DefaultKeysMaxAge bounds how long a key the issuer withdrew keeps
// verifying: the key set is fetched again after it.
const DefaultKeysMaxAge = time.Hour

func (ks *KeySet) maxAge() time.Duration {
	if ks.MaxAge == 0 {
		return DefaultKeysMaxAge
	}
	return ks.MaxAge
}

func (ks *KeySet) current() (jwk.Set, time.Time) {
	ks.mu.RLock()
	defer ks.mu.RUnlock()
	return ks.set, ks.fetchedAt
}

// refresh fetches the key set unless another fetch happened too recently. It
// returns the current set (possibly the old one) and the fetch error, if any.
func (ks *KeySet) refresh(ctx context.Context, now time.Time, first bool) (jwk.Set, error) {
	ks.fetchMu.Lock()
	defer ks.fetchMu.Unlock()
	set, _ := ks.current()
	minInterval := ks.RefreshMinInterval
	if minInterval == 0 {
		minInterval = 30 * time.Second
	}
	if !first && now.Sub(ks.lastAttempt) < minInterval {
		return set, nil
	}
	if first && set == nil && now.Sub(ks.lastAttempt) < time.Second {
		return nil, errors.New("key fetch failed moments ago")
	}
	ks.lastAttempt = now
	fresh, err := ks.fetch(ctx)
	if err != nil {
		ks.failures.Add(1)
		return set, err
	}
	ks.mu.Lock()
	ks.set, ks.fetchedAt = fresh, now
	ks.gen.Add(1)
	ks.mu.Unlock()
	return fresh, nil
}

func (ks *KeySet) client() *http.Client {
	if ks.HTTPClient != nil {
		return ks.HTTPClient
	}
	return &http.Client{Timeout: 10 * time.Second}
}

func (ks *KeySet) fetch(ctx context.Context) (jwk.Set, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if ks.JWKSURI == "" {
		var doc struct {
			JWKSURI string `json:"jwks_uri"`
		}
		if err := ks.getJSON(ctx, ks.Discovery, &doc); err != nil {
			return nil, fmt.Errorf("discovery at %s: %w", ks.Discovery, err)
		}
		if doc.JWKSURI == "" {
			return nil, fmt.Errorf("discovery at %s: no jwks_uri", ks.Discovery)
		}
		ks.JWKSURI = doc.JWKSURI // guarded by fetchMu, like every fetch
	}
	set, err := jwk.Fetch(ctx, ks.JWKSURI, jwk.WithHTTPClient(ks.client()))
	if err != nil {
		return nil, fmt.Errorf("keys at %s: %w", ks.JWKSURI, err)
	}
	return set, nil
}

func (ks *KeySet) getJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := ks.client().Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", res.Status)
	}
	return json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(out)
}
