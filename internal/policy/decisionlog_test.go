package policy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// syncBuffer is a console both OPA's logger and the test use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// secret stands for a token, or anything a client could put where the log
// must not keep it: in the tool's arguments, a claim, the session id.
const secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.c2ln"

// loggedCall is a call carrying the secret in its arguments, in the claims
// of both tokens and as its session.
func loggedCall(tool string, roles ...string) *policy.Input {
	id := policy.MustFragment(map[string]any{"authenticated": true, "kind": "user", "object_id": "oid-alice", "scopes": []string{"read"},
		"app_roles": []string{}, "groups": []string{},
		"claims": map[string]any{"iss": "https://issuer", "tid": "tenant", "oid": "oid-alice", "email": "alice@example.com", "xms_cc": secret}})
	authz := policy.MustFragment(map[string]any{"source": "keycloak", "roles": roles, "realm_roles": roles,
		"client_roles": map[string]any{}, "claims": map[string]any{"azp": "mcpguard", "session_state": secret}})
	in := &policy.Input{Identity: id, Authorization: authz, Request: policy.Request{TimeNS: 1, Transport: "http"}}
	in.MCP.Method = "tools/call"
	in.MCP.SessionID = secret
	in.MCP.Tool = &policy.Tool{Name: tool, Arguments: json.RawMessage(`{"query":"` + secret + `","limit":3}`)}
	return in
}

// consoleEvents are the decision-log lines OPA's console logger printed.
func consoleEvents(t *testing.T, out string) []map[string]any {
	t.Helper()
	var events []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		if ev["msg"] == "Decision Log" {
			events = append(events, ev)
		}
	}
	return events
}

func logsEngine(t *testing.T, config string, console io.Writer) *policy.Engine {
	t.Helper()
	e, err := policy.New(context.Background(), "../../policies",
		policy.WithTimeout(5*time.Second), policy.WithManagement(policy.Management{Config: []byte(config), Console: console, ID: "replica-1"}))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Every decision, allowed or denied, and every list filter is logged through
// OPA's decision-log plugin with its id, time, path, result and reasons,
// the policy's revision, its latency and its input masked by
// policies/system_log.rego: no token, claims reduced, argument values
// masked, no session id.
func TestDecisionLogsEveryDecisionMasked(t *testing.T) {
	var console syncBuffer
	e := logsEngine(t, `{"decision_logs": {"console": true}}`, &console)
	ctx := context.Background()
	allowed, err := e.Decide(ctx, loggedCall("read_critical_data", "data_reader"))
	if err != nil || !allowed.Allow {
		t.Fatalf("%+v %v", allowed, err)
	}
	denied, err := e.Decide(ctx, loggedCall("delete_record", "data_reader"))
	if err != nil || denied.Allow {
		t.Fatalf("%+v %v", denied, err)
	}
	list := loggedCall("", "data_reader")
	list.MCP.Method, list.MCP.Tool = "tools/list", nil
	list.MCP.Candidates = &policy.Candidates{Tools: []policy.Candidate{{Name: "read_critical_data"}, {Name: "delete_record"}}}
	if _, err := e.Visible(ctx, list); err != nil {
		t.Fatal(err)
	}
	refused := loggedCall("read_critical_data", "data_reader")
	refused.MCP.Tool.Arguments = json.RawMessage(`{"a":1,"a":2}`)
	if d, _ := e.Decide(ctx, refused); d.Allow {
		t.Fatal("duplicate keys allowed")
	}
	revision := e.Status().Revision
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e.Close(closeCtx)

	out := console.String()
	if strings.Contains(out, secret) {
		t.Fatalf("the secret reached the decision log:\n%s", out)
	}
	events := consoleEvents(t, out)
	if len(events) != 4 {
		t.Fatalf("%d decision log events, want 4:\n%s", len(events), out)
	}
	byID := map[string]map[string]any{}
	for _, ev := range events {
		byID[ev["decision_id"].(string)] = ev
		if ev["revision"] != revision || ev["type"] != "openpolicyagent.org/decision_logs" {
			t.Errorf("event without the revision %q or OPA's type: %v", revision, ev)
		}
		if _, err := time.Parse(time.RFC3339Nano, ev["timestamp"].(string)); err != nil {
			t.Errorf("timestamp: %v", err)
		}
		// Measured from the decision's start: more than nothing, less than
		// the test.
		if m, _ := ev["metrics"].(map[string]any); m["timer_rego_query_eval_ns"] == nil || m["timer_rego_query_eval_ns"].(float64) <= 0 ||
			m["timer_rego_query_eval_ns"].(float64) > float64(time.Minute) {
			t.Errorf("no latency, or not the decision's: %v", ev["metrics"])
		}
		if l, _ := ev["labels"].(map[string]any); l["id"] != "replica-1" {
			t.Errorf("labels: %v", ev["labels"])
		}
	}
	a, d := byID[allowed.ID], byID[denied.ID]
	if a == nil || d == nil {
		t.Fatalf("decisions %s and %s not both logged: %v", allowed.ID, denied.ID, events)
	}
	if a["path"] != "mcpguard/decision" || a["result"].(map[string]any)["allow"] != true {
		t.Errorf("the allow: %v", a)
	}
	dr := d["result"].(map[string]any)
	if dr["allow"] != false || len(dr["reasons"].([]any)) == 0 || dr["reasons"].([]any)[0] != denied.Reasons[0] {
		t.Errorf("the deny's result and reasons: %v, want %v", dr, denied.Reasons)
	}
	in := a["input"].(map[string]any)
	claims := in["identity"].(map[string]any)["claims"].(map[string]any)
	if len(claims) != 2 || claims["iss"] != "https://issuer" || claims["tid"] != "tenant" {
		t.Errorf("identity claims not reduced to the kept ones: %v", claims)
	}
	if ac := in["authorization"].(map[string]any)["claims"].(map[string]any); len(ac) != 1 || ac["azp"] != "mcpguard" {
		t.Errorf("authorization claims not reduced: %v", ac)
	}
	mcp := in["mcp"].(map[string]any)
	if args := mcp["tool"].(map[string]any)["arguments"].(map[string]any); args["query"] != "**masked**" || args["limit"] != "**masked**" {
		t.Errorf("arguments not masked: %v", args)
	}
	if _, ok := mcp["session_id"]; ok {
		t.Errorf("the session id was logged: %v", mcp)
	}
	if id := in["identity"].(map[string]any); id["object_id"] != "oid-alice" {
		t.Errorf("who called is gone: %v", id)
	}
	if a["erased"] == nil || a["masked"] == nil {
		t.Errorf("OPA's erased/masked lists are missing: %v", a)
	}
	var sawList, sawRefused bool
	for _, ev := range events {
		switch {
		case ev["path"] == "mcpguard/visible":
			sawList = true
			if r, _ := ev["result"].([]any); len(r) != 1 || r[0] != "read_critical_data" {
				t.Errorf("the list's result: %v", ev["result"])
			}
		case ev["decision_id"] != allowed.ID && ev["decision_id"] != denied.ID:
			sawRefused = true
			r := ev["result"].(map[string]any)
			if r["allow"] != false || !strings.Contains(r["reasons"].([]any)[0].(string), "tool arguments refused") {
				t.Errorf("the refused arguments' result: %v", r)
			}
			if ev["input"] == nil {
				t.Errorf("who was refused is not logged: %v", ev)
			}
		}
	}
	if !sawList || !sawRefused {
		t.Errorf("list logged %t, refused arguments logged %t", sawList, sawRefused)
	}
}

// A remote decision-log service, as OPA defines it, receives the same
// events (gzip JSON arrays POSTed to /logs), masked.
func TestDecisionLogsUploadToAService(t *testing.T) {
	var mu sync.Mutex
	var events []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		if err != nil || r.URL.Path != "/logs" || r.Method != http.MethodPost {
			http.Error(w, "bad upload", http.StatusBadRequest)
			return
		}
		var batch []map[string]any
		if err := json.NewDecoder(zr).Decode(&batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		events = append(events, batch...)
		mu.Unlock()
	}))
	defer srv.Close()
	config := `{"services": {"logs": {"url": "` + srv.URL + `"}}, "decision_logs": {"service": "logs", "reporting": {"min_delay_seconds": 3600, "max_delay_seconds": 3600}}}`
	e := logsEngine(t, config, io.Discard)
	d, err := e.Decide(context.Background(), loggedCall("read_critical_data", "data_reader"))
	if err != nil || !d.Allow {
		t.Fatal(d, err)
	}
	// Close flushes the plugin's buffer within the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.Close(ctx)
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 || events[0]["decision_id"] != d.ID {
		t.Fatalf("uploaded: %v", events)
	}
	raw, _ := json.Marshal(events)
	if strings.Contains(string(raw), secret) {
		t.Fatalf("the secret was uploaded: %s", raw)
	}
	if events[0]["revision"] == "" || events[0]["path"] != "mcpguard/decision" {
		t.Fatalf("event: %v", events[0])
	}
}

// A reused decision is logged like an evaluated one: its own id, the same
// result, the request's input masked (built on the log's goroutine).
func TestDecisionLogsReusedDecisions(t *testing.T) {
	var console syncBuffer
	e := logsEngine(t, `{"decision_logs": {"console": true}}`, &console)
	ctx := context.Background()
	first := loggedCall("read_critical_data", "data_reader")
	first.MCP.Tool.Annotations = policy.ToolHints{ReadOnly: true}.Fragment()
	again := *first
	again.MCP.Tool = &policy.Tool{Name: "read_critical_data", Arguments: json.RawMessage(`{"query":"` + secret + `","limit":9}`),
		Annotations: first.MCP.Tool.Annotations}
	var ids []string
	// The first decision starts the reuse analysis, the second (after it)
	// is remembered, the third reused.
	for i, in := range []*policy.Input{first, first, &again} {
		d, err := e.Decide(ctx, in)
		if err != nil || !d.Allow {
			t.Fatalf("%+v %v", d, err)
		}
		ids = append(ids, d.ID)
		if i == 0 {
			policy.WaitReuseAnalysis(e)
		}
	}
	if _, ok := policy.Reused(e, &again); !ok {
		t.Fatal("the third decision was not reused: the test shows nothing")
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e.Close(closeCtx)
	out := console.String()
	if strings.Contains(out, secret) {
		t.Fatalf("the secret reached the decision log:\n%s", out)
	}
	events := consoleEvents(t, out)
	if len(events) != 3 || events[2]["decision_id"] != ids[2] {
		t.Fatalf("events %v, want the three decisions %v", events, ids)
	}
	ev := events[2]
	if ev["result"].(map[string]any)["allow"] != true {
		t.Errorf("the reused decision's result: %v", ev["result"])
	}
	in, _ := ev["input"].(map[string]any)
	mcp, _ := in["mcp"].(map[string]any)
	tool, _ := mcp["tool"].(map[string]any)
	args, _ := tool["arguments"].(map[string]any)
	if tool["name"] != "read_critical_data" || args["limit"] != "**masked**" {
		t.Errorf("the reused decision's input: %v", in)
	}
}
