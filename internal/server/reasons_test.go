package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A veto given as a record: the caller (with DENIAL_DETAIL) is shown its
// message, never its detail; the log keeps both, with the rule's id.
func TestDenialShowsMessageLogsDetail(t *testing.T) {
	s := newAuthzServer(t, nil, nil)
	dir := s.cfg.PolicyDir
	veto := `package mcp.authz

deny contains {"id": "team.budget", "message": "this amount needs approval", "detail": "amount 20000 over the 10000 limit without role cfo"} if {
	input.mcp.tool.name == "open"
	input.mcp.tool.arguments.amount > 10000
}
`
	if err := os.WriteFile(filepath.Join(dir, "veto.rego"), []byte(veto), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.engine.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s.logger = slog.New(slog.NewJSONHandler(&logs, nil))
	ex := extra(t, s, user("oid-21"))
	_, err := s.authorize((&recorder{}).handle)(context.Background(), "tools/call",
		&mcp.CallToolRequest{Extra: ex, Params: &mcp.CallToolParamsRaw{Name: "open", Arguments: json.RawMessage(`{"amount":20000}`)}})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != CodeAccessDenied {
		t.Fatalf("want a denial: %v", err)
	}
	var data DenialData
	_ = json.Unmarshal(rpcErr.Data, &data)
	if len(data.Reasons) != 1 || data.Reasons[0] != "this amount needs approval" || strings.Contains(rpcErr.Message+string(rpcErr.Data), "cfo") {
		t.Fatalf("the caller was shown %q %s", rpcErr.Message, rpcErr.Data)
	}
	for _, want := range []string{`"id":"team.budget"`, `"detail":"amount 20000 over the 10000 limit without role cfo"`, `"message":"this amount needs approval"`} {
		if !strings.Contains(logs.String(), want) {
			t.Fatalf("the log lacks %s: %s", want, logs.String())
		}
	}
}
