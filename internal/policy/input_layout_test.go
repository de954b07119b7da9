package policy_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// document is the input document of in, decoded.
func document(t *testing.T, in *policy.Input) map[string]any {
	t.Helper()
	b, err := in.Document()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return doc
}

func get(doc map[string]any, path ...string) (any, bool) {
	var v any = doc
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func bools(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func ptr[T any](v T) *T { return &v }

// A tool's annotations reach the policy with MCP's defaults (2025-11-25)
// applied to each hint left out: a tool that says nothing is destructive
// and open-world, so a rule on destructive tools cannot be passed by
// leaving the hint out. Title only when there is one.
func TestToolAnnotationsCarryMCPDefaults(t *testing.T) {
	defaults := bools("readOnlyHint", false, "destructiveHint", true, "idempotentHint", false, "openWorldHint", true)
	for _, c := range []struct {
		name string
		ann  *policy.Fragment
		want map[string]any
	}{
		{"unregistered", nil, defaults},
		{"declares nothing", policy.ToolHints{}.Fragment(), defaults},
		{"title only", policy.ToolHints{Title: "T"}.Fragment(),
			bools("readOnlyHint", false, "destructiveHint", true, "idempotentHint", false, "openWorldHint", true, "title", "T")},
		{"read-only", policy.ToolHints{ReadOnly: true, Idempotent: true}.Fragment(),
			bools("readOnlyHint", true, "destructiveHint", true, "idempotentHint", true, "openWorldHint", true)},
		{"says all", policy.ToolHints{Destructive: ptr(false), OpenWorld: ptr(false)}.Fragment(),
			bools("readOnlyHint", false, "destructiveHint", false, "idempotentHint", false, "openWorldHint", false)},
		{"destructive", policy.ToolHints{Destructive: ptr(true), OpenWorld: ptr(true)}.Fragment(), defaults},
	} {
		t.Run(c.name, func(t *testing.T) {
			call := &policy.Input{MCP: policy.MCP{Method: "tools/call", Tool: &policy.Tool{Name: "t", Annotations: c.ann}}}
			if got, _ := get(document(t, call), "mcp", "tool", "annotations"); !reflect.DeepEqual(got, c.want) {
				t.Errorf("tools/call: annotations %v, want %v", got, c.want)
			}
			list := &policy.Input{MCP: policy.MCP{Method: "tools/list",
				Candidates: &policy.Candidates{Tools: []policy.Candidate{{Name: "t", Annotations: c.ann}}}}}
			tools, _ := get(document(t, list), "mcp", "candidates", "tools")
			want := []any{map[string]any{"name": "t", "annotations": c.want}}
			if !reflect.DeepEqual(tools, want) {
				t.Errorf("tools/list: candidates %v, want %v", tools, want)
			}
		})
	}
}

// Resources, templates and prompts are listed by their key alone: they have
// no tool annotations, and an always-empty object would only mislead.
func TestOtherCandidatesCarryTheirKeyAlone(t *testing.T) {
	in := &policy.Input{MCP: policy.MCP{Method: "resources/list", Candidates: &policy.Candidates{
		Resources:         []policy.Candidate{{Name: "data://a"}},
		ResourceTemplates: []policy.Candidate{{Name: "data://t/{id}"}},
		Prompts:           []policy.Candidate{{Name: "p"}},
	}}}
	got, _ := get(document(t, in), "mcp", "candidates")
	want := map[string]any{
		"tools":              []any{},
		"resources":          []any{map[string]any{"uri": "data://a"}},
		"resource_templates": []any{map[string]any{"uriTemplate": "data://t/{id}"}},
		"prompts":            []any{map[string]any{"name": "p"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("candidates %v, want %v", got, want)
	}
}

// A string nobody supplied is absent, never "": `not input.x` holds, and
// "" never passes for a value. Values the client sent stay as sent.
func TestInputLeavesOutWhatNobodySaid(t *testing.T) {
	bare := document(t, &policy.Input{MCP: policy.MCP{Method: "ping"}, Request: policy.Request{TimeNS: 1}})
	for _, path := range [][]string{
		{"mcp", "session_id"}, {"mcp", "protocol_version"}, {"mcp", "client"},
		{"request", "remote_addr"}, {"request", "host"}, {"request", "transport"},
	} {
		if v, ok := get(bare, path...); ok {
			t.Errorf("%v is %#v, want absent", path, v)
		}
	}
	if v, _ := get(bare, "request", "time_ns"); v != 1.0 {
		t.Errorf("request.time_ns %v", v)
	}

	full := document(t, &policy.Input{
		MCP:     policy.MCP{Method: "ping", SessionID: "s", ProtocolVersion: "2025-11-25", ClientName: "c", ClientVersion: "1"},
		Request: policy.Request{TimeNS: 1, RemoteAddr: "192.0.2.1:4000", Transport: "http", Host: "h"},
	})
	for _, c := range []struct {
		path []string
		want any
	}{
		{[]string{"mcp", "session_id"}, "s"},
		{[]string{"mcp", "protocol_version"}, "2025-11-25"},
		{[]string{"mcp", "client"}, map[string]any{"name": "c", "version": "1"}},
		{[]string{"request", "remote_addr"}, "192.0.2.1:4000"},
		{[]string{"request", "transport"}, "http"},
		{[]string{"request", "host"}, "h"},
	} {
		if got, _ := get(full, c.path...); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v is %#v, want %#v", c.path, got, c.want)
		}
	}

	// A client that gives a name but no version.
	named := document(t, &policy.Input{MCP: policy.MCP{Method: "ping", ClientName: "c"}})
	if got, _ := get(named, "mcp", "client"); !reflect.DeepEqual(got, map[string]any{"name": "c"}) {
		t.Errorf("client %#v", got)
	}

	// Empty names of the target are absent; values sent stay, "" included.
	targets := document(t, &policy.Input{MCP: policy.MCP{Method: "tools/call", Tool: &policy.Tool{Arguments: json.RawMessage(`{"q":""}`)}}})
	if _, ok := get(targets, "mcp", "tool", "name"); ok {
		t.Error("an empty tool name is present")
	}
	if v, _ := get(targets, "mcp", "tool", "arguments", "q"); v != "" {
		t.Errorf("an argument sent as \"\" reads %#v", v)
	}
	prompt := document(t, &policy.Input{MCP: policy.MCP{Method: "prompts/get", Prompt: &policy.Prompt{Arguments: map[string]string{"a": ""}}}})
	if got, _ := get(prompt, "mcp", "prompt"); !reflect.DeepEqual(got, map[string]any{"arguments": map[string]any{"a": ""}}) {
		t.Errorf("prompt %#v", got)
	}
}

// resource is there for each resource method, even for an empty URI (which
// then names nothing), and only for them.
func TestResourceForResourceMethods(t *testing.T) {
	for _, m := range []string{"resources/read", "resources/subscribe", "resources/unsubscribe"} {
		got, ok := get(document(t, &policy.Input{MCP: policy.MCP{Method: m}}), "mcp", "resource")
		if !ok || !reflect.DeepEqual(got, map[string]any{}) {
			t.Errorf("%s without a URI: resource %#v, %v", m, got, ok)
		}
		got, _ = get(document(t, &policy.Input{MCP: policy.MCP{Method: m, ResourceURI: "data://a"}}), "mcp", "resource")
		if !reflect.DeepEqual(got, map[string]any{"uri": "data://a"}) {
			t.Errorf("%s: resource %#v", m, got)
		}
	}
	if v, ok := get(document(t, &policy.Input{MCP: policy.MCP{Method: "tools/list"}}), "mcp", "resource"); ok {
		t.Errorf("tools/list has a resource %#v", v)
	}
}

// completion carries what the request says: the ref (absent without one),
// the argument with the value typed so far ("" at first), and the values
// already chosen for the ref's other arguments.
func TestCompletionLayout(t *testing.T) {
	for _, c := range []struct {
		name string
		in   policy.Completion
		want map[string]any
	}{
		{"no ref, nothing typed", policy.Completion{Argument: "a"}, map[string]any{
			"argument": map[string]any{"name": "a", "value": ""},
			"context":  map[string]any{"arguments": map[string]any{}},
		}},
		{"prompt", policy.Completion{RefType: "ref/prompt", Name: "p", Argument: "a", Value: "x",
			ContextArguments: map[string]string{"b": "y"}}, map[string]any{
			"ref":      map[string]any{"type": "ref/prompt", "name": "p"},
			"argument": map[string]any{"name": "a", "value": "x"},
			"context":  map[string]any{"arguments": map[string]any{"b": "y"}},
		}},
		{"template", policy.Completion{RefType: "ref/resource", URI: "data://i/{id}", Argument: "id", Value: "4"}, map[string]any{
			"ref":      map[string]any{"type": "ref/resource", "uri": "data://i/{id}"},
			"argument": map[string]any{"name": "id", "value": "4"},
			"context":  map[string]any{"arguments": map[string]any{}},
		}},
	} {
		got, _ := get(document(t, &policy.Input{MCP: policy.MCP{Method: "completion/complete", Completion: &c.in}}), "mcp", "completion")
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: completion %#v, want %#v", c.name, got, c.want)
		}
	}
}

// Document refuses what Decide refuses: arguments the tool could read
// otherwise than the policy.
func TestDocumentRefusesAmbiguousArguments(t *testing.T) {
	in := &policy.Input{MCP: policy.MCP{Method: "tools/call", Tool: &policy.Tool{Name: "t", Arguments: json.RawMessage(`{"a":1,"a":2}`)}}}
	if b, err := in.Document(); err == nil {
		t.Fatalf("a repeated key made a document: %s", b)
	}
}
