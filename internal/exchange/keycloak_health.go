package exchange

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// CacheHits counts the callers whose roles, or refusal, came from the cache
// (in process or the shared store); CacheMisses those that had to wait for an
// exchange (one exchange serves concurrent misses of one token).
func (k *Keycloak) CacheHits() int64 { return k.cacheHits.Load() }

// CacheMisses: see CacheHits.
func (k *Keycloak) CacheMisses() int64 { return k.cacheMisses.Load() }

// Check asks Keycloak for the realm's OpenID configuration: it answers when
// Keycloak is up and the realm exists. It sends no credential and no token.
func (k *Keycloak) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.issuer+"/.well-known/openid-configuration", nil)
	if err != nil {
		return err
	}
	res, err := k.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("keycloak unreachable: %w", err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("keycloak answered %d for the realm's configuration", res.StatusCode)
	}
	return nil
}
