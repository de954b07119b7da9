package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus series, on a registry of its own.
type metrics struct {
	registry  *prometheus.Registry
	decisions *prometheus.CounterVec
	allowed   map[string]prometheus.Counter
	denied    map[string]prometheus.Counter
}

// knownMethods get pre-made counters, so the hot path does no label hashing.
var knownMethods = []string{
	"initialize", "notifications/initialized", "ping", "tools/list", "tools/call",
	"resources/list", "resources/templates/list", "resources/read", "prompts/list", "prompts/get",
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpguard_policy_decisions_total",
			Help: "Policy decisions on MCP requests, by method and result.",
		}, []string{"method", "result"}),
		allowed: map[string]prometheus.Counter{},
		denied:  map[string]prometheus.Counter{},
	}
	m.registry.MustRegister(m.decisions, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, method := range knownMethods {
		m.allowed[method] = m.decisions.WithLabelValues(method, "allow")
		m.denied[method] = m.decisions.WithLabelValues(method, "deny")
	}
	return m
}

func (m *metrics) decision(method string, allow bool) {
	set := m.denied
	result := "deny"
	if allow {
		set, result = m.allowed, "allow"
	}
	if c, ok := set[method]; ok {
		c.Inc()
		return
	}
	m.decisions.WithLabelValues(method, result).Inc()
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}
