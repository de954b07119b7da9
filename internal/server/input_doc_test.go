package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/policy"
)

// These tests hold docs/POLICIES.md to the input document the server really
// builds: each JSON example marked `<!-- input-example: name (parts) -->` is
// compared, key by key and type by type, with the document the server hands
// the engine for the same request, made by real clients against a real
// server (Entra-shaped tokens, the shipped tools and policies).

const (
	docTenant = "72f988bf-0000-4000-8000-000000000001"
	docClient = "5b2a1c3d-0000-4000-8000-0000000000c1"
)

// repoPath is a path from the repository root, found from this file.
func repoPath(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", ".."}, parts...)...)
}

// docExample is one marked example of docs/POLICIES.md.
type docExample struct {
	name  string
	parts []string // the top-level parts it documents; nil: the whole document
	line  int
	doc   any
}

var exampleMarker = regexp.MustCompile(`^<!-- input-example: ([a-z0-9/-]+)(?: \(([a-z, ]+)\))? -->$`)

// readExamples returns the marked examples of a Markdown file: each marker
// must be followed by a ```json block holding one JSON value.
func readExamples(t *testing.T, path string) map[string]docExample {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]docExample{}
	sc := bufio.NewScanner(f)
	line := 0
	next := func() (string, bool) {
		ok := sc.Scan()
		line++
		return sc.Text(), ok
	}
	for {
		text, ok := next()
		if !ok {
			break
		}
		m := exampleMarker.FindStringSubmatch(strings.TrimSpace(text))
		if m == nil {
			if strings.HasPrefix(strings.TrimSpace(text), "<!--") && strings.Contains(text, "input-example") {
				t.Fatalf("%s:%d: malformed marker %q", path, line, text)
			}
			continue
		}
		ex := docExample{name: m[1], line: line}
		if m[2] != "" {
			for _, p := range strings.Split(m[2], ",") {
				ex.parts = append(ex.parts, strings.TrimSpace(p))
			}
		}
		if fence, _ := next(); strings.TrimSpace(fence) != "```json" {
			t.Fatalf("%s:%d: example %q is not followed by a ```json block", path, ex.line, ex.name)
		}
		var body strings.Builder
		for {
			text, ok := next()
			if !ok {
				t.Fatalf("%s:%d: example %q: unterminated block", path, ex.line, ex.name)
			}
			if strings.TrimSpace(text) == "```" {
				break
			}
			body.WriteString(text + "\n")
		}
		if err := json.Unmarshal([]byte(body.String()), &ex.doc); err != nil {
			t.Fatalf("%s:%d: example %q is not JSON: %v", path, ex.line, ex.name, err)
		}
		if _, dup := out[ex.name]; dup {
			t.Fatalf("%s:%d: example %q appears twice", path, ex.line, ex.name)
		}
		out[ex.name] = ex
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// ellipsis, as a key of a documented object, says the object may hold
// other keys (claims, arguments): the keys listed must be there, others
// may be. As a string value it reads "some string".
const ellipsis = "…"

// conform lists where real differs from the documented doc: a documented
// key the real document lacks, a real key the documentation does not name,
// a value of another JSON type, a boolean of another value. Strings and
// numbers vary (times, ids, ports) and are compared by type. An array's
// items must each have the shape of some documented item and each
// documented item that of some real one, booleans compared by type (the
// example shows some of the items, and is the request the test makes: a
// documented item means the real array has one); a documented [] means
// always empty.
func conform(path string, doc, real any) []string { return conformAs(path, doc, real, true) }

func conformAs(path string, doc, real any, exact bool) []string {
	if dt, rt := jsonType(doc), jsonType(real); dt != rt {
		return []string{fmt.Sprintf("%s: documented as %s, is %s (%s)", path, dt, rt, short(real))}
	}
	switch d := doc.(type) {
	case bool:
		if exact && d != real.(bool) {
			return []string{fmt.Sprintf("%s: documented as %v, is %v", path, d, real)}
		}
	case map[string]any:
		r := real.(map[string]any)
		var out []string
		_, open := d[ellipsis]
		for _, k := range sortedKeys(d) {
			if k == ellipsis {
				continue
			}
			rv, ok := r[k]
			if !ok {
				out = append(out, fmt.Sprintf("%s.%s: documented, but not in the input", path, k))
				continue
			}
			out = append(out, conformAs(path+"."+k, d[k], rv, exact)...)
		}
		if !open {
			for _, k := range sortedKeys(r) {
				if _, ok := d[k]; !ok {
					out = append(out, fmt.Sprintf("%s.%s: in the input (%s), but not documented", path, k, short(r[k])))
				}
			}
		}
		return out
	case []any:
		r := real.([]any)
		if len(d) == 0 {
			if len(r) != 0 {
				return []string{fmt.Sprintf("%s: documented as always empty, is %s", path, short(real))}
			}
			return nil
		}
		var out []string
		for i, ri := range r {
			if !slices.ContainsFunc(d, func(di any) bool { return conformAs("", di, ri, false) == nil }) {
				out = append(out, fmt.Sprintf("%s[%d]: no documented item has its shape: %s; against the first: %v",
					path, i, short(ri), conformAs(path+"[0]", d[0], ri, false)))
			}
		}
		for i, di := range d {
			if !slices.ContainsFunc(r, func(ri any) bool { return conformAs("", di, ri, false) == nil }) {
				out = append(out, fmt.Sprintf("%s[%d]: documented item %s has the shape of no item in the input (%s)", path, i, short(di), short(real)))
			}
		}
		return out
	}
	return nil
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64, json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// docServer is mcpguard over loopback HTTP with the shipped tools and
// policies, recording every input document it evaluates.
type docServer struct {
	s   *Server
	url string
	iss *devidp.Issuer

	mu   sync.Mutex
	seen []seenInput
}

type seenInput struct {
	query, method string
	doc           map[string]any
}

func docIssuer(t *testing.T) *devidp.Issuer {
	t.Helper()
	key, err := devidp.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	iss, err := devidp.New(srv.URL, docTenant, key)
	if err != nil {
		t.Fatal(err)
	}
	h = iss.Handler()
	return iss
}

func newDocServer(t *testing.T, vars map[string]string) *docServer {
	t.Helper()
	return newDocServerWith(t, vars, Options{})
}

// newDocServerWith is newDocServer with other tools or another role source.
func newDocServerWith(t *testing.T, vars map[string]string, opts Options) *docServer {
	t.Helper()
	iss := docIssuer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	src := map[string]string{
		"ENVIRONMENT":           "development",
		"AZURE_AUTHORITY_HOST":  iss.Authority,
		"AZURE_TENANT_ID":       docTenant,
		"AZURE_CLIENT_ID":       docClient,
		"AZURE_BASE_URL":        base,
		"AZURE_REQUIRED_SCOPES": "read",
		"ROLE_SOURCE":           "static",
		"ROLES_FILE":            repoPath("test", "fixtures", "roles.json"),
		"POLICY_DIR":            repoPath("policies"),
		"LOG_LEVEL":             "error",
	}
	for k, v := range vars {
		src[k] = v
	}
	cfg, err := config.FromSource(func(name string) (string, bool) { v, ok := src[name]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { <-s.Linted() })
	d := &docServer{s: s, url: base + "/mcp", iss: iss}
	s.inputSeen = func(query string, in *policy.Input) {
		b, err := in.Document()
		if err != nil {
			t.Errorf("%s: input document: %v", in.MCP.Method, err)
			return
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Errorf("%s: input document %s: %v", in.MCP.Method, b, err)
			return
		}
		d.mu.Lock()
		d.seen = append(d.seen, seenInput{query: query, method: in.MCP.Method, doc: doc})
		d.mu.Unlock()
	}
	hs := httptest.NewUnstartedServer(s.Handler())
	_ = hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return d
}

// token mints a token for this server's API.
func (d *docServer) token(t *testing.T, tok devidp.Token) string {
	t.Helper()
	tok.Audience = docClient
	s, err := d.iss.Mint(tok)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// input is the last document evaluated for query and method.
func (d *docServer) input(t *testing.T, query, method string) map[string]any {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.seen) - 1; i >= 0; i-- {
		if s := d.seen[i]; s.query == query && s.method == method {
			return s.doc
		}
	}
	t.Fatalf("no %s evaluated for %s", query, method)
	return nil
}

type bearerTransport struct{ token string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// connect opens a session as the client "docs-client" 1.0; protocol "" is
// the SDK's default. A refused initialize is an error, as is any other.
func (d *docServer) connect(t *testing.T, token, protocol string) (*mcp.ClientSession, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := mcp.NewClient(&mcp.Implementation{Name: "docs-client", Version: "1.0"}, nil)
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   d.url,
		HTTPClient: &http.Client{Transport: bearerTransport{token: token}},
	}, &mcp.ClientSessionOptions{ProtocolVersion: protocol})
	if err == nil {
		t.Cleanup(func() { _ = cs.Close() })
	}
	return cs, err
}

// ada is the user of the examples: a delegated token with the app role
// data_reader (static role source: realm role data_reader) and a group.
var ada = devidp.Token{User: "Ada Lovelace", Email: "ada@contoso.example", Scopes: []string{"read", "write"},
	Roles: []string{"data_reader"}, Groups: []string{"0f6e3c1a-0000-4000-8000-0000000000bb"}}

// documented builds, for each example name, the real document the server
// evaluates for that request.
func documented(t *testing.T) map[string]map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]map[string]any{}
	allow, visible := policy.AllowQuery, policy.VisibleQuery

	// A delegated user over Streamable HTTP, the shipped tools.
	users := newDocServer(t, nil)
	cs, err := users.connect(t, users.token(t, ada), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "read_critical_data", Arguments: map[string]any{"query": "open tickets", "limit": 5}}); err != nil {
		t.Fatal(err)
	}
	out["tools/call"] = users.input(t, allow, "tools/call")
	out["initialize"] = users.input(t, allow, "initialize")
	if err := cs.Ping(ctx, nil); err != nil {
		t.Fatal(err)
	}
	out["ping"] = users.input(t, allow, "ping")
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	out["tools/list-allow"] = users.input(t, allow, "tools/list")
	out["tools/list"] = users.input(t, visible, "tools/list")
	if _, err := cs.ListResources(ctx, nil); err != nil {
		t.Fatal(err)
	}
	out["resources/list"] = users.input(t, visible, "resources/list")
	if _, err := cs.ListResourceTemplates(ctx, nil); err != nil {
		t.Fatal(err)
	}
	out["resources/templates/list"] = users.input(t, visible, "resources/templates/list")
	if _, err := cs.ListPrompts(ctx, nil); err != nil {
		t.Fatal(err)
	}
	out["prompts/list"] = users.input(t, visible, "prompts/list")
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "data://items/42"}); err != nil {
		t.Fatal(err)
	}
	out["resources/read"] = users.input(t, allow, "resources/read")
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "summarize_access", Arguments: map[string]string{"focus": "budgets"}}); err != nil {
		t.Fatal(err)
	}
	out["prompts/get"] = users.input(t, allow, "prompts/get")
	// The shipped tools offer no completions: the request is decided, then
	// the SDK answers it has none.
	_, _ = cs.Complete(ctx, &mcp.CompleteParams{Ref: &mcp.CompleteReference{Type: "ref/resource", URI: "data://items/{item_id}"},
		Argument: mcp.CompleteParamsArgument{Name: "item_id", Value: "4"},
		Context:  &mcp.CompleteContext{Arguments: map[string]string{"category": "open"}}})
	out["completion/complete"] = users.input(t, allow, "completion/complete")

	// The 2026-07-28 protocol: discovery, then a listen stream.
	stateless := newDocServer(t, map[string]string{"STATELESS": "true"})
	if _, err := stateless.connect(t, stateless.token(t, ada), "2026-07-28"); err != nil {
		t.Fatal(err)
	}
	out["server/discover"] = stateless.input(t, allow, "server/discover")
	out["subscriptions/listen"] = listen(t, stateless)

	// An app-only caller, roles from the token's app roles.
	apps := newDocServer(t, map[string]string{"ROLE_SOURCE": "token"})
	if _, err := apps.connect(t, apps.token(t, devidp.Token{User: "reporting-agent", App: true, Roles: []string{"Agent.DataReader"}}), ""); err != nil {
		t.Fatal(err)
	}
	out["app"] = apps.input(t, allow, "initialize")

	// No authentication: every request is anonymous, and refused.
	anon := newDocServer(t, map[string]string{"ENABLE_AUTH": "false"})
	if _, err := anon.connect(t, "", ""); err == nil {
		t.Fatal("an anonymous initialize was allowed")
	}
	out["anonymous"] = anon.input(t, allow, "initialize")

	// stdio: the server's own MCP session, without HTTP.
	stdio := newDocServer(t, map[string]string{"ENABLE_AUTH": "false", "TRANSPORT": "stdio"})
	ct, st := mcp.NewInMemoryTransports()
	ss, err := stdio.s.mcp.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ss.Close() })
	if _, err := mcp.NewClient(&mcp.Implementation{Name: "docs-client", Version: "1.0"}, nil).Connect(ctx, ct, nil); err == nil {
		t.Fatal("an anonymous initialize was allowed over stdio")
	}
	out["stdio"] = stdio.input(t, allow, "initialize")
	return out
}

// listen posts a subscriptions/listen request as a 2026-07-28 client does
// and returns the document it was decided on. The stream it opens is left
// to the test server's close.
func listen(t *testing.T, d *docServer) map[string]any {
	t.Helper()
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen", "params": map[string]any{
		"_meta": map[string]any{
			"io.modelcontextprotocol/protocolVersion":    "2026-07-28",
			"io.modelcontextprotocol/clientInfo":         map[string]any{"name": "docs-client", "version": "1.0"},
			"io.modelcontextprotocol/clientCapabilities": map[string]any{},
		},
		"notifications": map[string]any{"resourceSubscriptions": []string{"data://server-info"}, "toolsListChanged": true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "subscriptions/listen")
	res, err := (&http.Client{Transport: bearerTransport{token: d.token(t, ada)}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// The decision is made before the stream's first byte.
	_ = res.Body.Close()
	return d.input(t, policy.AllowQuery, "subscriptions/listen")
}

// part is the documented part of a real document.
func part(doc map[string]any, parts []string) map[string]any {
	if parts == nil {
		return doc
	}
	out := map[string]any{}
	for _, p := range parts {
		if v, ok := doc[p]; ok {
			out[p] = v
		}
	}
	return out
}

// TestPoliciesDocMatchesTheInput compares every marked example of
// docs/POLICIES.md with the document the server builds for that request.
func TestPoliciesDocMatchesTheInput(t *testing.T) {
	examples := readExamples(t, repoPath("docs", "POLICIES.md"))
	real := documented(t)
	for name := range real {
		if _, ok := examples[name]; !ok {
			t.Errorf("docs/POLICIES.md has no example %q: mark one with <!-- input-example: %s -->", name, name)
		}
	}
	for _, name := range sortedKeys(anyMap(examples)) {
		ex := examples[name]
		r, ok := real[name]
		if !ok {
			t.Errorf("docs/POLICIES.md:%d: example %q is not built by this test", ex.line, name)
			continue
		}
		doc, ok := ex.doc.(map[string]any)
		if !ok {
			t.Errorf("docs/POLICIES.md:%d: example %q is not an object", ex.line, name)
			continue
		}
		for _, p := range ex.parts {
			if _, ok := doc[p]; !ok {
				t.Errorf("docs/POLICIES.md:%d: example %q names part %q but does not show it", ex.line, name, p)
			}
		}
		if diffs := conform("input", doc, part(r, ex.parts)); len(diffs) > 0 {
			b, _ := json.MarshalIndent(part(r, ex.parts), "", "  ")
			t.Errorf("docs/POLICIES.md:%d: example %q differs from the input the server builds:\n  %s\nthe input:\n%s",
				ex.line, name, strings.Join(diffs, "\n  "), b)
		}
	}
}

func anyMap[V any](m map[string]V) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// The comparison finds each kind of drift, and only drift.
func TestConformFindsDrift(t *testing.T) {
	parse := func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	doc := parse(`{"a": "x", "n": 1, "b": true, "o": {"k": "v", "…": "more"}, "l": [{"name": "x"}], "e": []}`)
	for _, c := range []struct {
		real  string
		drift bool
	}{
		{`{"a": "other", "n": 2.5, "b": true, "o": {"k": "w", "extra": 1}, "l": [{"name": "y"}, {"name": "z"}], "e": []}`, false},
		{`{"a": "x", "n": 1, "b": true, "o": {"k": "v"}, "l": [], "e": []}`, true},                         // a documented item no real one has
		{`{"n": 1, "b": true, "o": {"k": "v"}, "l": [{"name": "x"}], "e": []}`, true},                      // documented key missing
		{`{"a": "x", "z": 0, "n": 1, "b": true, "o": {"k": "v"}, "l": [{"name": "x"}], "e": []}`, true},    // undocumented key
		{`{"a": 1, "n": 1, "b": true, "o": {"k": "v"}, "l": [{"name": "x"}], "e": []}`, true},              // another type
		{`{"a": "x", "n": "1", "b": true, "o": {"k": "v"}, "l": [{"name": "x"}], "e": []}`, true},          // a number as a string
		{`{"a": "x", "n": 1, "b": false, "o": {"k": "v"}, "l": [{"name": "x"}], "e": []}`, true},           // another boolean
		{`{"a": "x", "n": 1, "b": true, "o": {}, "l": [{"name": "x"}], "e": []}`, true},                    // listed key of an open object
		{`{"a": "x", "n": 1, "b": true, "o": {"k": "v"}, "l": [{"name": "x", "more": 1}], "e": []}`, true}, // an item of another shape
		{`{"a": "x", "n": 1, "b": true, "o": {"k": "v"}, "l": [{}], "e": []}`, true},                       // an item lacking a key
		{`{"a": "x", "n": 1, "b": true, "o": {"k": "v"}, "l": [{"name": "x"}], "e": ["x"]}`, true},         // documented always empty
		{`{"a": "x", "n": 1, "b": true, "o": {"k": "v"}, "l": {"name": "x"}, "e": []}`, true},              // an object for an array
		{`{"a": null, "n": 1, "b": true, "o": {"k": "v"}, "l": [{"name": "x"}], "e": []}`, true},           // null for a string
	} {
		diffs := conform("input", doc, parse(c.real))
		if (len(diffs) > 0) != c.drift {
			t.Errorf("%s: differences %v, want some: %v", c.real, diffs, c.drift)
		}
	}
	// Items: every documented item must have the shape of a real one.
	two := parse(`{"l": [{"name": "x"}, {"uri": "y"}]}`)
	if diffs := conform("input", two, parse(`{"l": [{"name": "a"}]}`)); len(diffs) == 0 {
		t.Error("a documented item of a shape no real item has passed")
	}
	if diffs := conform("input", two, parse(`{"l": [{"name": "a"}, {"uri": "b"}, {"name": "c"}]}`)); len(diffs) > 0 {
		t.Errorf("items of the documented shapes: %v", diffs)
	}
	// Booleans inside items are compared by type.
	if diffs := conform("input", parse(`[{"h": true}]`), parse(`[{"h": false}]`)); len(diffs) > 0 {
		t.Errorf("an item's boolean compared by value: %v", diffs)
	}
}
