package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/redis/go-redis/v9"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// kcEnv runs mcpguard with roles from the real Keycloak.
func kcEnv(t *testing.T, kc *keycloak, grant string, extra map[string]string) *env {
	vars := kc.serverVars(grant)
	for k, v := range extra {
		vars[k] = v
	}
	return start(t, kc.issuer, vars)
}

func call(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) error {
	t.Helper()
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: name, Arguments: args})
	if err == nil && res.IsError {
		return fmt.Errorf("tool error: %v", res.Content)
	}
	return err
}

// An Entra app role mapped to data_reader in Keycloak lets alice read critical
// data and not approve budgets; the client role writer on api lets her write.
func TestKeycloakTokenExchangeRoles(t *testing.T) {
	kc := startKeycloak(t)
	e := kcEnv(t, kc, "token-exchange", nil)
	cs := e.connect(t, e.token(t, devidp.Token{User: "kc-alice", Roles: []string{"data_reader", "api.writer"}}))
	if err := call(t, cs, "read_critical_data", map[string]any{"query": "q"}); err != nil {
		t.Fatalf("data_reader via Keycloak: %v", err)
	}
	if err := call(t, cs, "write_api_data", map[string]any{"key": "k", "value": "v"}); err != nil {
		t.Fatalf("client role api/writer via Keycloak: %v", err)
	}
	denial(t, call(t, cs, "approve_budget", map[string]any{"department": "x", "amount": 1}))
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "get_current_user", Arguments: map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	out := fmt.Sprint(res.StructuredContent)
	if !strings.Contains(out, "role_source:keycloak") {
		t.Fatalf("roles not from Keycloak: %s", out)
	}
}

// The RFC 7523 JWT authorization grant, end to end: the user is linked by a
// first token exchange (the grant imports no user), then served by the grant.
func TestKeycloakJWTBearerGrant(t *testing.T) {
	kc := startKeycloak(t)
	link := kcEnv(t, kc, "token-exchange", nil)
	tok := link.token(t, devidp.Token{User: "kc-bob", Roles: []string{"finance", "executive"}})
	if err := call(t, link.connect(t, tok), "get_current_user", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	e := kcEnv(t, kc, "jwt-bearer", nil)
	cs := e.connect(t, e.token(t, devidp.Token{User: "kc-bob", Roles: []string{"finance", "executive"}}))
	if err := call(t, cs, "approve_budget", map[string]any{"department": "it", "amount": 10}); err != nil {
		t.Fatalf("finance+executive via the JWT grant: %v", err)
	}
	denial(t, call(t, cs, "read_critical_data", map[string]any{"query": "q"}))
}

// metric reads a counter from the server's metrics handler (served on
// METRICS_ADDR, not on the MCP listener).
func metric(t *testing.T, e *env, name string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	e.Server.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://127.0.0.1/metrics", nil))
	b := rec.Body.Bytes()
	m := regexp.MustCompile(`(?m)^` + name + ` (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// 50 concurrent first calls with one new token make exactly one exchange,
// counted by the server and by Keycloak's events.
func TestKeycloakConcurrentFirstCallsOneExchange(t *testing.T) {
	kc := startKeycloak(t)
	e := kcEnv(t, kc, "token-exchange", map[string]string{"STATELESS": "true"})
	tok := e.token(t, devidp.Token{User: "kc-carol", Roles: []string{"data_reader"}})
	before, err := kc.exchangeEvents()
	if err != nil {
		t.Fatal(err)
	}
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_critical_data","arguments":{"query":"x"}}}`
	var wg sync.WaitGroup
	codes := make(chan string, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, e.URL, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- err.Error()
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if !strings.Contains(string(b), `"result"`) {
				codes <- string(b)
				return
			}
			codes <- "ok"
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != "ok" {
			t.Fatalf("a concurrent call failed: %s", c)
		}
	}
	if n := metric(t, e, "mcpguard_keycloak_exchanges_total"); n != 1 {
		t.Fatalf("server made %d exchanges for 50 concurrent first calls", n)
	}
	after, err := kc.exchangeEvents()
	if err != nil {
		t.Fatal(err)
	}
	if after-before != 1 {
		t.Fatalf("Keycloak recorded %d exchanges for 50 concurrent first calls", after-before)
	}
}

// A mapper change in Keycloak shows once the cached roles expire (the realm's
// tokens live 60 s; results are reused until 30 s before that).
func TestKeycloakMapperChangeAfterExpiry(t *testing.T) {
	kc := startKeycloak(t)
	e := kcEnv(t, kc, "token-exchange", nil)
	cs := e.connect(t, e.token(t, devidp.Token{User: "kc-dave", Roles: []string{"supervisor"}}))
	if err := call(t, cs, "admin_operation", map[string]any{"operation": "x"}); err != nil {
		t.Fatalf("supervisor: %v", err)
	}
	// The operator changes the mapping: app role supervisor no longer grants it.
	if err := kc.remapMapper("supervisor", "Supervisor.Retired"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.remapMapper("supervisor", "supervisor") })
	// Still cached: the change is not seen yet.
	if err := call(t, cs, "admin_operation", map[string]any{"operation": "x"}); err != nil {
		t.Fatalf("cached roles: %v", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := call(t, cs, "admin_operation", map[string]any{"operation": "x"})
		if err != nil {
			denial(t, err)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the mapper change never showed")
		}
		time.Sleep(2 * time.Second)
	}
}

// Keycloak stopped mid-run: clear refusals for new callers, never an allow;
// a cached caller keeps being served; after the restart, new callers are
// served again.
func TestKeycloakDownThenBack(t *testing.T) {
	kc := startKeycloak(t)
	e := kcEnv(t, kc, "token-exchange", nil)
	cached := e.connect(t, e.token(t, devidp.Token{User: "kc-erin", Roles: []string{"data_reader"}}))
	if err := call(t, cached, "read_critical_data", map[string]any{"query": "q"}); err != nil {
		t.Fatal(err)
	}
	kc.stop()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			kc.restart(t)
		}
	})
	fresh := e.token(t, devidp.Token{User: "kc-frank", Roles: []string{"data_reader"}})
	res := post(t, e.URL, fresh, initBody, nil)
	b := body(t, res)
	if !strings.Contains(b, "-32031") || !strings.Contains(b, "authorization service unavailable") {
		t.Fatalf("Keycloak down, new caller: %d %s", res.StatusCode, b)
	}
	if err := call(t, cached, "read_critical_data", map[string]any{"query": "q"}); err != nil {
		t.Fatalf("cached caller while Keycloak is down: %v", err)
	}
	kc.restart(t)
	restarted = true
	// The exchanges fail fast for exchange.Breaker after the last failure;
	// then the new caller is served. Asked until it is, within a bound: a
	// Keycloak that, still starting, refuses mcpguard's client pauses the
	// exchanges for exchange.ConfigBreaker, so the bound is longer than that.
	var last string
	within := exchange.ConfigBreaker + 15*time.Second
	deadline := time.Now().Add(within)
	for {
		last = body(t, post(t, e.URL, fresh, initBody, nil))
		if strings.Contains(last, `"result"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: a new caller is served once Keycloak is back; the last answer: %s", within, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cs := e.connect(t, fresh)
	if err := call(t, cs, "read_critical_data", map[string]any{"query": "q"}); err != nil {
		t.Fatalf("after Keycloak is back: %v", err)
	}
}

// With Redis as the shared role cache, what Redis holds is sealed: no role,
// claim or token in plain text.
func TestKeycloakRedisCacheSealed(t *testing.T) {
	kc := startKeycloak(t)
	addr, _ := storetest.RedisServer(t)
	host, port, _ := net.SplitHostPort(addr)
	e := kcEnv(t, kc, "token-exchange", map[string]string{
		"REDIS_HOST": host, "REDIS_PORT": port, "REDIS_PASSWORD": storetest.Password,
		"STORAGE_ENCRYPTION_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
	})
	tok := e.token(t, devidp.Token{User: "kc-grace", Roles: []string{"data_reader"}})
	cs := e.connect(t, tok)
	if err := call(t, cs, "read_critical_data", map[string]any{"query": "q"}); err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(&redis.Options{Addr: addr, Password: storetest.Password})
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), "*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("nothing cached in Redis: %v %v", keys, err)
	}
	for _, k := range keys {
		v, _ := rc.Get(context.Background(), k).Bytes()
		for _, plain := range []string{"data_reader", "realm_access", tok[:40]} {
			if strings.Contains(k, plain) || strings.Contains(string(v), plain) {
				t.Fatalf("Redis holds %q in plain text under %s", plain, k)
			}
		}
	}
}

// The official TypeScript SDK client with an Entra-shaped token → mcpguard →
// the real Keycloak → policy → tool: allowed and denied.
func TestTypeScriptKeycloak(t *testing.T) {
	node := needTS(t)
	kc := startKeycloak(t)
	e := kcEnv(t, kc, "token-exchange", nil)
	run := runTS(t, node, e, e.token(t, devidp.Token{User: "kc-heidi", Roles: []string{"data_reader"}}),
		step{"op": "callTool", "name": "read_critical_data", "arguments": map[string]any{"query": "via keycloak"}},
		step{"op": "callTool", "name": "admin_operation", "arguments": map[string]any{"operation": "x"}},
		step{"op": "callTool", "name": "get_current_user", "arguments": map[string]any{}},
	)
	run.connected(t, 3)
	if out := run.structured(t, 0); !strings.Contains(out, "via keycloak") {
		t.Fatalf("allowed call: %s", out)
	}
	if d := run.denied(t, 1); !strings.Contains(strings.Join(d.Reasons, " "), "admin") {
		t.Fatalf("denied call's reasons: %v", d.Reasons)
	}
	if out := run.structured(t, 2); !strings.Contains(out, `"role_source":"keycloak"`) {
		t.Fatalf("roles not from Keycloak: %s", out)
	}
}

// TestKeycloakSubjectBinding: with KEYCLOAK_SUBJECT_CLAIM=entra_oid the
// Keycloak token must name the caller's Entra object id (the harness has
// Keycloak import oid into an admin-only user attribute and map it into its
// access tokens). Both grants serve a bound caller; a Keycloak user linked
// to one Entra identity but recorded as another (an operator's mis-link) is
// refused under the JWT grant, and served without the setting.
func TestKeycloakSubjectBinding(t *testing.T) {
	kc := startKeycloak(t)
	bound := map[string]string{"KEYCLOAK_SUBJECT_CLAIM": "entra_oid"}
	ex := kcEnv(t, kc, "token-exchange", bound)
	ivan := devidp.Token{User: "kc-ivan", Roles: []string{"data_reader"}}
	if err := call(t, ex.connect(t, ex.token(t, ivan)), "read_critical_data", map[string]any{"query": "q"}); err != nil {
		t.Fatalf("token exchange, bound caller: %v", err)
	}
	jb := kcEnv(t, kc, "jwt-bearer", bound)
	if err := call(t, jb.connect(t, jb.token(t, ivan)), "read_critical_data", map[string]any{"query": "q"}); err != nil {
		t.Fatalf("JWT grant, bound caller: %v", err)
	}

	// The operator links judy's Entra subject to a user recorded with
	// someone else's object id, and gives it a role.
	judy := jb.token(t, devidp.Token{User: "kc-judy", Roles: []string{"data_reader"}})
	sub, _ := smokeClaims(t, judy)["sub"].(string)
	r := "/realms/" + kcRealm
	uid := smokeCreateUser(t, kc, "kc-judy-mislinked")
	var user map[string]any
	if _, err := kc.admin("GET", r+"/users/"+uid, nil, &user); err != nil {
		t.Fatal(err)
	}
	user["attributes"] = map[string]any{"entra_oid": []string{devidp.ObjectIDFor("kc-someone-else")}}
	if _, err := kc.admin("PUT", r+"/users/"+uid, user, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.admin("POST", r+"/users/"+uid+"/federated-identity/"+kcIDPAlias,
		map[string]any{"identityProvider": kcIDPAlias, "userId": sub, "userName": "kc-judy"}, nil); err != nil {
		t.Fatal(err)
	}
	var reader map[string]any
	if _, err := kc.admin("GET", r+"/roles/data_reader", nil, &reader); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.admin("POST", r+"/users/"+uid+"/role-mappings/realm", []any{reader}, nil); err != nil {
		t.Fatal(err)
	}
	res := post(t, jb.URL, judy, initBody, nil)
	if b := body(t, res); !strings.Contains(b, "-32031") || strings.Contains(b, `"result"`) {
		t.Fatalf("mis-linked user with the binding checked: %d %s", res.StatusCode, b)
	}
	unbound := kcEnv(t, kc, "jwt-bearer", nil)
	if err := call(t, unbound.connect(t, judy), "read_critical_data", map[string]any{"query": "q"}); err != nil {
		t.Fatalf("the same user without the binding checked (the control): %v", err)
	}
}

// TestKeycloakRefusalsNotRepeated: 20 requests with one token cost one
// Keycloak call when Keycloak refuses the caller (the refusal is remembered
// for that token) and when it refuses mcpguard itself (a rotated client
// secret pauses exchanges); every request is refused, none allowed.
func TestKeycloakRefusalsNotRepeated(t *testing.T) {
	kc := startKeycloak(t)
	for name, c := range map[string]struct {
		grant string
		vars  map[string]string
		user  string
	}{
		// The JWT grant refuses a caller Keycloak has not linked: invalid_grant.
		"caller refused": {"jwt-bearer", nil, fmt.Sprintf("kc-unlinked-%d", time.Now().UnixNano())},
		// Keycloak answers a wrong client secret with 401 unauthorized_client.
		"client secret rotated": {"token-exchange", map[string]string{"KEYCLOAK_CLIENT_SECRET": "rotated-elsewhere"}, "kc-kim"},
	} {
		t.Run(name, func(t *testing.T) {
			e := kcEnv(t, kc, c.grant, c.vars)
			tok := e.token(t, devidp.Token{User: c.user, Roles: []string{"data_reader"}})
			for i := range 20 {
				res := post(t, e.URL, tok, initBody, nil)
				if b := body(t, res); !strings.Contains(b, "-32031") || strings.Contains(b, `"result"`) {
					t.Fatalf("request %d: %d %s", i+1, res.StatusCode, b)
				}
			}
			if n := metric(t, e, "mcpguard_keycloak_exchanges_total"); n != 1 {
				t.Fatalf("20 refused requests with one token made %d Keycloak calls", n)
			}
		})
	}
}
