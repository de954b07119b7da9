package policy_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// describedCatalog is a catalog whose rows hold more than a requirement: a
// description, or deny_apps false. Such rows go through lib.satisfied's
// second body, which (like each allow body) requires an authenticated caller
// again: the redundant pair of checks that only an anonymous caller of such a
// row tells apart from nothing. The shipped catalog has none of them.
const describedCatalog = `{"mcp": {"catalog": {
	"tools": {
		"described_tool": {"allow_authenticated": true, "description": "anyone signed in"},
		"apps_welcome_tool": {"allow_authenticated": true, "deny_apps": false},
		"plain_tool": {"allow_authenticated": true}
	},
	"resources": {"data://described": {"allow_authenticated": true, "description": "anyone signed in"}},
	"resource_templates": {"data://t/{id}": {"match": "data://t/*", "allow_authenticated": true, "description": "anyone signed in"}},
	"prompts": {"described_prompt": {"allow_authenticated": true, "description": "anyone signed in"}}
}}}`

// shippedRulesWith is the shipped policy's rules (policies/*.rego, tests
// left out) over another catalog.
func shippedRulesWith(t *testing.T, catalog string) *policy.Engine {
	t.Helper()
	files := map[string]string{"data.json": catalog}
	paths, err := filepath.Glob("../../policies/*.rego")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no shipped policy files: %v", err)
	}
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.rego") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = string(b)
	}
	e, err := policy.New(context.Background(), writePolicy(t, files))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestAnonymousRefusedRowsWithDescription: under the shipped rules, an
// anonymous caller is refused every guarded method on catalog rows that
// carry a description (or other keys beside the requirement), as on plain
// rows; the same requests by an authenticated caller without roles are
// allowed, so the refusals are for authentication alone.
func TestAnonymousRefusedRowsWithDescription(t *testing.T) {
	e := shippedRulesWith(t, describedCatalog)
	ctx := context.Background()
	none := policy.MustFragment(map[string]any{"source": "none", "roles": []string{}, "realm_roles": []string{},
		"client_roles": map[string]any{}, "claims": map[string]any{}})
	callers := map[string]*policy.Fragment{
		// As the server describes a caller without a verified token.
		"anonymous": policy.MustFragment(map[string]any{"authenticated": false, "kind": "anonymous",
			"scopes": []string{}, "app_roles": []string{}, "groups": []string{}, "claims": map[string]any{}}),
		"no identity at all": nil,
	}
	signedIn := policy.MustFragment(map[string]any{"authenticated": true, "kind": "user", "scopes": []string{"read"},
		"app_roles": []string{}, "groups": []string{}, "claims": map[string]any{}})

	requests := map[string]func(*policy.MCP){
		"tools/call described_tool": func(m *policy.MCP) {
			m.Method, m.Tool = "tools/call", &policy.Tool{Name: "described_tool", Arguments: json.RawMessage(`{}`)}
		},
		"tools/call apps_welcome_tool": func(m *policy.MCP) {
			m.Method, m.Tool = "tools/call", &policy.Tool{Name: "apps_welcome_tool", Arguments: json.RawMessage(`{}`)}
		},
		"tools/call plain_tool": func(m *policy.MCP) {
			m.Method, m.Tool = "tools/call", &policy.Tool{Name: "plain_tool", Arguments: json.RawMessage(`{}`)}
		},
		"resources/read described":        func(m *policy.MCP) { m.Method, m.ResourceURI = "resources/read", "data://described" },
		"resources/read by template":      func(m *policy.MCP) { m.Method, m.ResourceURI = "resources/read", "data://t/1" },
		"resources/subscribe described":   func(m *policy.MCP) { m.Method, m.ResourceURI = "resources/subscribe", "data://described" },
		"resources/subscribe by template": func(m *policy.MCP) { m.Method, m.ResourceURI = "resources/subscribe", "data://t/1" },
		"prompts/get described_prompt": func(m *policy.MCP) {
			m.Method, m.Prompt = "prompts/get", &policy.Prompt{Name: "described_prompt"}
		},
		"completion of described_prompt": func(m *policy.MCP) {
			m.Method, m.Completion = "completion/complete", &policy.Completion{RefType: "ref/prompt", Name: "described_prompt", Argument: "a"}
		},
		"completion of the template": func(m *policy.MCP) {
			m.Method, m.Completion = "completion/complete", &policy.Completion{RefType: "ref/resource", URI: "data://t/{id}", Argument: "id"}
		},
		"subscriptions/listen described": func(m *policy.MCP) {
			m.Method, m.Subscriptions = "subscriptions/listen", &policy.Subscriptions{ResourceURIs: []string{"data://described", "data://t/1"}}
		},
	}
	for name, set := range requests {
		t.Run(name, func(t *testing.T) {
			in := &policy.Input{Identity: signedIn, Authorization: none}
			set(&in.MCP)
			if d, err := e.Decide(ctx, in); err != nil || !d.Allow {
				t.Fatalf("an authenticated caller is refused (the row is unusable, the test proves nothing): %+v %v", d, err)
			}
			for who, id := range callers {
				in := &policy.Input{Identity: id, Authorization: none}
				set(&in.MCP)
				d, err := e.Decide(ctx, in)
				if err != nil || d.Allow {
					t.Fatalf("%s caller: %+v %v, want a deny", who, d, err)
				}
			}
		})
	}
	// Nor does an anonymous caller see any of it listed.
	for who, id := range callers {
		in := &policy.Input{Identity: id, Authorization: none}
		in.MCP.Method = "tools/list"
		in.MCP.Candidates = &policy.Candidates{Tools: []policy.Candidate{{Name: "described_tool"}, {Name: "apps_welcome_tool"}, {Name: "plain_tool"}}}
		if v, err := e.Visible(ctx, in); err != nil || len(v) != 0 {
			t.Errorf("%s caller sees %v (%v)", who, v, err)
		}
	}
}
