package authn

import "time"

// SetClock makes v read the time from now instead of the wall clock, so that
// tests of expiry move time rather than sleep through it.
func SetClock(v *Verifier, now func() time.Time) { v.now = now }
