package policy_test

import (
	"encoding/json"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// A request whose shape the reuse does not know is never remembered, even
// under a policy whose answer would not depend on what the shape leaves
// out (here every tool is allowed): a tool the server did not register,
// or a request naming two targets (a tool and a prompt, a tool and a
// resource), whatever its method.
func TestUnknownShapesNeverRemembered(t *testing.T) {
	reader := newToken("data_reader")
	withPrompt := func(in *policy.Input) *policy.Input {
		in.MCP.Prompt = &policy.Prompt{Name: "summarize_access"}
		return in
	}
	withResource := func(in *policy.Input) *policy.Input {
		in.MCP.ResourceURI = "data://server-info"
		return in
	}
	for name, in := range map[string]*policy.Input{
		"unregistered tool": func() *policy.Input {
			in := reader.call("lookup", `{}`)
			in.MCP.Tool.Annotations = nil
			return in
		}(),
		"tool and prompt":   withPrompt(reader.call("lookup", `{}`)),
		"tool and resource": withResource(reader.call("lookup", `{}`)),
		"prompt and resource": withResource(func() *policy.Input {
			in := reader.prompt("summarize_access", nil)
			return in
		}()),
	} {
		t.Run(name, func(t *testing.T) {
			e := withRules(t, `tool_allowed(_) := true

prompt_allowed(_) := true`)
			for range 3 {
				d, err := e.Decide(t.Context(), in)
				if err != nil || !d.Allow {
					t.Fatalf("%+v %v", d, err)
				}
				policy.WaitReuseAnalysis(e)
			}
			if n := policy.Remembered(e); n != 0 {
				t.Fatalf("%d decisions held for reuse, want none", n)
			}
		})
	}
}

// Control: the same policy and a registered tool alone is remembered, so
// the cases above show something.
func TestKnownShapeRemembered(t *testing.T) {
	e := withRules(t, `tool_allowed(_) := true`)
	in := newToken("data_reader").call("lookup", `{}`)
	in.MCP.Tool.Arguments = json.RawMessage(`{"query":"q"}`)
	if !analysed(t, e, in) {
		t.Fatal("refused")
	}
	if n := policy.Remembered(e); n != 1 {
		t.Fatalf("%d decisions held for reuse, want 1", n)
	}
}
