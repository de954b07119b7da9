package policy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// Red-team cases for decision reuse (reuse.go): team rules, written in good
// faith in ordinary Rego, whose decision depends on more than the caller and
// the shape, through constructs the reuse analysis must see through. Each
// case's request is allowed (so the analysis runs and the decision would be
// remembered), then a request the rule refuses must be refused. A control
// engine without reuse shows that the rule does refuse it.

// varied is one team rule and the request it allows, then one it refuses.
type varied struct {
	rule  string            // package mcp.authz
	files map[string]string // other files of the folder
	base  func(token) *policy.Input
	vary  func(*policy.Input)
}

func (c token) prompt(name string, args map[string]string) *policy.Input {
	in := &policy.Input{Identity: c.id, Authorization: c.authz}
	in.MCP.Method = "prompts/get"
	in.MCP.Prompt = &policy.Prompt{Name: name, Arguments: args}
	in.Request.RemoteAddr = "10.0.0.7:4711"
	return in
}

func (c token) target(method, uri string) *policy.Input {
	in := &policy.Input{Identity: c.id, Authorization: c.authz}
	in.MCP.Method = method
	in.MCP.ResourceURI = uri
	in.Request.RemoteAddr = "10.0.0.7:4711"
	return in
}

func readCall(c token) *policy.Input   { return c.call("read_critical_data", `{"query":"q"}`) }
func lookupCall(c token) *policy.Input { return c.call("lookup", `{"query":"q"}`) }
func fromOutside(in *policy.Input)     { in.Request.RemoteAddr = "192.0.2.1:4711" }
func stolenSession(in *policy.Input)   { in.MCP.SessionID = "stolen" }
func flaggedArguments(in *policy.Input) {
	in.MCP.Tool.Arguments = json.RawMessage(`{"query":"bad","flag":true,"amount":5000}`)
}

// netPackage is a helper package other than mcp.authz.
const netPackage = `package checks.net

inside if startswith(input.request.remote_addr, "10.")
`

var variedRules = map[string]varied{
	"input passed to a function": {rule: `outside(doc) if not startswith(doc.request.remote_addr, "10.")
deny contains "outside" if outside(input)`, base: readCall, vary: fromOutside},
	"input.mcp passed to a function": {rule: `stolen(m) if m.session_id == "stolen"
deny contains "stolen" if stolen(input.mcp)`, base: readCall, vary: stolenSession},
	"input.mcp.tool passed to a function": {rule: `flagged(t) if t.arguments.flag == true
deny contains "flagged" if flagged(input.mcp.tool)`, base: readCall, vary: flaggedArguments},
	"object.get on input": {rule: `deny contains "outside" if object.get(input, ["request", "remote_addr"], "") == "192.0.2.1:4711"`,
		base: readCall, vary: fromOutside},
	"object.get on input.mcp": {rule: `deny contains "stolen" if object.get(input.mcp, "session_id", "") == "stolen"`,
		base: readCall, vary: stolenSession},
	"json.filter on input": {rule: `deny contains "stolen" if { f := json.filter(input, ["mcp/session_id"]); f.mcp.session_id == "stolen" }`,
		base: readCall, vary: stolenSession},
	"json.remove on input": {rule: `deny contains "stolen" if { r := json.remove(input, ["identity"]); r.mcp.session_id == "stolen" }`,
		base: readCall, vary: stolenSession},
	"object.keys of input.mcp": {rule: `deny contains "session" if "session_id" in object.keys(input.mcp)`,
		base: readCall, vary: stolenSession},
	"count of input.mcp": {rule: `deny contains "session" if count(input.mcp) > 2`, base: readCall, vary: stolenSession},
	"variable key under input.mcp": {rule: `deny contains "stolen" if { some k; input.mcp[k] == "stolen" }`,
		base: readCall, vary: stolenSession},
	"variable key under input": {rule: `deny contains "outside" if { some k; input[k].remote_addr == "192.0.2.1:4711" }`,
		base: readCall, vary: fromOutside},
	"variable key under the tool": {rule: `deny contains "flagged" if { some k; input.mcp.tool[k].flag == true }`,
		base: readCall, vary: flaggedArguments},
	"json.marshal of the tool": {rule: `deny contains "bad" if contains(json.marshal(input.mcp.tool), "bad")`,
		base: readCall, vary: flaggedArguments},
	"some in the request": {rule: `deny contains "outside" if { some x in input.request; x == "192.0.2.1:4711" }`,
		base: readCall, vary: fromOutside},
	"every over the arguments": {rule: `tool_allowed("lookup") if every v in input.mcp.tool.arguments { v != "bad" }`,
		base: lookupCall, vary: flaggedArguments},
	"set comprehension": {rule: `deny contains "many" if count({k | some k, _ in input.mcp.tool.arguments}) > 1`,
		base: readCall, vary: flaggedArguments},
	"array comprehension": {rule: `deny contains "outside" if count([a | a := input.request.remote_addr; not startswith(a, "10.")]) > 0`,
		base: readCall, vary: fromOutside},
	"object comprehension": {rule: `deny contains "outside" if { o := {k: v | some k, v in input.request}; o.remote_addr == "192.0.2.1:4711" }`,
		base: readCall, vary: fromOutside},
	"nested else chain": {rule: `zone := "inside" if startswith(input.request.remote_addr, "10.")
else := "lab" if startswith(input.request.remote_addr, "172.")
else := "outside"

tool_allowed("lookup") if zone == "inside"`, base: lookupCall, vary: fromOutside},
	"default function": {rule: `default inside(_) := false

inside(addr) if startswith(addr, "10.")

tool_allowed("lookup") if inside(input.request.remote_addr)`, base: lookupCall, vary: fromOutside},
	"function with several definitions": {rule: `zone(doc) := "inside" if startswith(doc.request.remote_addr, "10.")

zone(doc) := "outside" if not startswith(doc.request.remote_addr, "10.")

tool_allowed("lookup") if zone(input) == "inside"`, base: lookupCall, vary: fromOutside},
	"partial object rule": {rule: `args[k] := v if some k, v in input.mcp.tool.arguments
deny contains "too much" if args.amount > 1000`, base: readCall, vary: flaggedArguments},
	"rule ref with a variable": {rule: `sessions[s].stolen := true if { s := input.mcp.session_id; s == "stolen" }
deny contains "stolen" if sessions[_].stolen`, base: readCall, vary: stolenSession},
	"data keyed by the session": {rule: `flags["stolen"] := true
deny contains "stolen" if flags[input.mcp.session_id]`, base: readCall, vary: stolenSession},
	"rule in another package": {rule: `tool_allowed("lookup") if data.checks.net.inside`,
		files: map[string]string{"net.rego": netPackage}, base: lookupCall, vary: fromOutside},
	"dynamic data reference": {rule: `tool_allowed("lookup") if { some p; data.checks[p].inside }`,
		files: map[string]string{"net.rego": netPackage}, base: lookupCall, vary: fromOutside},
	"a package read whole": {rule: `tool_allowed("lookup") if walk(data.checks, [_, true])`,
		files: map[string]string{"net.rego": netPackage}, base: lookupCall, vary: fromOutside},
	"object.get on data": {rule: `tool_allowed("lookup") if object.get(data.checks, ["net", "inside"], false)`,
		files: map[string]string{"net.rego": netPackage}, base: lookupCall, vary: fromOutside},
	"with on an input path": {rule: `outside if not startswith(input.request.remote_addr, "10.")
deny contains "outside" if { outside with input.mcp.method as "other" }`, base: readCall, vary: fromOutside},
	"with on data": {rule: `prefix := "172."
outside if not startswith(input.request.remote_addr, prefix)
deny contains "outside" if { outside with data.mcp.authz.prefix as "10." }`, base: readCall, vary: fromOutside},
	"with mocking a function": {rule: `check(_) := true
inside_check(_) if startswith(input.request.remote_addr, "10.")
deny contains "outside" if { not check("x") with check as inside_check }`, base: readCall, vary: fromOutside},
	"with mocking a builtin": {rule: `addr_starts(_, p) if indexof(input.request.remote_addr, p) == 0
deny contains "outside" if { not startswith("anything", "10.") with startswith as addr_starts }`, base: readCall, vary: fromOutside},
	"with mocking the clock by the request": {rule: `deny contains "late" if { time.now_ns() > 2000000000000000000 with time.now_ns as input.request.time_ns }`,
		base: readCall, vary: func(in *policy.Input) { in.Request.TimeNS = 3000000000000000000 }},
	"prompt arguments": {rule: `deny contains "secret" if input.mcp.prompt.arguments.topic == "secrets"`,
		base: func(c token) *policy.Input { return c.prompt("summarize_access", map[string]string{"topic": "roles"}) },
		vary: func(in *policy.Input) { in.MCP.Prompt.Arguments = map[string]string{"topic": "secrets"} }},
	"prompt read whole": {rule: `deny contains "secret" if { p := input.mcp.prompt; p.arguments.topic == "secrets" }`,
		base: func(c token) *policy.Input { return c.prompt("summarize_access", map[string]string{"topic": "roles"}) },
		vary: func(in *policy.Input) { in.MCP.Prompt.Arguments = map[string]string{"topic": "secrets"} }},
	"resource matched by a template": {rule: `deny contains "outside" if { startswith(input.mcp.resource.uri, "data://items/"); not startswith(input.request.remote_addr, "10.") }`,
		base: func(c token) *policy.Input { return c.target("resources/read", "data://items/1") }, vary: fromOutside},
	"resource_allowed": {rule: `resource_allowed(uri) if { startswith(uri, "file://"); startswith(input.request.remote_addr, "10.") }`,
		base: func(c token) *policy.Input { return c.target("resources/subscribe", "file://x") }, vary: fromOutside},
	"method without a target": {rule: `deny contains "outside" if { input.mcp.method == "ping"; not startswith(input.request.remote_addr, "10.") }`,
		base: func(c token) *policy.Input { return c.target("ping", "") }, vary: fromOutside},
	"candidates on a call": {rule: `deny contains "listed" if input.mcp.candidates`, base: readCall,
		vary: func(in *policy.Input) { in.MCP.Candidates = &policy.Candidates{} }},
}

func variedEngines(t *testing.T, rule string, files map[string]string) (e, control *policy.Engine) {
	t.Helper()
	all := map[string]string{"team_rules.rego": "package mcp.authz\n\n" + rule}
	maps.Copy(all, files)
	dir := shippedWith(t, all)
	control, err := policy.New(context.Background(), dir, policy.WithoutDecisionReuse(), policy.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return engineFor(t, dir), control
}

func TestRequestReadThroughOtherConstructsNotReused(t *testing.T) {
	for name, c := range variedRules {
		t.Run(name, func(t *testing.T) {
			e, control := variedEngines(t, c.rule, c.files)
			reader := newToken("data_reader")
			refused := c.base(reader)
			c.vary(refused)
			if !allows(t, control, c.base(reader)) || allows(t, control, refused) {
				t.Fatal("the rule does not decide as the case says: the case shows nothing")
			}
			for i := range 3 { // allowed, and reused if it ever would be
				if !allows(t, e, c.base(reader)) {
					t.Fatalf("request %d refused", i)
				}
				policy.WaitReuseAnalysis(e)
			}
			if allows(t, e, refused) {
				_, reused := policy.Reused(e, refused)
				t.Fatalf("allowed (decision held for reuse: %v): an earlier decision was reused", reused)
			}
		})
	}
}

// The same constructs on lists: a candidate shown from inside 10.0.0.0/8
// is hidden from outside.
func TestListRequestReadThroughOtherConstructsNotReused(t *testing.T) {
	tools := policy.Candidates{Tools: append(slices.Clone(shippedTools), policy.Candidate{Name: "lookup", Annotations: reuseHints})}
	for name, c := range map[string]struct {
		rule   string
		files  map[string]string
		method string
		cands  policy.Candidates
		shown  string
	}{
		"input passed to a function": {rule: `inside(doc) if startswith(doc.request.remote_addr, "10.")
tool_allowed("lookup") if inside(input)`, method: "tools/list", cands: tools, shown: "lookup"},
		"variable key under input": {rule: `tool_allowed("lookup") if { some k; startswith(input[k].remote_addr, "10.") }`,
			method: "tools/list", cands: tools, shown: "lookup"},
		"dynamic data reference": {rule: `tool_allowed("lookup") if { some p; data.checks[p].inside }`,
			files: map[string]string{"net.rego": netPackage}, method: "tools/list", cands: tools, shown: "lookup"},
		"default function": {rule: "default inside(_) := false\n\ninside(a) if startswith(a, \"10.\")\n\ntool_allowed(\"lookup\") if inside(input.request.remote_addr)",
			method: "tools/list", cands: tools, shown: "lookup"},
		"with": {rule: "inside if startswith(input.request.remote_addr, \"10.\")\n\ntool_allowed(\"lookup\") if { inside with input.mcp.method as \"other\" }",
			method: "tools/list", cands: tools, shown: "lookup"},
		"candidate's annotations and the request": {rule: `tool_allowed(name) if {
	some c in input.mcp.candidates.tools
	c.name == name
	c.annotations.readOnlyHint
	startswith(input.request.remote_addr, "10.")
}`, method: "tools/list", cands: tools, shown: "lookup"},
		"prompts/list": {rule: `prompt_allowed("extra") if startswith(input.request.remote_addr, "10.")`, method: "prompts/list",
			cands: policy.Candidates{Prompts: []policy.Candidate{{Name: "extra"}, {Name: "summarize_access"}}}, shown: "extra"},
		"resources/list": {rule: `resource_allowed("file://x") if startswith(input.request.remote_addr, "10.")`, method: "resources/list",
			cands: policy.Candidates{Resources: []policy.Candidate{{Name: "file://x"}, {Name: "data://server-info"}}}, shown: "file://x"},
		"resources/templates/list": {rule: `template_allowed("file://{x}") if startswith(input.request.remote_addr, "10.")`, method: "resources/templates/list",
			cands: policy.Candidates{ResourceTemplates: []policy.Candidate{{Name: "file://{x}"}}}, shown: "file://{x}"},
	} {
		t.Run(name, func(t *testing.T) {
			e, control := variedEngines(t, c.rule, c.files)
			reader := newToken("data_reader")
			list := func(addr string) *policy.Input {
				in := &policy.Input{Identity: reader.id, Authorization: reader.authz}
				in.MCP.Method = c.method
				in.MCP.Candidates = &c.cands
				in.Request.RemoteAddr = addr
				return in
			}
			if got, _ := visibleSet(t, control, list("10.0.0.7:1")); !slices.Contains(got, c.shown) {
				t.Fatalf("the rule does not show %s from inside: %v", c.shown, got)
			}
			if got, _ := visibleSet(t, control, list("192.0.2.1:1")); slices.Contains(got, c.shown) {
				t.Fatalf("the rule does not hide %s from outside: %v", c.shown, got)
			}
			for i := range 3 {
				if got, _ := visibleSet(t, e, list("10.0.0.7:1")); !slices.Contains(got, c.shown) {
					t.Fatalf("list %d from inside: %v", i, got)
				}
				policy.WaitReuseAnalysis(e)
			}
			if got, reused := visibleSet(t, e, list("192.0.2.1:1")); slices.Contains(got, c.shown) {
				t.Fatalf("a list from outside shows %s (reused %v): the inside set was reused", c.shown, reused)
			}
		})
	}
}

// chainUntil is a PEM certificate chain, root first and leaf last (as
// crypto.x509.parse_and_verify_certificates reads it), whose leaf expires
// at notAfter.
func chainUntil(t *testing.T, notAfter time.Time) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	root := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vendor root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "vendor"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, root, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})...))
}

// crypto.x509.parse_and_verify_certificates (and _with_options) verify a
// chain at the time of day, and OPA does not mark them non-deterministic:
// its partial evaluation computes them when it knows their arguments, and
// the residual's check took them for pure functions. A tool allowed while
// a vendor's certificate is valid stayed allowed, reused, after it
// expired. Each case is allowed while the chain is valid, then refused
// once it has expired; the decision is never held for reuse.
func TestClockReadingBuiltinNotReused(t *testing.T) {
	beforeExpiry(t, 6*time.Second, clockCases)
}

// clockCases runs the cases with a chain valid for window; false if it
// expired before the allowed requests were made (nothing is shown then).
func clockCases(t *testing.T, window time.Duration) bool {
	t.Helper()
	notAfter := time.Now().Add(window).Truncate(time.Second)
	pemChain := chainUntil(t, notAfter)
	chains, err := json.Marshal(map[string]string{"lookup": pemChain})
	if err != nil {
		t.Fatal(err)
	}
	// The caller carries the chain (a client certificate, say).
	id := policy.MustFragment(map[string]any{"authenticated": true, "kind": "user", "claims": map[string]any{"vendor_chain": pemChain}})
	_, authz := user("data_reader")
	caller := token{id, authz}
	type check struct {
		name         string
		e, control   *policy.Engine
		allowed      func(*policy.Engine) bool
		heldForReuse func(*policy.Engine) bool
	}
	call := func(e *policy.Engine) bool { return allows(t, e, caller.call("lookup", `{}`)) }
	callHeld := func(e *policy.Engine) bool { _, ok := policy.Reused(e, caller.call("lookup", `{}`)); return ok }
	listIn := func() *policy.Input { return caller.list(policy.Candidate{Name: "lookup", Annotations: reuseHints}) }
	listed := func(e *policy.Engine) bool {
		got, _ := visibleSet(t, e, listIn())
		return slices.Contains(got, "lookup")
	}
	listHeld := func(e *policy.Engine) bool { r, _ := policy.VisibleReuseAnalysed(e, listIn()); return r }
	var checks []check
	for _, c := range []struct {
		name, rule      string
		allowed, isHeld func(*policy.Engine) bool
	}{
		{"call, the caller's chain", `tool_allowed("lookup") if {
	[valid, _] := crypto.x509.parse_and_verify_certificates(input.identity.claims.vendor_chain)
	valid
}`, call, callHeld},
		{"call, the caller's chain, with options", `tool_allowed("lookup") if {
	[valid, _] := crypto.x509.parse_and_verify_certificates_with_options(input.identity.claims.vendor_chain, {"KeyUsages": ["KeyUsageAny"]})
	valid
}`, call, callHeld},
		// Found by the tool's name: the hot path's own partial evaluation
		// cannot compute it ahead (the comprehension reads the name), the
		// reuse analysis, which knows the name, could.
		{"call, the tool's chain", "vendor_chains := " + string(chains) + `

tool_allowed(name) if {
	chain := [c | some k, c in vendor_chains; k == name][0]
	[valid, _] := crypto.x509.parse_and_verify_certificates(chain)
	valid
}`, call, callHeld},
		// visible is evaluated on every list: only the analysis knows the candidates.
		{"list, the tool's chain", "vendor_chains := " + string(chains) + `

tool_allowed(name) if {
	[valid, _] := crypto.x509.parse_and_verify_certificates(vendor_chains[name])
	valid
}`, listed, listHeld},
	} {
		e, control := variedEngines(t, c.rule, nil)
		checks = append(checks, check{name: c.name, e: e, control: control, allowed: c.allowed, heldForReuse: c.isHeld})
	}
	for _, c := range checks {
		for i := range 3 { // allowed, and reused if it ever would be
			if !c.allowed(c.e) {
				if time.Now().After(notAfter.Add(-time.Second)) {
					return false // expired meanwhile, or about to
				}
				t.Fatalf("%s: refused %d while the chain is valid", c.name, i)
			}
			policy.WaitReuseAnalysis(c.e)
		}
		if c.heldForReuse(c.e) {
			t.Errorf("%s: a decision on the time of day is held for reuse", c.name)
		}
	}
	if time.Now().After(notAfter) {
		return false
	}
	time.Sleep(time.Until(notAfter) + time.Second)
	for _, c := range checks {
		if c.allowed(c.control) {
			t.Fatalf("%s: allowed, without reuse, after the chain expired: the case shows nothing", c.name)
		}
		if c.allowed(c.e) {
			t.Errorf("%s: allowed after the chain expired: the decision made while it was valid was reused", c.name)
		}
	}
	return true
}

// Every part of the input that varies with the request is unknown to the
// analysis, whatever the input document comes to hold: each leaf of a
// request with every field set is read by a veto on its own tool (or
// prompt), and only the caller's and the shape's own leaves leave a
// decision held for reuse. A field added to the document and not to the
// analysis's unknowns would be taken as absent, and its veto's tool reused.
func TestEveryRequestLeafUnknownToTheAnalysis(t *testing.T) {
	reader := newToken("data_reader")
	full := func(in *policy.Input) *policy.Input {
		in.MCP.SessionID, in.MCP.ProtocolVersion = "s", "2025-11-25"
		in.MCP.ClientName, in.MCP.ClientVersion = "c", "1"
		in.MCP.Candidates = &policy.Candidates{Tools: []policy.Candidate{{Name: "x"}}, Resources: []policy.Candidate{{Name: "r"}},
			ResourceTemplates: []policy.Candidate{{Name: "t"}}, Prompts: []policy.Candidate{{Name: "p"}}}
		in.MCP.Completion = &policy.Completion{RefType: "ref/prompt", Name: "n", URI: "u", Argument: "a", Value: "v",
			ContextArguments: map[string]string{"k": "v"}}
		in.MCP.Subscriptions = &policy.Subscriptions{ResourceURIs: []string{"r"}, ToolsListChanged: true}
		in.Request = policy.Request{TimeNS: 1, RemoteAddr: "10.0.0.7:1", Transport: "http", Host: "h"}
		return in
	}
	shapes := []struct {
		prefix  string
		in      func(name string) *policy.Input
		ownPath []string // the shape's leaves, besides version and method
	}{
		{"t_", func(name string) *policy.Input { return full(reader.call(name, `{"a":{"b":[1]}}`)) },
			[]string{`["mcp"]["tool"]["name"]`, `["mcp"]["tool"]["annotations"]`}},
		{"p_", func(name string) *policy.Input { return full(reader.prompt(name, map[string]string{"k": "v"})) },
			[]string{`["mcp"]["prompt"]["name"]`}},
	}
	type probe struct {
		in       *policy.Input
		path     string
		reusable bool
	}
	var rules strings.Builder
	rules.WriteString("tool_allowed(name) if startswith(name, \"t_\")\n\nprompt_allowed(name) if startswith(name, \"p_\")\n\n")
	var probes []probe
	for _, s := range shapes {
		doc, err := s.in(s.prefix).Document()
		if err != nil {
			t.Fatal(err)
		}
		var x any
		if err := json.Unmarshal(doc, &x); err != nil {
			t.Fatal(err)
		}
		for _, path := range leaves(x, "") {
			reusable := strings.HasPrefix(path, `["identity"]`) || strings.HasPrefix(path, `["authorization"]`) ||
				path == `["version"]` || path == `["mcp"]["method"]`
			for _, own := range s.ownPath {
				reusable = reusable || strings.HasPrefix(path, own)
			}
			name := fmt.Sprintf("%s%d", s.prefix, len(probes))
			field := "tool"
			if s.prefix == "p_" {
				field = "prompt"
			}
			fmt.Fprintf(&rules, "deny contains %q if {\n\tinput.mcp.%s.name == %q\n\tinput%s == \"never this\"\n}\n\n", path, field, name, path)
			probes = append(probes, probe{s.in(name), path, reusable})
		}
	}
	if len(probes) < 40 {
		t.Fatalf("%d leaves: the request is not filled in", len(probes))
	}
	e := withRules(t, rules.String(), policy.WithTimeout(30*time.Second))
	for _, p := range probes {
		if !analysed(t, e, p.in) {
			t.Fatalf("input%s: refused", p.path)
		}
		if _, held := policy.Reused(e, p.in); held != p.reusable {
			t.Errorf("input%s: decision held for reuse %v, want %v", p.path, held, p.reusable)
		}
	}
}

// leaves are the paths of x's leaves, as Rego references (["a"]["b"][0]).
func leaves(x any, path string) []string {
	switch v := x.(type) {
	case map[string]any:
		var out []string
		for _, k := range slices.Sorted(maps.Keys(v)) {
			out = append(out, leaves(v[k], path+"["+strconv.Quote(k)+"]")...)
		}
		if len(out) == 0 {
			return []string{path}
		}
		return out
	case []any:
		var out []string
		for i, e := range v {
			out = append(out, leaves(e, path+"["+strconv.Itoa(i)+"]")...)
		}
		if len(out) == 0 {
			return []string{path}
		}
		return out
	}
	return []string{path}
}
