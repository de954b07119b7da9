package server

import (
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/policy"
)

// metrics are the server's Prometheus series, on a registry of its own.
// Everything counted on the request path is a series made in advance (a
// counter or observer held in a map or a field): a request costs an atomic
// add, never a label lookup in the client library.
type metrics struct {
	registry  *prometheus.Registry
	decisions *prometheus.CounterVec
	allowed   map[string]prometheus.Counter
	denied    map[string]prometheus.Counter
	// tools counts tools/call decisions by tool: one pair of series per
	// registered tool, made once the catalog is read (registerTools), and
	// one pair for every other name a caller sends.
	toolVec      *prometheus.CounterVec
	tools        map[string]allowDeny
	unregistered allowDeny
	// decisionTime and listTime observe one evaluation of the allow and
	// the visible query.
	decisionTime, listTime prometheus.Observer
	// verifyOK and verifyFailed observe bearer token verifications.
	verifyOK, verifyFailed prometheus.Observer
	// exchangeOK and exchangeFailed observe requests to Keycloak's token endpoint.
	exchangeOK, exchangeFailed prometheus.Observer
	// listHits and listMisses count lists: a visible set the engine
	// reused, one it evaluated.
	listHits, listMisses atomic.Int64
	// caches are the caches whose lookups are counted, read when scraped.
	caches []cacheSource
	// proxyTokens counts the OAuth proxy's tokens presented, by result.
	proxyTokens *prometheus.CounterVec
}

// allowDeny is the pair of series of one label set, by result.
type allowDeny struct{ allow, deny prometheus.Counter }

func (a allowDeny) inc(allow bool) {
	if allow {
		a.allow.Inc()
	} else {
		a.deny.Inc()
	}
}

// unregisteredTool is the tool label of a tools/call naming no registered
// tool: MCP tool names hold no parentheses, so no tool has it, and names
// callers make up cannot grow the series.
const unregisteredTool = "(unregistered)"

// knownMethods get pre-made counters, so the hot path does no label hashing.
var knownMethods = []string{
	"initialize", "notifications/initialized", "ping", "tools/list", "tools/call",
	"resources/list", "resources/templates/list", "resources/read", "prompts/list", "prompts/get",
}

// Buckets, in seconds. A decision takes tens of microseconds; a cached token
// a microsecond, a new one a signature check, the first one a key fetch.
var (
	evaluationBuckets   = []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.05, 0.1, 0.25}
	verificationBuckets = []float64{1e-6, 5e-6, 2.5e-5, 1e-4, 5e-4, 2.5e-3, 1e-2, 0.05, 0.25, 1, 5, 10}
)

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpguard_policy_decisions_total",
			Help: "Policy decisions on MCP requests, by method and result.",
		}, []string{"method", "result"}),
		toolVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mcpguard_tool_decisions_total",
			Help: "Policy decisions on tools/call, by registered tool and result; tool=\"" + unregisteredTool + "\": a name no tool has.",
		}, []string{"tool", "result"}),
		allowed:     map[string]prometheus.Counter{},
		denied:      map[string]prometheus.Counter{},
		tools:       map[string]allowDeny{},
		proxyTokens: newProxyTokenCounter(),
	}
	evaluation := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mcpguard_policy_evaluation_duration_seconds",
		Help:    "Time of one policy evaluation, by query: allow (every request), visible (a list's filtering).",
		Buckets: evaluationBuckets,
	}, []string{"query"})
	verification := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mcpguard_token_verification_duration_seconds",
		Help:    "Time to verify a bearer token, cache hits included, by result.",
		Buckets: verificationBuckets,
	}, []string{"result"})
	exchanges := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mcpguard_keycloak_exchange_duration_seconds",
		Help:    "Time of one request to Keycloak's token endpoint (each retry counted), by result.",
		Buckets: prometheus.DefBuckets,
	}, []string{"result"})
	m.caches = []cacheSource{{"lists", func() (int64, int64) { return m.listHits.Load(), m.listMisses.Load() }}}
	m.registry.MustRegister(m.decisions, m.toolVec, evaluation, verification, exchanges, m.proxyTokens, &cacheCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, method := range knownMethods {
		m.allowed[method] = m.decisions.WithLabelValues(method, "allow")
		m.denied[method] = m.decisions.WithLabelValues(method, "deny")
	}
	m.unregistered = m.toolPair(unregisteredTool)
	m.decisionTime, m.listTime = evaluation.WithLabelValues("allow"), evaluation.WithLabelValues("visible")
	m.verifyOK, m.verifyFailed = verification.WithLabelValues("ok"), verification.WithLabelValues("failed")
	m.exchangeOK, m.exchangeFailed = exchanges.WithLabelValues("ok"), exchanges.WithLabelValues("failed")
	return m
}

func (m *metrics) toolPair(name string) allowDeny {
	return allowDeny{m.toolVec.WithLabelValues(name, "allow"), m.toolVec.WithLabelValues(name, "deny")}
}

// registerTools makes the series of each registered tool. It runs once, at
// start, before the first request: the map is only read afterwards.
func (m *metrics) registerTools(names []string) {
	for _, name := range names {
		m.tools[name] = m.toolPair(name)
	}
}

// decision counts one decision on a request, by method.
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
	// Methods the SDK knows beyond knownMethods: a bounded set.
	m.decisions.WithLabelValues(method, result).Inc()
}

// decided records an evaluation of the allow query begun at began: its
// time, its count by method, and for tools/call by tool.
func (m *metrics) decided(method string, tool *policy.Tool, began time.Time, allow bool) {
	m.decisionTime.Observe(time.Since(began).Seconds())
	m.decision(method, allow)
	if tool == nil {
		return
	}
	if pair, ok := m.tools[tool.Name]; ok {
		pair.inc(allow)
		return
	}
	m.unregistered.inc(allow)
}

// listed records an evaluation of the visible query begun at began.
func (m *metrics) listed(began time.Time) {
	m.listTime.Observe(time.Since(began).Seconds())
}

// listCache counts a list: its visible set reused by the engine, or evaluated.
func (m *metrics) listCache(hit bool) {
	if hit {
		m.listHits.Add(1)
	} else {
		m.listMisses.Add(1)
	}
}

// verified records a token verification begun at began.
func (m *metrics) verified(began time.Time, err error) {
	o := m.verifyOK
	if err != nil {
		o = m.verifyFailed
	}
	o.Observe(time.Since(began).Seconds())
}

// exchanged records one request to Keycloak's token endpoint.
func (m *metrics) exchanged(elapsed time.Duration, err error) {
	o := m.exchangeOK
	if err != nil {
		o = m.exchangeFailed
	}
	o.Observe(elapsed.Seconds())
}

// cacheSource is a cache whose lookups are counted: lists (the filtered
// lists, counted here), tokens (verified bearer tokens, counted by the
// verifier) and roles (Keycloak's answers, counted by the role source).
type cacheSource struct {
	name string
	read func() (hits, misses int64)
}

// cacheCollector reads every cache's counters when scraped, as one family.
type cacheCollector struct{ m *metrics }

var cacheDesc = prometheus.NewDesc("mcpguard_cache_requests_total",
	"Lookups in mcpguard's caches, by cache (tokens: verified bearer tokens; roles: Keycloak's answers; lists: filtered lists) and result (hit or miss).",
	[]string{"cache", "result"}, nil)

func (c *cacheCollector) Describe(ch chan<- *prometheus.Desc) { ch <- cacheDesc }

func (c *cacheCollector) Collect(ch chan<- prometheus.Metric) {
	for _, src := range c.m.caches {
		hits, misses := src.read()
		ch <- prometheus.MustNewConstMetric(cacheDesc, prometheus.CounterValue, float64(hits), src.name, "hit")
		ch <- prometheus.MustNewConstMetric(cacheDesc, prometheus.CounterValue, float64(misses), src.name, "miss")
	}
}

// counterFunc is a counter read when scraped, with fixed labels.
func counterFunc(name, help string, labels prometheus.Labels, read func() float64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, read)
}

// watchVerifier exposes the verifier's counters: its cache and the fetches
// of the issuer's signing keys (JWKS), read when scraped.
func (m *metrics) watchVerifier(v *authn.Verifier) {
	const jwksHelp = "Fetches of the token issuer's signing keys (JWKS), by result; a failed fetch keeps the keys fetched before."
	m.caches = append(m.caches, cacheSource{"tokens", func() (int64, int64) { st := v.Stats(); return st.CacheHits, st.CacheMisses }})
	m.registry.MustRegister(
		counterFunc("mcpguard_jwks_refreshes_total", jwksHelp, prometheus.Labels{"result": "ok"}, func() float64 { return float64(v.Stats().KeyFetches) }),
		counterFunc("mcpguard_jwks_refreshes_total", jwksHelp, prometheus.Labels{"result": "failed"}, func() float64 { return float64(v.Stats().KeyFetchFailures) }),
	)
}

// watchKeycloak exposes the Keycloak role source's counters.
func (m *metrics) watchKeycloak(kc *exchange.Keycloak) {
	m.caches = append(m.caches, cacheSource{"roles", func() (int64, int64) { return kc.CacheHits(), kc.CacheMisses() }})
	m.registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mcpguard_keycloak_exchanges_total",
			Help: "Token exchanges sent to Keycloak (cache misses, retries included).",
		}, func() float64 { return float64(kc.Exchanges()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "mcpguard_keycloak_refusals_total",
			Help: "Callers refused by the Keycloak role source: by Keycloak, by the checks of its token, or for a token about to expire.",
		}, func() float64 { return float64(kc.Refusals()) }),
	)
}

// policyCollector reads the policy engine's Status when scraped: which
// policy is in force, since when, and how many changes were swapped in or
// refused (folder reloads and bundle activations alike).
type policyCollector struct {
	engine                                        *policy.Engine
	info, ready, loaded, reloads, failures, stale *prometheus.Desc
	dropped                                       *prometheus.Desc
}

func newPolicyCollector(e *policy.Engine) *policyCollector {
	return &policyCollector{
		engine: e,
		info: prometheus.NewDesc("mcpguard_policy_info", "The policy in force: its revision and where it comes from (dir or bundle); always 1.",
			[]string{"revision", "source"}, nil),
		ready:  prometheus.NewDesc("mcpguard_policy_ready", "1 once a policy is in force.", nil, nil),
		loaded: prometheus.NewDesc("mcpguard_policy_loaded_timestamp_seconds", "When the policy in force was swapped in (Unix time).", nil, nil),
		reloads: prometheus.NewDesc("mcpguard_policy_reloads_total",
			"Policies swapped in, the first included.", nil, nil),
		failures: prometheus.NewDesc("mcpguard_policy_reload_failures_total",
			"Policy changes refused (a reload or bundle that did not compile, failed its tests, or was refused by OPA); the last good policy stays in force.", nil, nil),
		stale: prometheus.NewDesc("mcpguard_policy_last_change_failed",
			"1 while the last policy change was refused (the policy in force is older than the one offered).", nil, nil),
		dropped: prometheus.NewDesc("mcpguard_decision_logs_dropped_total",
			"Decision-log events dropped because the queue to the decision-log plugin was full.", nil, nil),
	}
}

func (c *policyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.ready, c.loaded, c.reloads, c.failures, c.stale, c.dropped} {
		ch <- d
	}
}

func (c *policyCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.engine.Status()
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, st.Revision, st.Source)
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, boolValue(st.Ready))
	if !st.Loaded.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.loaded, prometheus.GaugeValue, float64(st.Loaded.UnixNano())/1e9)
	}
	ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(st.Reloads))
	ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(st.Failures))
	ch <- prometheus.MustNewConstMetric(c.stale, prometheus.GaugeValue, boolValue(st.LastError != nil))
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.LogsDropped))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// MetricsHandler serves the metrics listener (METRICS_ADDR): GET /metrics,
// and /healthz and /readyz for probes that reach the pod on this port. It
// needs no token, so it answers only requests addressed to an IP address or
// localhost: a page that reaches it by DNS rebinding names a host of its own.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.Handle("GET /readyz", s.readiness.handler(true))
	if s.cfg.Pprof {
		// Go's profiles, for measuring the server under load: stacks and
		// counts, not memory's contents. Importing net/http/pprof also
		// registers them on http.DefaultServeMux, which nothing here serves.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
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
