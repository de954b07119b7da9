package server

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkAuthorize measures the MCP middleware (recovering, traced,
// authorize) around a handler that does nothing: an allowed tools/call whose
// decision is reused, the per-request cost the bare SDK does not pay after
// its own decoding.
func BenchmarkAuthorize(b *testing.B) {
	s := newAuthzServer(b, nil, nil)
	ex := extra(b, s, user("oid-bench"))
	next := &recorder{}
	h := s.authorizer()(next.handle)
	req := &mcp.CallToolRequest{Extra: ex, Params: &mcp.CallToolParamsRaw{Name: "open", Arguments: json.RawMessage(`{"q":"x"}`)}}
	ctx := context.Background()
	if _, err := h(ctx, "tools/call", req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h(ctx, "tools/call", req); err != nil {
			b.Fatal(err)
		}
	}
	if next.calls == 0 {
		b.Fatal("the handler was never called")
	}
}
