package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/server"
)

// The TypeScript cases drive mcpguard with the official TypeScript MCP SDK
// through ts/client.mjs. They need node and test/node_modules (npm ci), so
// they run only with MCPGUARD_E2E_TS=1, which `make test-e2e` sets after
// installing them; with it set, a missing node or SDK fails the test.

const tsEnv = "MCPGUARD_E2E_TS"

// tsError is a failure as client.mjs reports it.
type tsError struct {
	Kind            string          `json:"kind"` // jsonrpc, http, unauthorized, other
	Code            int64           `json:"code"` // the JSON-RPC error code
	Message         string          `json:"message"`
	Data            json.RawMessage `json:"data"`
	Status          int             `json:"status"` // the HTTP status
	WWWAuthenticate string          `json:"wwwAuthenticate"`
	Name            string          `json:"name"`
}

type tsStep struct {
	Op     string          `json:"op"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *tsError        `json:"error"`
}

// tsRun is client.mjs's output.
type tsRun struct {
	Connect struct {
		OK              bool            `json:"ok"`
		ServerInfo      json.RawMessage `json:"serverInfo"`
		ProtocolVersion string          `json:"protocolVersion"`
		SessionID       *string         `json:"sessionId"`
		Error           *tsError        `json:"error"`
	} `json:"connect"`
	Steps        []tsStep `json:"steps"`
	HTTPFailures []struct {
		Method          string `json:"method"`
		Status          int    `json:"status"`
		WWWAuthenticate string `json:"wwwAuthenticate"`
	} `json:"httpFailures"`
	TransportErrors []string `json:"transportErrors"`
	raw             []byte
}

// step is one instruction for client.mjs.
type step map[string]any

// needTS skips unless the TypeScript cases were asked for, and fails when
// they were but cannot run. It returns the node binary.
func needTS(t *testing.T) string {
	t.Helper()
	if os.Getenv(tsEnv) != "1" {
		t.Skip("SKIPPING the TypeScript SDK end-to-end test: set " + tsEnv + "=1 (and run `npm ci` in test/), or run `make test-e2e` / `make test`")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("%s=1 but node is not on PATH (%v): install Node.js 20 or later", tsEnv, err)
	}
	sdk := filepath.Join(repoRoot(), "test", "node_modules", "@modelcontextprotocol", "sdk", "package.json")
	if _, err := os.Stat(sdk); err != nil {
		t.Fatalf("%s=1 but the TypeScript SDK is not installed (%v): run `make tools-ts` or `cd test && npm ci`", tsEnv, err)
	}
	return node
}

// runTS runs client.mjs against e with token (none when empty).
func runTS(t *testing.T, node string, e *env, token string, steps ...step) *tsRun {
	t.Helper()
	if steps == nil {
		steps = []step{}
	}
	in, err := json.Marshal(map[string]any{"url": e.URL, "token": token, "timeoutMs": 15000, "steps": steps})
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(c, node, filepath.Join("ts", "client.mjs"))
	cmd.Dir = filepath.Join(repoRoot(), "test")
	cmd.Stdin = bytes.NewReader(in) // the token stays off the command line
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if stderr.Len() > 0 {
		t.Logf("client.mjs stderr:\n%s", stderr.Bytes())
	}
	if err != nil {
		if errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("client.mjs timed out; stdout: %s", stdout.Bytes())
		}
		t.Fatalf("client.mjs: %v; stdout: %s", err, stdout.Bytes())
	}
	var run tsRun
	if err := json.Unmarshal(stdout.Bytes(), &run); err != nil {
		t.Fatalf("client.mjs output %q: %v", stdout.Bytes(), err)
	}
	run.raw = stdout.Bytes()
	t.Cleanup(func() {
		if t.Failed() || os.Getenv(tsEnv+"_DEBUG") != "" {
			t.Logf("client.mjs output: %s", run.raw)
		}
	})
	if run.Connect.OK && len(run.TransportErrors) > 0 {
		t.Logf("client.mjs transport errors: %v", run.TransportErrors)
	}
	return &run
}

// connected fails unless the client connected and ran every step.
func (r *tsRun) connected(t *testing.T, steps int) {
	t.Helper()
	if !r.Connect.OK {
		t.Fatalf("connect failed: %+v (%s)", r.Connect.Error, r.raw)
	}
	if len(r.Steps) != steps {
		t.Fatalf("ran %d steps, want %d: %s", len(r.Steps), steps, r.raw)
	}
}

// ok returns step i's result, failing if it was an error.
func (r *tsRun) ok(t *testing.T, i int) string {
	t.Helper()
	s := r.Steps[i]
	if !s.OK {
		t.Fatalf("step %d (%s): %+v", i, s.Op, s.Error)
	}
	return string(s.Result)
}

// denied checks step i is a policy denial and returns its data.
func (r *tsRun) denied(t *testing.T, i int) server.DenialData {
	t.Helper()
	s := r.Steps[i]
	if s.OK || s.Error == nil {
		t.Fatalf("step %d (%s) succeeded, want a denial: %s", i, s.Op, s.Result)
	}
	if s.Error.Kind != "jsonrpc" || s.Error.Code != server.CodeAccessDenied {
		t.Fatalf("step %d (%s): error %+v, want JSON-RPC code %d", i, s.Op, s.Error, server.CodeAccessDenied)
	}
	if !strings.HasPrefix(s.Error.Message, "access denied") {
		t.Fatalf("step %d (%s): message %q", i, s.Op, s.Error.Message)
	}
	var d server.DenialData
	if err := json.Unmarshal(s.Error.Data, &d); err != nil {
		t.Fatalf("step %d (%s): error data %s: %v", i, s.Op, s.Error.Data, err)
	}
	if d.DecisionID == "" || len(d.Reasons) == 0 {
		t.Fatalf("step %d (%s): denial lacks decision id or reasons: %+v", i, s.Op, d)
	}
	return d
}

// toolNames returns the sorted names of a listTools step.
func (r *tsRun) toolNames(t *testing.T, i int) []string {
	t.Helper()
	var res struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	if err := json.Unmarshal([]byte(r.ok(t, i)), &res); err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

// structured returns a callTool step's structured content, failing on a tool error.
func (r *tsRun) structured(t *testing.T, i int) string {
	t.Helper()
	var res struct {
		IsError           bool            `json:"isError"`
		StructuredContent json.RawMessage `json:"structuredContent"`
	}
	if err := json.Unmarshal([]byte(r.ok(t, i)), &res); err != nil {
		t.Fatal(err)
	}
	if res.IsError || len(res.StructuredContent) == 0 {
		t.Fatalf("step %d (%s): tool error or no structured content: %s", i, r.Steps[i].Op, r.Steps[i].Result)
	}
	return string(res.StructuredContent)
}

// A data reader reads critical data, is refused a budget approval with the
// policy's reason, and sees only the tools it may call.
func TestTypeScriptAllowedDeniedAndFilteredList(t *testing.T) {
	node := needTS(t)
	e := start(t, startIssuer(t), nil)
	run := runTS(t, node, e, e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}}),
		step{"op": "callTool", "name": "read_critical_data", "arguments": map[string]any{"query": "q3 revenue"}},
		step{"op": "callTool", "name": "approve_budget", "arguments": map[string]any{"department": "it", "amount": 10}},
		step{"op": "listTools"},
	)
	run.connected(t, 3)
	if run.Connect.SessionID == nil || *run.Connect.SessionID == "" || run.Connect.ProtocolVersion == "" {
		t.Fatalf("stateful connect without a session or protocol version: %s", run.raw)
	}

	if out := run.structured(t, 0); !strings.Contains(out, "q3 revenue") || !strings.Contains(out, "alice@") {
		t.Fatalf("unexpected result %s", out)
	}
	d := run.denied(t, 1)
	if !strings.Contains(strings.Join(d.Reasons, " "), "finance") {
		t.Fatalf("reason does not name the missing role: %v", d.Reasons)
	}
	if !strings.Contains(run.Steps[1].Error.Message, "finance") {
		t.Fatalf("message does not carry the reason: %q", run.Steps[1].Error.Message)
	}
	if got, want := run.toolNames(t, 2), []string{"get_current_user", "read_critical_data"}; !slices.Equal(got, want) {
		t.Fatalf("tools/list = %v, want %v", got, want)
	}
}

// Each caller's list is its own, for tools, resources, templates and prompts.
func TestTypeScriptListsFilteredPerCaller(t *testing.T) {
	node := needTS(t)
	e := start(t, startIssuer(t), nil)

	bob := runTS(t, node, e, e.token(t, devidp.Token{User: "bob", Roles: []string{"finance", "executive", "api.writer"}}),
		step{"op": "listTools"},
		step{"op": "callTool", "name": "write_api_data", "arguments": map[string]any{"key": "k", "value": "v"}},
		step{"op": "callTool", "name": "approve_budget", "arguments": map[string]any{"department": "it", "amount": 10}},
	)
	bob.connected(t, 3)
	if got, want := bob.toolNames(t, 0), []string{"approve_budget", "get_current_user", "write_api_data"}; !slices.Equal(got, want) {
		t.Fatalf("bob's tools = %v, want %v", got, want)
	}
	if out := bob.structured(t, 1); !strings.Contains(out, `"written":true`) {
		t.Fatalf("write_api_data for a client-role writer: %s", out)
	}
	if out := bob.structured(t, 2); !strings.Contains(out, `"approved":true`) {
		t.Fatalf("approve_budget for finance+executive: %s", out)
	}

	nobody := runTS(t, node, e, e.token(t, devidp.Token{User: "nobody"}),
		step{"op": "listTools"},
		step{"op": "listResources"},
		step{"op": "listResourceTemplates"},
		step{"op": "readResource", "uri": "data://items/7"},
		step{"op": "readResource", "uri": "data://server-info"},
	)
	nobody.connected(t, 5)
	if got := nobody.toolNames(t, 0); !slices.Equal(got, []string{"get_current_user"}) {
		t.Fatalf("a caller without roles sees %v", got)
	}
	var rl struct {
		Resources []struct {
			URI string `json:"uri"`
		} `json:"resources"`
	}
	if err := json.Unmarshal([]byte(nobody.ok(t, 1)), &rl); err != nil || len(rl.Resources) != 1 || rl.Resources[0].URI != "data://server-info" {
		t.Fatalf("resources for nobody: %v %s", err, nobody.Steps[1].Result)
	}
	var tl struct {
		ResourceTemplates []json.RawMessage `json:"resourceTemplates"`
	}
	if err := json.Unmarshal([]byte(nobody.ok(t, 2)), &tl); err != nil || len(tl.ResourceTemplates) != 0 {
		t.Fatalf("templates for nobody: %v %s", err, nobody.Steps[2].Result)
	}
	nobody.denied(t, 3)
	if out := nobody.ok(t, 4); !strings.Contains(out, `\"name\":\"mcpguard\"`) {
		t.Fatalf("server-info for nobody: %s", out)
	}

	reader := runTS(t, node, e, e.token(t, devidp.Token{User: "reader", Roles: []string{"data_reader"}}),
		step{"op": "readResource", "uri": "data://items/7"},
		step{"op": "listPrompts"},
		step{"op": "getPrompt", "name": "summarize_access", "arguments": map[string]any{"focus": "budgets"}},
	)
	reader.connected(t, 3)
	if out := reader.ok(t, 0); !strings.Contains(out, `\"id\":\"7\"`) {
		t.Fatalf("data_reader reading an item: %s", out)
	}
	var pl struct {
		Prompts []struct {
			Name string `json:"name"`
		} `json:"prompts"`
	}
	if err := json.Unmarshal([]byte(reader.ok(t, 1)), &pl); err != nil || len(pl.Prompts) != 1 || pl.Prompts[0].Name != "summarize_access" {
		t.Fatalf("prompts: %v %s", err, reader.Steps[1].Result)
	}
	if out := reader.ok(t, 2); !strings.Contains(out, "budgets") {
		t.Fatalf("prompt: %s", out)
	}
}

// An app-only caller (client credentials) carries its permissions in app roles.
func TestTypeScriptAppOnlyCaller(t *testing.T) {
	node := needTS(t)
	e := start(t, startIssuer(t), nil)
	run := runTS(t, node, e, e.token(t, devidp.Token{User: "agent", App: true, Roles: []string{"Agent.DataReader"}}),
		step{"op": "callTool", "name": "get_current_user"},
		step{"op": "callTool", "name": "read_critical_data", "arguments": map[string]any{"query": "x"}},
		step{"op": "callTool", "name": "admin_operation", "arguments": map[string]any{"operation": "x"}},
	)
	run.connected(t, 3)
	if out := run.structured(t, 0); !strings.Contains(out, `"kind":"app"`) || !strings.Contains(out, `"read_critical_data":true`) ||
		!strings.Contains(out, `"admin_operation":false`) {
		t.Fatalf("app caller seen as %s", out)
	}
	if out := run.structured(t, 1); !strings.Contains(out, `"query":"x"`) {
		t.Fatalf("app with data_reader: %s", out)
	}
	d := run.denied(t, 2)
	if !strings.Contains(strings.Join(d.Reasons, " "), "admin") {
		t.Fatalf("reason does not name the missing role: %v", d.Reasons)
	}
}

// A missing or bad token gets 401 and a token without the required scope
// 403: the SDK (without an auth provider) fails to connect with the status.
func TestTypeScriptChallenges(t *testing.T) {
	node := needTS(t)
	e := start(t, startIssuer(t), nil)
	cases := []struct {
		name, token string
		status      int
		challenge   []string
	}{
		{"no token", "", 401, []string{`resource_metadata="` + e.Base + `/.well-known/oauth-protected-resource/mcp"`}},
		{"garbage token", "not-a-jwt", 401, []string{`error="invalid_token"`}},
		{"missing scope", e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}, Scopes: []string{"write"}}), 403,
			[]string{`error="insufficient_scope"`, "api://" + clientID + "/read"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			run := runTS(t, node, e, c.token, step{"op": "listTools"})
			if run.Connect.OK || run.Connect.Error == nil {
				t.Fatalf("connected: %s", run.raw)
			}
			if len(run.Steps) != 0 {
				t.Fatalf("ran steps after a failed connect: %s", run.raw)
			}
			ce := run.Connect.Error
			if ce.Kind != "http" || ce.Status != c.status {
				t.Fatalf("connect error %+v, want HTTP %d", ce, c.status)
			}
			if !strings.Contains(ce.Message, "Error POSTing to endpoint") {
				t.Fatalf("message %q", ce.Message)
			}
			for _, want := range c.challenge {
				if !strings.Contains(ce.WWWAuthenticate, want) {
					t.Fatalf("challenge %q lacks %q", ce.WWWAuthenticate, want)
				}
			}
			if len(run.HTTPFailures) != 1 || run.HTTPFailures[0].Method != "POST" || run.HTTPFailures[0].Status != c.status {
				t.Fatalf("HTTP failures %+v, want one POST %d", run.HTTPFailures, c.status)
			}
		})
	}
}

// A stateless server serves the TypeScript client with the same decisions.
func TestTypeScriptStateless(t *testing.T) {
	node := needTS(t)
	e := start(t, startIssuer(t), map[string]string{"STATELESS": "true"})
	run := runTS(t, node, e, e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}}),
		step{"op": "listTools"},
		step{"op": "callTool", "name": "read_critical_data", "arguments": map[string]any{"query": "stateless"}},
		step{"op": "callTool", "name": "admin_operation", "arguments": map[string]any{"operation": "x"}},
		step{"op": "ping"},
	)
	run.connected(t, 4)
	if run.Connect.SessionID != nil && *run.Connect.SessionID != "" {
		t.Fatalf("stateless server issued a session id %q", *run.Connect.SessionID)
	}
	if got := run.toolNames(t, 0); !slices.Equal(got, []string{"get_current_user", "read_critical_data"}) {
		t.Fatalf("stateless tools/list = %v", got)
	}
	if out := run.structured(t, 1); !strings.Contains(out, `"query":"stateless"`) {
		t.Fatalf("stateless read_critical_data: %s", out)
	}
	run.denied(t, 2)
	run.ok(t, 3)
}
