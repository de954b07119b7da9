package store

import "time"

// SetClock makes m read the time from now instead of the wall clock, so that
// tests of expiry move time rather than sleep through it.
func SetClock(m *Memory, now func() time.Time) { m.now = now }
