package server

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// Only a request of the 2026-07-28 protocol is described by the protocol
// version and client in its own _meta. A request whose _meta names an older
// version is described by its session: a client cannot claim another name
// per request. (The SDK's HTTP transport refuses such a request before the
// middleware; other transports may not, so the middleware is asked alone.)
func TestOlderProtocolInMetaIgnored(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	var seen *policy.Input
	s.inputSeen = func(_ string, in *policy.Input) { seen = in }
	for _, c := range []struct {
		version    string
		wantClient string
	}{{"2025-11-25", ""}, {"2026-07-28", "claimed"}} {
		req := &mcp.CallToolRequest{Extra: extra(t, s, user("oid-31")), Params: &mcp.CallToolParamsRaw{
			Name: "open", Arguments: json.RawMessage(`{}`),
			Meta: mcp.Meta{mcp.MetaKeyProtocolVersion: c.version, mcp.MetaKeyClientInfo: map[string]any{"name": "claimed", "version": "9"}}}}
		seen = nil
		if _, err := s.authorize((&recorder{}).handle)(context.Background(), "tools/call", req); err != nil {
			t.Fatal(err)
		}
		if seen == nil {
			t.Fatal("no input was built")
		}
		if seen.MCP.ClientName != c.wantClient {
			t.Errorf("_meta of version %s: client %q, want %q", c.version, seen.MCP.ClientName, c.wantClient)
		}
	}
}
