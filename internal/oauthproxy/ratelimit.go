package oauthproxy

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// The endpoints anyone may call without a token and that cost the proxy
// something (a stored registration, a stored pending login, a metadata
// document fetched on the caller's behalf) are rate-limited per client
// address, so that one host cannot fill the store or use the proxy to fetch
// for it. Codes and tokens need no limit: they are 256-bit secrets.

// limiter is a token bucket per client address (an IPv6 address counts by
// its /64, what one host is usually given), bounded in addresses.
type limiter struct {
	perMinute int
	mu        sync.Mutex
	buckets   map[netip.Addr]*bucket
	// overflow is shared by every address beyond maxAddresses: under a
	// spread flood they share one budget rather than grow the map.
	overflow *rate.Limiter
	now      func() time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// maxAddresses bounds the buckets kept; an idle one is dropped after a minute
// (it would have refilled by then anyway).
const maxAddresses = 10000

func newLimiter(perMinute int, now func() time.Time) *limiter {
	if perMinute <= 0 {
		return nil
	}
	return &limiter{perMinute: perMinute, buckets: map[netip.Addr]*bucket{}, overflow: newBucket(perMinute), now: now}
}

// newBucket allows perMinute requests a minute, all of them at once.
func newBucket(perMinute int) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(float64(perMinute)/60), perMinute)
}

// allow reports whether the request may proceed, and if not, how long the
// address should wait.
func (l *limiter) allow(r *http.Request) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	addr := clientAddr(r)
	now := l.now()
	l.mu.Lock()
	b, ok := l.buckets[addr]
	if !ok {
		if len(l.buckets) >= maxAddresses {
			for a, old := range l.buckets {
				if now.Sub(old.seen) > time.Minute {
					delete(l.buckets, a)
				}
			}
		}
		if len(l.buckets) < maxAddresses {
			b = &bucket{lim: newBucket(l.perMinute)}
			l.buckets[addr] = b
		}
	}
	lim := l.overflow
	if b != nil {
		b.seen = now
		lim = b.lim
	}
	res := lim.ReserveN(now, 1)
	l.mu.Unlock()
	if !res.OK() {
		return false, time.Minute
	}
	if wait := res.DelayFrom(now); wait > 0 {
		res.CancelAt(now)
		return false, wait
	}
	return true, 0
}

// clientAddr is the address the request came from, an IPv6 one as its /64.
func clientAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		a = p.Addr()
	}
	return a
}

// limited refuses a request over its address's budget with 429 and
// Retry-After, counted; the endpoint answers in its own form (a page for a
// browser, JSON for a client).
func (p *Proxy) limited(w http.ResponseWriter, r *http.Request, page bool) bool {
	ok, wait := p.limit.allow(r)
	if ok {
		return false
	}
	p.refuse(r.Context(), "rate_limited", "too many requests from one address", "path", r.URL.Path)
	secs := int(wait/time.Second) + 1
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	msg := "Too many sign-in requests from this address; try again in " + strconv.Itoa(secs) + " seconds."
	if page {
		p.page(w, http.StatusTooManyRequests, msg)
		return true
	}
	writeJSON(w, http.StatusTooManyRequests, oauthError{Error: "temporarily_unavailable", Description: msg})
	return true
}
