// Package clocktest is a clock that tests move by hand: expiry decisions
// (cached tokens, key sets, remembered refusals, breakers) are tested by
// advancing it past the bound, never by sleeping until the bound passes.
// It is for tests only; production code takes a func() time.Time and gets
// time.Now.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a time that moves only when Advance is called. It is safe for
// concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a Clock reading start. Tests usually start at time.Now(), so
// that tokens minted in real time are neither expired nor from the future.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now is the clock's time; pass the method value (c.Now) as the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}
