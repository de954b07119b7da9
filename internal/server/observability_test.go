package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// These tests cover what an operator reads: /metrics (bounded series,
// latencies, caches, key fetches, the policy's state), /healthz and /readyz
// (each dependency failing in turn, and nothing secret in the answer).

// observed is a server with auth on, whose token issuer (the dev identity
// provider on loopback) can be taken down and brought back.
type observed struct {
	s      *Server
	h      http.Handler
	iss    *devidp.Issuer
	issuer *gate // the issuer's URL; down() makes it answer 503
	logs   *syncBuffer
}

// gate is a loopback HTTP server that passes requests to a handler while
// up, answers 503 while down, and counts what reached it.
type gate struct {
	*httptest.Server
	down atomic.Bool
	hits atomic.Int64
}

func newGate(t *testing.T, h http.Handler) *gate {
	t.Helper()
	g := &gate{}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.hits.Add(1)
		if g.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(g.Close)
	return g
}

// newObserved builds a server with vars over a development configuration
// with auth; opts.Roles nil means the fake role source unless vars choose
// ROLE_SOURCE.
func newObserved(t *testing.T, vars map[string]string, opts Options) *observed {
	t.Helper()
	key, err := devidp.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var issHandler http.Handler
	g := newGate(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { issHandler.ServeHTTP(w, r) }))
	iss, err := devidp.New(g.URL, protectTenant, key)
	if err != nil {
		t.Fatal(err)
	}
	issHandler = iss.Handler()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(echoPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	src := map[string]string{
		"ENVIRONMENT": "development", "AZURE_AUTHORITY_HOST": g.URL, "AZURE_TENANT_ID": protectTenant,
		"AZURE_CLIENT_ID": protectClient, "AZURE_APP_ID_URI": "api://mcpguard", "AZURE_BASE_URL": protectBase,
		"AZURE_REQUIRED_SCOPES": "read", "STATELESS": "true", "POLICY_DIR": dir, "DENIAL_DETAIL": "true",
	}
	for k, v := range vars {
		src[k] = v
	}
	cfg, err := config.FromSource(func(name string) (string, bool) { v, ok := src[name]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	o := &observed{iss: iss, issuer: g, logs: &syncBuffer{}}
	opts.Logger = slog.New(slog.NewTextHandler(o.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if opts.Roles == nil && vars["ROLE_SOURCE"] == "" {
		opts.Roles = &fakeRoles{auth: &exchange.Authorization{Source: "fake", Roles: []string{"analyst"}}}
	}
	opts.Register = func(m *mcp.Server) {
		m.AddTool(&mcp.Tool{Name: "open", InputSchema: &jsonSchemaObject}, okTool)
		m.AddTool(&mcp.Tool{Name: "closed", InputSchema: &jsonSchemaObject}, okTool)
	}
	s, err := New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		<-s.Linted()
		_ = s.Close(context.Background())
	})
	o.s, o.h = s, s.Handler()
	return o
}

func (o *observed) token(t *testing.T, user string) string {
	t.Helper()
	tok, err := o.iss.Mint(devidp.Token{User: user, Audience: protectClient, Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// call sends one tools/call over HTTP and returns the response body.
func (o *observed) call(t *testing.T, token, tool string, hdr map[string]string) string {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + strconv.Quote(tool) + `,"arguments":{}}}`
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	r.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	r.Header.Set("Authorization", "Bearer "+token)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	o.h.ServeHTTP(rec, r)
	return rec.Body.String()
}

// get answers a GET on h.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1:9464"+path, nil))
	return rec.Code, rec.Body.String()
}

// sample reads one series, as the exposition format prints it (labels in
// alphabetical order), from a scrape; -1 when it is not there.
func sample(t *testing.T, scrape, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q", line)
			}
			return f
		}
	}
	return -1
}

func scrape(t *testing.T, s *Server) string {
	t.Helper()
	code, body := get(t, s.MetricsHandler(), "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	return body
}

// Decisions on tools/call are counted by tool, in series made at start for
// the registered tools: names callers make up all land in one pair, so a
// caller cannot grow the metrics. Each evaluation is timed.
func TestToolDecisionsBoundedByTheCatalog(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	before := scrape(t, s)
	for _, series := range []string{
		`mcpguard_tool_decisions_total{result="allow",tool="open"}`, `mcpguard_tool_decisions_total{result="deny",tool="closed"}`,
		`mcpguard_tool_decisions_total{result="deny",tool="(unregistered)"}`,
	} {
		if v := sample(t, before, series); v != 0 {
			t.Errorf("%s before any call: %v, want a series made at start (0)", series, v)
		}
	}
	ex := extra(t, s, user("oid-m1"))
	ctx := context.Background()
	call := func(name string) {
		_, _ = s.authorizer()((&recorder{}).handle)(ctx, "tools/call", &mcp.CallToolRequest{Extra: ex, Params: &mcp.CallToolParamsRaw{Name: name}})
	}
	call("open")
	call("open")
	call("closed")
	for i := range 40 {
		call(fmt.Sprintf("made-up-%d", i))
	}
	after := scrape(t, s)
	if n := strings.Count(after, "\nmcpguard_tool_decisions_total{"); n != 2*(3+1) {
		t.Errorf("%d tool series, want 8: one pair per registered tool (3) and one for the rest\n%s", n, after)
	}
	want := map[string]float64{
		`mcpguard_tool_decisions_total{result="allow",tool="open"}`:                   2,
		`mcpguard_tool_decisions_total{result="deny",tool="closed"}`:                  1,
		`mcpguard_policy_decisions_total{method="tools/call",result="allow"}`:         2 + sample(t, after, `mcpguard_tool_decisions_total{result="allow",tool="(unregistered)"}`),
		`mcpguard_policy_evaluation_duration_seconds_count{query="allow"}`:            43,
		`mcpguard_policy_evaluation_duration_seconds_count{query="visible"}`:          0,
		`mcpguard_policy_decisions_total{method="tools/call",result="deny"}`:          1 + sample(t, after, `mcpguard_tool_decisions_total{result="deny",tool="(unregistered)"}`),
		`mcpguard_tool_decisions_total{result="deny",tool="(unregistered)"}`:          40 - sample(t, after, `mcpguard_tool_decisions_total{result="allow",tool="(unregistered)"}`),
		`mcpguard_policy_evaluation_duration_seconds_bucket{query="allow",le="+Inf"}`: 43,
	}
	for series, v := range want {
		if got := sample(t, after, series); got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
	if strings.Contains(after, "made-up") {
		t.Error("a made-up tool name reached the metrics")
	}
}

// Lists whose visible set the engine reused (hits) and evaluated (misses)
// are counted, and each evaluation timed: the first list starts the
// engine's analysis, the second is evaluated and kept, the rest reused.
func TestListCacheCounted(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	ex := extra(t, s, user("oid-m2"))
	list := func() {
		t.Helper()
		rec := &recorder{res: &mcp.ListToolsResult{Tools: []*mcp.Tool{{Name: "open"}, {Name: "closed"}}}}
		if _, err := s.authorizer()(rec.handle)(context.Background(), "tools/list", &mcp.ListToolsRequest{Extra: ex, Params: &mcp.ListToolsParams{}}); err != nil {
			t.Fatal(err)
		}
	}
	list()
	policy.WaitReuseAnalysis(s.engine)
	list()
	list()
	list()
	m := scrape(t, s)
	for series, want := range map[string]float64{
		`mcpguard_cache_requests_total{cache="lists",result="miss"}`:         2,
		`mcpguard_cache_requests_total{cache="lists",result="hit"}`:          2,
		`mcpguard_policy_evaluation_duration_seconds_count{query="visible"}`: 2,
	} {
		if got := sample(t, m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// The policy in force is on /metrics as the engine reports it.
func TestPolicyStatusOnMetrics(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	st := s.engine.Status()
	m := scrape(t, s)
	info := fmt.Sprintf(`mcpguard_policy_info{revision=%q,source=%q}`, st.Revision, st.Source)
	if st.Revision == "" || sample(t, m, info) != 1 || sample(t, m, "mcpguard_policy_ready") != 1 ||
		sample(t, m, "mcpguard_policy_reload_failures_total") != float64(st.Failures) ||
		sample(t, m, "mcpguard_policy_reloads_total") != float64(st.Reloads) ||
		sample(t, m, "mcpguard_policy_last_change_failed") != 0 ||
		sample(t, m, "mcpguard_policy_loaded_timestamp_seconds") < float64(time.Now().Add(-time.Hour).Unix()) {
		t.Fatalf("policy state %+v not on /metrics:\n%s", st, grepLines(m, "mcpguard_policy_"))
	}
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Token verification is timed by result; the verified-token cache's hits and
// misses and the issuer's key fetches are counted.
func TestVerificationAndKeyFetchesCounted(t *testing.T) {
	o := newObserved(t, nil, Options{})
	tok := o.token(t, "alice")
	o.call(t, tok, "open", nil)
	o.call(t, tok, "open", nil)
	o.call(t, "not-a-token", "open", nil)
	m := scrape(t, o.s)
	for series, want := range map[string]float64{
		`mcpguard_token_verification_duration_seconds_count{result="ok"}`:     2,
		`mcpguard_token_verification_duration_seconds_count{result="failed"}`: 1,
		`mcpguard_cache_requests_total{cache="tokens",result="hit"}`:          1,
		`mcpguard_cache_requests_total{cache="tokens",result="miss"}`:         2,
		`mcpguard_jwks_refreshes_total{result="ok"}`:                          1,
		`mcpguard_jwks_refreshes_total{result="failed"}`:                      0,
	} {
		if got := sample(t, m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// readyz reads /readyz from h.
func readyz(t *testing.T, h http.Handler) (int, readyReport, string) {
	t.Helper()
	code, body := get(t, h, "/readyz")
	var r readyReport
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, r, body
}

// later makes the readiness checks' last round too old to be reused.
func later(s *Server) {
	s.readiness.mu.Lock()
	s.readiness.at = time.Time{}
	s.readiness.mu.Unlock()
}

// /healthz answers while the process serves, whatever its dependencies;
// /readyz names every check, and is ready when the configured ones pass.
func TestHealthzAndReadyz(t *testing.T) {
	o := newObserved(t, nil, Options{})
	for _, h := range []http.Handler{o.h, o.s.MetricsHandler()} {
		if code, body := get(t, h, "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != `{"status":"ok"}` {
			t.Fatalf("/healthz: %d %s", code, body)
		}
		code, r, body := readyz(t, h)
		if code != http.StatusOK || r.Status != "ready" {
			t.Fatalf("/readyz: %d %s", code, body)
		}
		st := o.s.engine.Status()
		want := map[string]string{"policy": checkOK, "jwks": checkOK, "keycloak": checkNotConfigured, "redis": checkNotConfigured}
		for name, status := range want {
			if r.Checks[name].Status != status {
				t.Errorf("check %s: %+v, want %s", name, r.Checks[name], status)
			}
		}
		if len(r.Checks) != len(want) || r.Checks["policy"].Revision != st.Revision || r.Checks["policy"].Source != st.Source {
			t.Errorf("/readyz checks: %s", body)
		}
	}
	o.issuer.down.Store(true)
	if code, _ := get(t, o.h, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz followed a dependency: %d", code)
	}
}

// JWKS unreachable: a replica that has never had the issuer's keys cannot
// verify a token, and is not ready until it has them. /readyz fetches them
// itself (no token has to arrive first), and says so once they come.
func TestReadyzJWKSUnreachable(t *testing.T) {
	o := newObserved(t, nil, Options{})
	o.issuer.down.Store(true)
	code, r, body := readyz(t, o.h)
	if code != http.StatusServiceUnavailable || r.Status != "not ready" || r.Checks["jwks"].Status != checkFailed ||
		r.Checks["policy"].Status != checkOK {
		t.Fatalf("/readyz with the issuer down: %d %s", code, body)
	}
	noSecrets(t, body, o.issuer.URL, strings.TrimPrefix(o.issuer.URL, "http://"), "503")
	if !strings.Contains(o.logs.String(), "readiness check failed") {
		t.Error("the failure was not logged")
	}
	o.issuer.down.Store(false)
	// The key set's first fetch is retried at most once a second.
	deadline := time.Now().Add(10 * time.Second)
	for {
		later(o.s)
		code, _, body = readyz(t, o.h)
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not ready with the issuer back: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(o.logs.String(), "readiness check passes again") {
		t.Error("the recovery was not logged")
	}
}

// noSecrets fails if the body holds any of words.
func noSecrets(t *testing.T, body string, words ...string) {
	t.Helper()
	for _, w := range words {
		if w != "" && strings.Contains(body, w) {
			t.Errorf("/readyz says %q: %s", w, body)
		}
	}
}

// fakeKeycloak serves a realm's OpenID configuration and refuses every
// token exchange (invalid_grant), behind a gate.
func fakeKeycloak(t *testing.T) *gate {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /realms/mcp/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"issuer":"x"}`))
	})
	mux.HandleFunc("POST /realms/mcp/protocol/openid-connect/token", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"no such user"}`))
	})
	return newGate(t, mux)
}

func keycloakVars(kc *gate) map[string]string {
	return map[string]string{"ROLE_SOURCE": "keycloak", "KEYCLOAK_SERVER_URL": kc.URL, "KEYCLOAK_REALM": "mcp",
		"KEYCLOAK_CLIENT_ID": "mcpguard", "KEYCLOAK_CLIENT_SECRET": "kc-client-s3cret"}
}

// Keycloak down: no caller gets roles, so the replica is not ready. A flood
// of /readyz makes one round of checks a second, not one request each.
func TestReadyzKeycloakDown(t *testing.T) {
	kc := fakeKeycloak(t)
	o := newObserved(t, keycloakVars(kc), Options{})
	if code, r, body := readyz(t, o.h); code != http.StatusOK || r.Checks["keycloak"].Status != checkOK {
		t.Fatalf("/readyz with Keycloak up: %d %s", code, body)
	}
	kc.down.Store(true)
	later(o.s)
	code, r, body := readyz(t, o.h)
	if code != http.StatusServiceUnavailable || r.Checks["keycloak"].Status != checkFailed || r.Checks["jwks"].Status != checkOK {
		t.Fatalf("/readyz with Keycloak down: %d %s", code, body)
	}
	noSecrets(t, body, "kc-client-s3cret", kc.URL, strings.TrimPrefix(kc.URL, "http://"))

	kc.down.Store(false)
	later(o.s)
	before := kc.hits.Load()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			rec := httptest.NewRecorder()
			o.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		})
	}
	wg.Wait()
	if n := kc.hits.Load() - before; n != 1 {
		t.Fatalf("20 /readyz at once asked Keycloak %d times, want 1", n)
	}
}

// Each request to Keycloak's token endpoint is timed, and the role cache's
// hits and misses counted: a refusal is remembered, so the second call is
// a hit.
func TestKeycloakExchangesTimed(t *testing.T) {
	kc := fakeKeycloak(t)
	o := newObserved(t, keycloakVars(kc), Options{})
	tok := o.token(t, "alice")
	for range 2 {
		if body := o.call(t, tok, "open", nil); !strings.Contains(body, "refused") {
			t.Fatalf("a caller Keycloak refuses: %s", body)
		}
	}
	m := scrape(t, o.s)
	for series, want := range map[string]float64{
		`mcpguard_keycloak_exchange_duration_seconds_count{result="failed"}`: 1,
		`mcpguard_keycloak_exchange_duration_seconds_count{result="ok"}`:     0,
		`mcpguard_cache_requests_total{cache="roles",result="miss"}`:         1,
		`mcpguard_cache_requests_total{cache="roles",result="hit"}`:          1,
		`mcpguard_keycloak_exchanges_total`:                                  1,
	} {
		if got := sample(t, m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
}

// Redis down, with a real redis-server: the replica is not ready while
// Redis does not answer, and ready again when it does. Neither the password
// nor the address appears in the answer.
func TestReadyzRedisDown(t *testing.T) {
	addr, stop := storetest.RedisServer(t)
	url := "redis://:" + storetest.Password + "@" + addr
	o := newObserved(t, map[string]string{"REDIS_URL": url, "STORAGE_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, Options{})
	if code, r, body := readyz(t, o.h); code != http.StatusOK || r.Checks["redis"].Status != checkOK {
		t.Fatalf("/readyz with Redis up: %d %s", code, body)
	}
	stop()
	later(o.s)
	code, r, body := readyz(t, o.h)
	if code != http.StatusServiceUnavailable || r.Checks["redis"].Status != checkFailed || r.Checks["jwks"].Status != checkOK {
		t.Fatalf("/readyz with Redis down: %d %s", code, body)
	}
	_, port, _ := net.SplitHostPort(addr)
	noSecrets(t, body, storetest.Password, addr, port)
	if strings.Contains(o.logs.String(), storetest.Password) {
		t.Error("the log holds the Redis password")
	}
}

// A wrong Redis password is a failed check too, not a pass.
func TestReadyzRedisRefusesThePassword(t *testing.T) {
	addr, _ := storetest.RedisServer(t)
	o := newObserved(t, map[string]string{"REDIS_URL": "redis://:wrong-pass@" + addr,
		"STORAGE_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, Options{})
	if code, r, body := readyz(t, o.h); code != http.StatusServiceUnavailable || r.Checks["redis"].Status != checkFailed {
		t.Fatalf("/readyz with a wrong Redis password: %d %s", code, body)
	}
}

// The body of /readyz is JSON built by json.Marshal, with the content type
// and no caching, on both listeners.
func TestReadyzHeaders(t *testing.T) {
	o := newObserved(t, nil, Options{})
	for _, h := range []http.Handler{o.h, o.s.MetricsHandler()} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/readyz", nil))
		if rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("/readyz headers: %v", rec.Header())
		}
		if _, err := io.ReadAll(rec.Body); err != nil {
			t.Fatal(err)
		}
	}
}

// A refused policy change leaves the last good policy in force and the
// replica ready; /metrics counts it, and /readyz says so: with the
// compiler's file:line on the metrics listener, which is private, and
// without it on the MCP listener, where it would show a prober the rules.
func TestRefusedPolicyChangeVisible(t *testing.T) {
	o := newObserved(t, nil, Options{})
	before := o.s.engine.Status()
	broken := filepath.Join(o.s.cfg.PolicyDir, "broken.rego")
	if err := os.WriteFile(broken, []byte("package mcp.authz\n\nallow if {\n\tinput.secret_rule_name ==\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := o.s.engine.Reload(context.Background()); err == nil {
		t.Fatal("a policy that does not parse was swapped in")
	}
	st := o.s.engine.Status()
	if st.LastError == nil || st.Failures != before.Failures+1 || st.Revision != before.Revision {
		t.Fatalf("status after a refused change: %+v (before %+v)", st, before)
	}
	m := scrape(t, o.s)
	if sample(t, m, "mcpguard_policy_last_change_failed") != 1 || sample(t, m, "mcpguard_policy_reload_failures_total") != float64(st.Failures) {
		t.Fatalf("a refused change not on /metrics:\n%s", grepLines(m, "mcpguard_policy_"))
	}
	code, private, body := readyz(t, o.s.MetricsHandler())
	if code != http.StatusOK || !strings.Contains(private.Checks["policy"].LastChange, "broken.rego:") {
		t.Fatalf("metrics listener /readyz: %d %s", code, body)
	}
	code, public, body := readyz(t, o.h)
	if code != http.StatusOK || public.Checks["policy"].LastChange == "" || public.Checks["policy"].ChangesRefused != st.Failures {
		t.Fatalf("MCP listener /readyz: %d %s", code, body)
	}
	noSecrets(t, body, "broken.rego", "secret_rule_name", o.s.cfg.PolicyDir)
	// The next good change clears it. (A new revision: going back to the
	// revision in force is no change, and the engine keeps the error.)
	if err := os.WriteFile(broken, []byte("package mcp.authz\n\nnote := \"fixed\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := o.s.engine.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, r, body := readyz(t, o.h); r.Checks["policy"].LastChange != "" {
		t.Fatalf("after a good reload: %s", body)
	}
}

// Go's profiles are served on the metrics listener only when PPROF=true,
// and never on the MCP listener.
func TestPprofOnlyWhenAsked(t *testing.T) {
	off := newObserved(t, nil, Options{})
	if code, _ := get(t, off.s.MetricsHandler(), "/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("profiles served without PPROF: %d", code)
	}
	on := newObserved(t, map[string]string{"PPROF": "true"}, Options{})
	if code, body := get(t, on.s.MetricsHandler(), "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("PPROF=true: %d %.200s", code, body)
	}
	if code, _ := get(t, on.h, "/debug/pprof/"); code == http.StatusOK {
		t.Fatal("profiles served on the MCP listener")
	}
}
