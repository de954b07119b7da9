package oauthproxy

import (
	"time"

	dto "github.com/prometheus/client_model/go"
)

// SetClock makes p read the time from now, so that expiry is tested by
// moving a clock rather than sleeping.
func SetClock(p *Proxy, now func() time.Time) { p.now = now }

// Refusals is how many requests p refused for reason.
func Refusals(p *Proxy, reason string) float64 {
	var m dto.Metric
	if err := p.refusals.WithLabelValues(reason).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// PublicAddr exposes the address rule of metadata-document fetches.
var PublicAddr = publicAddr
