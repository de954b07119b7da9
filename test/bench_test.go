package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
	"github.com/mcpguard/mcpguard/internal/server"
)

// benchRoles maps app roles role_XX to realm roles and api.role_XX to client roles.
func benchRoles(b testing.TB, nRoles int) string {
	raw, err := policytest.Roles(nRoles)
	if err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "roles.json")
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

type target struct {
	name    string
	url     string
	token   string
	handler http.Handler
}

// benchTargets serves nTools echo tools three ways: mcpguard with Entra
// tokens and the shipped policy scaled to nTools tools and 50 roles
// ("guarded"); the same binary with ENABLE_AUTH=false and an allow-all
// policy ("open"); and the bare Go SDK with no middleware ("bare").
func benchTargets(b *testing.B, nTools int, vars map[string]string) []target {
	return benchTargetsFor(b, nTools, vars, []string{"role_00", "role_13", "role_27", "api.role_03"})
}

// benchTargetsFor is benchTargets with the guarded caller's app roles.
func benchTargetsFor(b *testing.B, nTools int, vars map[string]string, roles []string) []target {
	b.Helper()
	iss := startIssuer(b)
	scaled := b.TempDir()
	if err := policytest.Scaled(filepath.Join(repoRoot(), "policies"), scaled, nTools, 50); err != nil {
		b.Fatal(err)
	}
	allowAll := b.TempDir()
	if err := policytest.AllowAll(allowAll); err != nil {
		b.Fatal(err)
	}
	with := func(m map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range vars {
			out[k] = v
		}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	reg := policytest.RegisterEchoTools(nTools)
	guarded := startWith(b, iss, with(map[string]string{"POLICY_DIR": scaled, "ROLES_FILE": benchRoles(b, 50)}), server.Options{Register: reg})
	open := startWith(b, iss, with(map[string]string{"POLICY_DIR": allowAll, "ENABLE_AUTH": "false"}), server.Options{Register: reg})

	bare := mcp.NewServer(&mcp.Implementation{Name: "bare"}, nil)
	reg(bare)
	stateless := vars["STATELESS"] == "true"
	bareHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return bare },
		&mcp.StreamableHTTPOptions{Stateless: stateless, JSONResponse: stateless})
	bs := httptest.NewServer(bareHandler)
	b.Cleanup(bs.Close)

	<-guarded.Server.Linted()
	<-open.Server.Linted()
	tok := guarded.token(b, devidp.Token{User: "bench", Roles: roles})
	return []target{
		{"guarded", guarded.URL, tok, guarded.Server.Handler()},
		{"open", open.URL, "", open.Server.Handler()},
		{"bare", bs.URL, "", bareHandler},
	}
}

func openSessions(b *testing.B, t target, n int) []*mcp.ClientSession {
	out := make([]*mcp.ClientSession, n)
	for i := range out {
		// Every target's client goes through the same round tripper, so
		// client-side work is equal; only the guarded one sends a token.
		hc := &http.Client{Transport: &bearer{token: t.token, base: http.DefaultTransport}}
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench"}, nil).Connect(context.Background(),
			&mcp.StreamableClientTransport{Endpoint: t.url, HTTPClient: hc}, nil)
		if err != nil {
			b.Fatalf("%s: %v", t.name, err)
		}
		b.Cleanup(func() { _ = cs.Close() })
		out[i] = cs
	}
	return out
}

// interleave runs rounds of `per` operations on each client session of each
// target in turn, rotating the order, and reports each target's throughput
// and the ratios to the first target.
func interleave(b *testing.B, targets []target, clients, per int, op func(target string, cs *mcp.ClientSession) error) {
	if only := os.Getenv("MCPGUARD_BENCH_ONLY"); only != "" { // for profiling one target
		for _, t := range targets {
			if t.name == only {
				targets = []target{t}
			}
		}
	}
	sessions := make([][]*mcp.ClientSession, len(targets))
	for i, t := range targets {
		sessions[i] = openSessions(b, t, clients)
		for _, cs := range sessions[i] { // warm up
			if err := op(t.name, cs); err != nil {
				b.Fatalf("%s: %v", t.name, err)
			}
		}
	}
	spent := make([]time.Duration, len(targets))
	ops := 0
	round := 0
	b.ResetTimer()
	for b.Loop() {
		for k := range targets {
			i := (k + round) % len(targets)
			t0 := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for _, cs := range sessions[i] {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if err := op(targets[i].name, cs); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			spent[i] += time.Since(t0)
			close(errs)
			if err := <-errs; err != nil {
				b.Fatalf("%s: %v", targets[i].name, err)
			}
		}
		ops += clients * per
		round++
	}
	b.StopTimer()
	rate := make([]float64, len(targets))
	for i, t := range targets {
		rate[i] = float64(ops) / spent[i].Seconds()
		b.ReportMetric(rate[i], t.name+"-ops/s")
	}
	for i := 1; i < len(targets); i++ {
		b.ReportMetric(rate[0]/rate[i], targets[0].name+"/"+targets[i].name)
	}
}

func callEcho(_ string, cs *mcp.ClientSession) error {
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: policytest.ToolName(0), Arguments: map[string]any{"text": "hello"}})
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("tool error: %v", res.Content)
	}
	return nil
}

// BenchmarkToolsCall: tools/call throughput over loopback HTTP, 4 clients,
// guarded vs open vs bare, interleaved. One op of b.N is a round of
// 4×50 calls on each target.
func BenchmarkToolsCall(b *testing.B) {
	for _, mode := range []string{"stateful", "stateless"} {
		b.Run(mode, func(b *testing.B) {
			vars := map[string]string{}
			if mode == "stateless" {
				vars["STATELESS"] = "true"
			}
			interleave(b, benchTargets(b, 200, vars), 4, 50, callEcho)
		})
	}
}

// BenchmarkToolsList: tools/list with 1,000 registered tools, filtered by the
// policy (guarded) vs the open and bare servers, 4 clients, 4×10 lists a
// round. "all-visible": the guarded caller holds every role, so all three
// answer the same 1,000 tools and the difference is the filtering alone;
// "three-roles": the realistic caller, who is shown 50 of the 1,000.
// "-uncached": DECISION_REUSE=false, every list evaluated. Every list is
// checked to hold exactly the tools the case claims.
func BenchmarkToolsList(b *testing.B) {
	var all []string
	for i := range 50 {
		all = append(all, policytest.RoleName(i), "api."+policytest.RoleName(i))
	}
	for _, c := range []struct {
		name    string
		roles   []string
		vars    map[string]string
		guarded int // tools the guarded caller is shown
	}{
		{"all-visible", all, nil, 1000},
		{"all-visible-uncached", all, map[string]string{"DECISION_REUSE": "false"}, 1000},
		{"three-roles", []string{"role_00", "role_13", "role_27", "api.role_03"}, nil, 50},
		{"three-roles-uncached", []string{"role_00", "role_13", "role_27", "api.role_03"}, map[string]string{"DECISION_REUSE": "false"}, 50},
	} {
		b.Run(c.name, func(b *testing.B) {
			interleave(b, benchTargetsFor(b, 1000, c.vars, c.roles), 4, 10, func(name string, cs *mcp.ClientSession) error {
				res, err := cs.ListTools(context.Background(), nil)
				if err != nil {
					return err
				}
				want := 1000
				if name == "guarded" {
					want = c.guarded
				}
				if len(res.Tools) != want || res.NextCursor != "" {
					return fmt.Errorf("listed %d tools (next cursor %q), the benchmark claims %d", len(res.Tools), res.NextCursor, want)
				}
				return nil
			})
		})
	}
}

// BenchmarkHandler measures single stateless requests through the HTTP
// handler in process (no network, no client): the server-side time and
// allocations per authorized request, guarded vs open vs bare. tools/call on
// 200 tools; tools/list on 1,000 tools, all visible to the caller, with the
// list cache on (the default) and off.
func BenchmarkHandler(b *testing.B) {
	var all []string
	for i := range 50 {
		all = append(all, policytest.RoleName(i), "api."+policytest.RoleName(i))
	}
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + policytest.ToolName(0) + `","arguments":{"text":"hello"}}}`
	list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for _, c := range []struct {
		name, body string
		tools      int
		vars       map[string]string
		roles      []string
	}{
		{"tools-call", call, 200, nil, []string{"role_00", "role_13", "role_27", "api.role_03"}},
		{"tools-list-1000", list, 1000, nil, all},
		{"tools-list-1000-uncached", list, 1000, map[string]string{"DECISION_REUSE": "false"}, all},
	} {
		vars := map[string]string{"STATELESS": "true"}
		for k, v := range c.vars {
			vars[k] = v
		}
		targets := benchTargetsFor(b, c.tools, vars, c.roles)
		for _, t := range targets {
			b.Run(c.name+"/"+t.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					req := httptest.NewRequest(http.MethodPost, t.url, strings.NewReader(c.body))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Accept", "application/json, text/event-stream")
					req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
					if t.token != "" {
						req.Header.Set("Authorization", "Bearer "+t.token)
					}
					rec := httptest.NewRecorder()
					t.handler.ServeHTTP(rec, req)
					if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"result"`) {
						b.Fatalf("%s: %d %.300s", t.name, rec.Code, rec.Body.String())
					}
					if c.body == list {
						if n := strings.Count(rec.Body.String(), `"name":"tool_`); n != c.tools {
							b.Fatalf("%s: listed %d tools, the benchmark claims %d", t.name, n, c.tools)
						}
					}
				}
			})
		}
	}
}
