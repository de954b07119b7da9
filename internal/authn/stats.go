package authn

import (
	"context"
	"errors"
)

// Stats are a Verifier's counters since it was made, for metrics.
type Stats struct {
	// CacheHits are the tokens answered from the verified-token cache;
	// CacheMisses the tokens verified afresh (signature and claims).
	CacheHits, CacheMisses int64
	// KeyFetches are the issuer's key sets fetched; KeyFetchFailures the
	// fetches that failed (the previous set, if any, stays in use).
	KeyFetches       uint64
	KeyFetchFailures int64
}

// Stats reads the counters.
func (v *Verifier) Stats() Stats {
	return Stats{CacheHits: v.hits.Load(), CacheMisses: v.misses.Load(), KeyFetches: v.keys.Generation(), KeyFetchFailures: v.keys.failures.Load()}
}

// KeysReady reports whether the issuer's signing keys are at hand, fetching
// them if no set has been fetched yet: keys are otherwise fetched by the
// first token, and a readiness probe that waited for one would wait forever.
// A set fetched once stays usable while later fetches fail.
func (v *Verifier) KeysReady(ctx context.Context) error {
	if set, _ := v.keys.current(); set != nil {
		return nil
	}
	set, err := v.keys.refresh(ctx, v.now(), true)
	if set != nil {
		return nil
	}
	if err == nil {
		err = errors.New("no key set")
	}
	return err
}
