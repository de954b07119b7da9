package policy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// reuseHints are one registered tool's annotations, made once as the server
// makes them: the reuse knows a registered tool by them.
var reuseHints = policy.ToolHints{ReadOnly: true}.Fragment()

// token is one caller's input fragments, made once per token, as the server makes them.
type token struct{ id, authz *policy.Fragment }

func newToken(roles ...string) token {
	id, authz := user(roles...)
	return token{id, authz}
}

func (c token) call(tool, args string) *policy.Input {
	in := &policy.Input{Identity: c.id, Authorization: c.authz}
	in.MCP.Method = "tools/call"
	in.MCP.Tool = &policy.Tool{Name: tool, Arguments: json.RawMessage(args), Annotations: reuseHints}
	in.Request.RemoteAddr = "10.0.0.7:4711"
	return in
}

func withRules(t *testing.T, rego string, opts ...policy.Option) *policy.Engine {
	t.Helper()
	dir := policytest.Copy(t, "../../policies", map[string]string{"team_rules.rego": "package mcp.authz\n\n" + rego})
	e, err := policy.New(context.Background(), dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func allows(t *testing.T, e *policy.Engine, in *policy.Input) bool {
	t.Helper()
	d, err := e.Decide(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return d.Allow
}

// analysed decides in, lets the analysis that started end, and decides in
// again: that second decision is remembered if the shape may be reused.
func analysed(t *testing.T, e *policy.Engine, in *policy.Input) bool {
	t.Helper()
	allows(t, e, in)
	policy.WaitReuseAnalysis(e)
	return allows(t, e, in)
}

// A decision that depends on the caller alone is reused for that caller:
// allowed and denied alike, and the denied one still carries its reasons.
func TestDecisionOfTheCallerAloneReused(t *testing.T) {
	e := shipped(t)
	reader := newToken("data_reader")
	in := reader.call("read_critical_data", `{"query":"q"}`)
	if !analysed(t, e, in) {
		t.Fatal("denied")
	}
	if allowed, ok := policy.Reused(e, in); !ok || !allowed {
		t.Fatalf("not reused: %v %v", allowed, ok)
	}
	// Another request of the same caller and tool, other arguments: the
	// same decision, without evaluating allow again.
	if !allows(t, e, reader.call("read_critical_data", `{"query":"other"}`)) {
		t.Fatal("denied the second time")
	}
	nobody := newToken()
	denied := nobody.call("read_critical_data", `{"query":"q"}`)
	for range 2 {
		d, err := e.Decide(context.Background(), denied)
		if err != nil || d.Allow || len(d.Reasons) == 0 || d.ID == "" {
			t.Fatalf("denied call: %+v %v", d, err)
		}
	}
	if allowed, ok := policy.Reused(e, denied); !ok || allowed {
		t.Fatalf("the deny is not reused: %v %v", allowed, ok)
	}
}

// A tool the server did not register, or a request naming two targets, is
// never reused: what the analysis would assume of it is not known.
func TestUnregisteredToolNotReused(t *testing.T) {
	e := shipped(t)
	in := call("read_critical_data", "data_reader") // no annotations: not registered
	analysed(t, e, in)
	if _, ok := policy.Reused(e, in); ok {
		t.Fatal("an unregistered tool's decision was reused")
	}
}

// Rules that read more than the caller are decided on every request: an
// argument veto, a rule on the request's address, a time window on the
// request's time or on time.now_ns(), the session, the whole tool object,
// a walk over the input.
func TestRulesReadingTheRequestAreNotReused(t *testing.T) {
	for name, c := range map[string]struct {
		rule   string
		before func(*policy.Input) // allowed
		after  func(*policy.Input) // denied
	}{
		"argument veto": {
			rule:   `deny contains "too much" if { input.mcp.tool.name == "read_critical_data"; input.mcp.tool.arguments.amount > 1000 }`,
			before: func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q","amount":5}`) },
			after:  func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q","amount":5000}`) },
		},
		"remote address": {
			rule:   `deny contains "outside" if { not net.cidr_contains("10.0.0.0/8", split(input.request.remote_addr, ":")[0]) }`,
			before: func(in *policy.Input) { in.Request.RemoteAddr = "10.1.2.3:1" },
			after:  func(in *policy.Input) { in.Request.RemoteAddr = "192.0.2.1:1" },
		},
		"request time window": {
			rule:   `deny contains "after hours" if { input.request.time_ns > 2000000000000000000 }`,
			before: func(in *policy.Input) { in.Request.TimeNS = 1000000000000000000 },
			after:  func(in *policy.Input) { in.Request.TimeNS = 3000000000000000000 },
		},
		"session": {
			rule:   `deny contains "not this session" if { input.mcp.session_id == "stolen" }`,
			before: func(in *policy.Input) { in.MCP.SessionID = "mine" },
			after:  func(in *policy.Input) { in.MCP.SessionID = "stolen" },
		},
		"whole tool object": {
			rule:   `deny contains "flagged" if { t := input.mcp.tool; t.arguments.flag == true }`,
			before: func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q"}`) },
			after:  func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q","flag":true}`) },
		},
		"walk over the input": {
			rule:   `deny contains "marker" if { walk(input, [_, "forbidden-marker"]) }`,
			before: func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q"}`) },
			after:  func(in *policy.Input) { in.MCP.Tool.Arguments = json.RawMessage(`{"query":"forbidden-marker"}`) },
		},
		"client": {
			rule:   `deny contains "old client" if { input.mcp.client.name == "legacy" }`,
			before: func(in *policy.Input) { in.MCP.ClientName = "modern" },
			after:  func(in *policy.Input) { in.MCP.ClientName = "legacy" },
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := withRules(t, c.rule)
			reader := newToken("data_reader")
			for i := range 3 { // allowed, and reused if it ever would be
				in := reader.call("read_critical_data", `{"query":"q"}`)
				c.before(in)
				if !allows(t, e, in) {
					t.Fatalf("request %d refused", i)
				}
				policy.WaitReuseAnalysis(e)
				if _, ok := policy.Reused(e, in); ok {
					t.Fatal("a decision on a rule that reads the request was reused")
				}
			}
			in := reader.call("read_critical_data", `{"query":"q"}`)
			c.after(in)
			if allows(t, e, in) {
				t.Fatal("the rule did not fire: the earlier allow was reused")
			}
		})
	}
}

// time.now_ns() and other non-deterministic builtins make a decision
// unreusable even when they read no input.
func TestNondeterministicBuiltinNotReused(t *testing.T) {
	e := withRules(t, `deny contains "the far future" if { time.now_ns() > 4000000000000000000 }`)
	in := newToken("data_reader").call("read_critical_data", `{"query":"q"}`)
	if !analysed(t, e, in) {
		t.Fatal("refused")
	}
	if _, ok := policy.Reused(e, in); ok {
		t.Fatal("a decision on time.now_ns() was reused")
	}
}

// New roles come with a new token, so new fragments: decided afresh. A
// rule on roles alone is still reused, per caller.
func TestRoleChangeDecidedAfresh(t *testing.T) {
	e := shipped(t)
	before := newToken("data_reader")
	if !analysed(t, e, before.call("read_critical_data", `{}`)) {
		t.Fatal("refused")
	}
	if _, ok := policy.Reused(e, before.call("read_critical_data", `{}`)); !ok {
		t.Fatal("the old roles' allow is not reused: the test would not show anything")
	}
	after := newToken("viewer") // the same user, roles changed: a new token
	in := after.call("read_critical_data", `{}`)
	if allows(t, e, in) {
		t.Fatal("the old roles' allow was reused")
	}
}

// A cached decision never outlives the policy that made it: after a
// reload, the new policy decides.
func TestReloadDropsReusedDecisions(t *testing.T) {
	dir := policytest.Copy(t, "../../policies", nil)
	e, err := policy.New(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	in := newToken("data_reader").call("read_critical_data", `{}`)
	if !analysed(t, e, in) {
		t.Fatal("refused")
	}
	if _, ok := policy.Reused(e, in); !ok {
		t.Fatal("not reused before the reload: the test would not show anything")
	}
	if err := os.WriteFile(filepath.Join(dir, "team_rules.rego"), []byte("package mcp.authz\n\ndeny contains \"closed\" if { input.mcp.tool.name == \"read_critical_data\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if allows(t, e, in) {
		t.Fatal("allowed after the reload: a decision of the old policy was reused")
	}
}

// Arguments the policy cannot be shown exactly are refused even when the
// caller's decision is reused.
func TestReusedDecisionStillChecksArguments(t *testing.T) {
	e := shipped(t)
	reader := newToken("data_reader")
	analysed(t, e, reader.call("read_critical_data", `{"query":"q"}`))
	in := reader.call("read_critical_data", `{"query":"q","query":"other"}`)
	if _, ok := policy.Reused(e, in); !ok {
		t.Fatal("not reused: the test would not show anything")
	}
	d, err := e.Decide(context.Background(), in)
	if err != nil || d.Allow {
		t.Fatalf("duplicate keys on a reused decision: %+v %v", d, err)
	}
}

// Analyses and evaluations run at once on one compiled policy (the race
// detector watches): callers of several tools, first requests and reused
// ones mixed.
func TestReuseConcurrent(t *testing.T) {
	// 16 callers at once on a loaded machine, under the race detector:
	// the test is about races, not about the evaluation's time.
	e := withRules(t, `deny contains "too much" if { input.mcp.tool.name == "approve_budget"; input.mcp.tool.arguments.amount > 1000 }`,
		policy.WithTimeout(30*time.Second))
	tools := []string{"read_critical_data", "approve_budget", "get_current_user", "admin_operation"}
	callers := []token{newToken("data_reader"), newToken("finance", "executive"), newToken("supervisor"), newToken()}
	done := make(chan error, len(callers)*len(tools))
	for _, c := range callers {
		for _, tool := range tools {
			go func() {
				var first *bool
				for range 20 {
					d, err := e.Decide(context.Background(), c.call(tool, `{"amount":5}`))
					if err != nil {
						done <- err
						return
					}
					if first == nil {
						first = &d.Allow
					} else if *first != d.Allow {
						done <- errors.New(tool + ": the decision changed between identical requests")
						return
					}
				}
				done <- nil
			}()
		}
	}
	for range len(callers) * len(tools) {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	policy.WaitReuseAnalysis(e) // none outlives the test
}

// within bounds a wait for what must happen at once: the old, synchronous
// analysis made the first request wait for it, which these tests catch.
const within = 10 * time.Second

// heldAnalysis replaces an engine's reuse analysis with one that blocks
// until released, counting analyses per target and those in flight.
type heldAnalysis struct {
	release  chan struct{}
	unblock  func()
	started  chan string
	answer   func(target string) bool
	mu       sync.Mutex
	calls    map[string]int
	inFlight int
	most     int
	ctxs     []context.Context
}

func holdAnalysis(t *testing.T, e *policy.Engine, answer func(target string) bool) *heldAnalysis {
	t.Helper()
	h := &heldAnalysis{release: make(chan struct{}), started: make(chan string, 64), answer: answer, calls: map[string]int{}}
	var once sync.Once
	h.unblock = func() { once.Do(func() { close(h.release) }) }
	t.Cleanup(func() { h.unblock(); policy.WaitReuseAnalysis(e) }) // a failed test leaves no analysis behind
	policy.SetReuseAnalysis(e, func(ctx context.Context, target string, _ func(context.Context) bool) bool {
		h.mu.Lock()
		h.calls[target]++
		h.inFlight++
		h.most = max(h.most, h.inFlight)
		h.ctxs = append(h.ctxs, ctx)
		h.mu.Unlock()
		defer func() {
			h.mu.Lock()
			h.inFlight--
			h.mu.Unlock()
		}()
		h.started <- target
		<-h.release
		return h.answer(target)
	})
	return h
}

func (h *heldAnalysis) count() (calls, most int, per map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	per = maps.Clone(h.calls)
	for _, n := range per {
		calls += n
	}
	return calls, h.most, per
}

// awaitStart waits for one analysis to begin.
func (h *heldAnalysis) awaitStart(t *testing.T) string {
	t.Helper()
	select {
	case target := <-h.started:
		return target
	case <-time.After(within):
		t.Fatal("no analysis started")
		return ""
	}
}

func always(string) bool { return true }

// decideAll decides every input at once, each on its own goroutine, and
// fails the test unless all of them return within the bound. Each must be
// allowed when allowed says so.
func decideAll(t *testing.T, e *policy.Engine, allowed bool, ins ...*policy.Input) {
	t.Helper()
	errs := make(chan error, len(ins))
	for _, in := range ins {
		go func() {
			d, err := e.Decide(context.Background(), in)
			if err == nil && d.Allow != allowed {
				err = fmt.Errorf("%s: allow %v, want %v", in.MCP.Tool.Name, d.Allow, allowed)
			}
			errs <- err
		}()
	}
	deadline := time.After(within)
	for range ins {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			t.Fatal("a decision waited for the reuse analysis")
		}
	}
}

// The first request of a shape is decided without waiting for the
// analysis it starts: Decide returns while the analysis is held.
func TestFirstDecisionDoesNotWaitForAnalysis(t *testing.T) {
	e := shipped(t)
	h := holdAnalysis(t, e, always)
	in := newToken("data_reader").call("read_critical_data", `{}`)
	decideAll(t, e, true, in)
	h.awaitStart(t) // and it is still held: release has not been closed
	decideAll(t, e, true, in)
	h.unblock()
	policy.WaitReuseAnalysis(e)
	if calls, _, _ := h.count(); calls != 1 {
		t.Fatalf("%d analyses, want 1", calls)
	}
}

// Many first requests of one shape at once start one analysis, whoever
// the callers are; once it has ended, none starts again.
func TestOneAnalysisPerShape(t *testing.T) {
	e := shipped(t)
	h := holdAnalysis(t, e, always)
	var ins []*policy.Input
	for range 8 {
		ins = append(ins, newToken("data_reader").call("read_critical_data", `{}`))
	}
	decideAll(t, e, true, ins...)
	h.awaitStart(t)
	h.unblock()
	policy.WaitReuseAnalysis(e)
	decideAll(t, e, true, ins...)
	policy.WaitReuseAnalysis(e)
	if calls, _, _ := h.count(); calls != 1 {
		t.Fatalf("%d analyses of one shape, want 1", calls)
	}
	for _, in := range ins {
		if _, ok := policy.Reused(e, in); !ok {
			t.Fatal("a caller's decision was not remembered after the analysis")
		}
	}
}

// No more than MaxReuseAnalyses run at once: first requests of more shapes
// than that, while those analyses are held, start no more. The others are
// analysed on later requests, each shape once.
func TestAnalysesBounded(t *testing.T) {
	e := shipped(t)
	h := holdAnalysis(t, e, always)
	reader := newToken("data_reader")
	var ins []*policy.Input
	for i := range policy.MaxReuseAnalyses + 4 {
		ins = append(ins, reader.call(fmt.Sprintf("tool_%d", i), `{}`))
	}
	decideAll(t, e, false, ins...) // tools the shipped policy does not know
	for range policy.MaxReuseAnalyses {
		h.awaitStart(t)
	}
	h.unblock()
	policy.WaitReuseAnalysis(e) // every analysis started, however many
	calls, most, _ := h.count()
	if calls != policy.MaxReuseAnalyses || most > policy.MaxReuseAnalyses {
		t.Fatalf("%d analyses started, at most %d at once; the bound is %d", calls, most, policy.MaxReuseAnalyses)
	}
	for round := 0; calls < len(ins); round++ {
		if round == len(ins) {
			t.Fatalf("%d shapes of %d analysed after %d rounds", calls, len(ins), round)
		}
		decideAll(t, e, false, ins...)
		policy.WaitReuseAnalysis(e)
		calls, _, _ = h.count()
	}
	if _, most, per := h.count(); most > policy.MaxReuseAnalyses || len(per) != len(ins) {
		t.Fatalf("at most %d at once; analyses per tool %v", most, per)
	} else {
		for tool, n := range per {
			if n != 1 {
				t.Fatalf("%s analysed %d times", tool, n)
			}
		}
	}
}

// While its analysis is pending, a shape is evaluated on every request and
// nothing is remembered; the decision evaluated when it completes is not
// either (it was made before), the next one is, and then it is reused.
func TestDecisionWhileAnalysisPending(t *testing.T) {
	e := shipped(t)
	h := holdAnalysis(t, e, always)
	reader := newToken("data_reader")
	in := reader.call("read_critical_data", `{}`)
	decideAll(t, e, true, in)
	h.awaitStart(t)
	for range 2 {
		if _, ok := policy.Reused(e, in); ok {
			t.Fatal("remembered before the analysis completed")
		}
		decideAll(t, e, true, in)
	}
	h.unblock()
	policy.WaitReuseAnalysis(e)
	if _, ok := policy.Reused(e, in); ok {
		t.Fatal("a decision made while the analysis was pending was remembered")
	}
	if !allows(t, e, in) {
		t.Fatal("refused")
	}
	if allowed, ok := policy.Reused(e, in); !ok || !allowed {
		t.Fatalf("not remembered after the analysis: %v %v", allowed, ok)
	}
	if !allows(t, e, reader.call("read_critical_data", `{"query":"other"}`)) {
		t.Fatal("the reused decision refused")
	}
	if calls, _, _ := h.count(); calls != 1 {
		t.Fatalf("%d analyses, want 1", calls)
	}
}

// An analysis that says no, errs (analyse answers no then) or panics
// leaves its shape evaluated on every request, and is not run again.
func TestFailedAnalysisEvaluatesEveryTime(t *testing.T) {
	for name, answer := range map[string]func(string) bool{
		"no":    func(string) bool { return false },
		"panic": func(string) bool { panic("analysis failed") },
	} {
		t.Run(name, func(t *testing.T) {
			e := shipped(t)
			h := holdAnalysis(t, e, answer)
			h.unblock()
			in := newToken("data_reader").call("read_critical_data", `{}`)
			for i := range 4 {
				decideAll(t, e, true, in)
				policy.WaitReuseAnalysis(e)
				if _, ok := policy.Reused(e, in); ok {
					t.Fatalf("request %d: remembered though the analysis failed", i)
				}
			}
			if calls, _, _ := h.count(); calls != 1 {
				t.Fatalf("%d analyses, want 1", calls)
			}
		})
	}
}

// The analysis is detached from the request that started it, which may
// end first, and bounded in time.
func TestAnalysisDetachedFromRequest(t *testing.T) {
	e := shipped(t)
	h := holdAnalysis(t, e, always)
	ctx, cancel := context.WithCancel(context.Background())
	in := newToken("data_reader").call("read_critical_data", `{}`)
	done := make(chan error, 1)
	go func() {
		_, err := e.Decide(ctx, in)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(within):
		t.Fatal("the decision waited for the reuse analysis")
	}
	h.awaitStart(t)
	cancel() // the request is over
	h.mu.Lock()
	actx := h.ctxs[0]
	h.mu.Unlock()
	if err := actx.Err(); err != nil {
		t.Fatalf("the analysis ends with its request: %v", err)
	}
	if dl, ok := actx.Deadline(); !ok || time.Until(dl) > policy.ReuseAnalysisTimeout {
		t.Fatalf("the analysis is not bounded: %v %v", dl, ok)
	}
	h.unblock()
	policy.WaitReuseAnalysis(e)
	if !analysed(t, e, in) {
		t.Fatal("refused")
	}
	if _, ok := policy.Reused(e, in); !ok {
		t.Fatal("the analysis of an ended request was lost")
	}
}

// An analysis still running when the policy is reloaded answers for the
// policy it was started on only: the new policy decides, and analyses the
// shape afresh.
func TestReloadWhileAnalysing(t *testing.T) {
	dir := policytest.Copy(t, "../../policies", nil)
	e, err := policy.New(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	h := holdAnalysis(t, e, always)
	in := newToken("data_reader").call("read_critical_data", `{}`)
	decideAll(t, e, true, in)
	h.awaitStart(t)
	waitOld := policy.ReuseAnalysisWaiter(e)
	if err := os.WriteFile(filepath.Join(dir, "team_rules.rego"), []byte("package mcp.authz\n\ndeny contains \"closed\" if { input.mcp.tool.name == \"read_critical_data\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.unblock()
	waitOld()
	for range 3 {
		if allows(t, e, in) {
			t.Fatal("allowed after the reload: the old policy's analysis served the new one")
		}
		policy.WaitReuseAnalysis(e)
	}
	if allowed, ok := policy.Reused(e, in); ok && allowed {
		t.Fatal("the old policy's allow is remembered under the new one")
	}
	if calls, _, _ := h.count(); calls != 1 {
		t.Fatalf("the held analysis ran %d times; the new policy has its own", calls)
	}
}
