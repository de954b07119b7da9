package server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

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
	// proxyTokens counts the OAuth proxy's tokens presented, by result.
	proxyTokens *prometheus.CounterVec
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
		allowed:     map[string]prometheus.Counter{},
		denied:      map[string]prometheus.Counter{},
		proxyTokens: newProxyTokenCounter(),
	}
	m.registry.MustRegister(m.decisions, m.proxyTokens, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

// MetricsHandler serves GET /metrics and nothing else, for the metrics
// listener (METRICS_ADDR). It needs no token, so it answers only requests
// addressed to an IP address or localhost: a page that reaches it by DNS
// rebinding names a host of its own.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !addressedByIP(r.Host) {
			http.Error(w, "metrics are served to requests addressed to an IP address or localhost", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// addressedByIP reports whether a Host header names an IP address or localhost.
func addressedByIP(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}
