package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/server"
	"github.com/mcpguard/mcpguard/tools"
)

// withHidden registers the example tools and n more that no policy row
// allows, named to sort between the example tools a data reader sees.
func withHidden(n int) func(*mcp.Server) {
	return func(s *mcp.Server) {
		tools.Register(s)
		for i := range n {
			mcp.AddTool(s, &mcp.Tool{Name: fmt.Sprintf("hidden_%04d", i)}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{}, nil, nil
			})
		}
	}
}

// Pages are cut after filtering: no cursor names an item the caller may not
// see, and a crafted cursor walks only what the caller may see.
func TestListPagesAfterFiltering(t *testing.T) {
	iss := startIssuer(t)
	// More hidden tools than one page of the SDK's default size holds.
	e := startWith(t, iss, map[string]string{"LIST_PAGE_SIZE": "1"}, server.Options{Register: withHidden(1005)})
	cs := e.connect(t, e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}}))

	var seen []string
	cursor := ""
	for range 10 {
		res, err := cs.ListTools(ctx(t), &mcp.ListToolsParams{Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, tl := range res.Tools {
			seen = append(seen, tl.Name)
		}
		if res.NextCursor == "" {
			break
		}
		if b, _ := base64.RawURLEncoding.DecodeString(res.NextCursor); strings.Contains(string(b), "hidden") {
			t.Fatalf("cursor %q names a hidden tool: %s", res.NextCursor, b)
		}
		if b, _ := base64.StdEncoding.DecodeString(res.NextCursor); strings.Contains(string(b), "hidden") {
			t.Fatalf("cursor %q names a hidden tool: %q", res.NextCursor, b)
		}
		cursor = res.NextCursor
	}
	if strings.Join(seen, ",") != "get_current_user,read_critical_data" {
		t.Fatalf("pages held %v", seen)
	}

	// A cursor crafted to start among the hidden tools shows none of them.
	crafted := base64.RawURLEncoding.EncodeToString([]byte(`{"v":1,"after":"hidden_0500"}`))
	res, err := cs.ListTools(ctx(t), &mcp.ListToolsParams{Cursor: crafted})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tools) != 1 || res.Tools[0].Name != "read_critical_data" {
		t.Fatalf("crafted cursor listed %v", res.Tools)
	}
	// A cursor of another shape is refused as invalid params.
	_, err = cs.ListTools(ctx(t), &mcp.ListToolsParams{Cursor: "not-a-cursor"})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInvalidParams {
		t.Fatalf("bad cursor: %v", err)
	}
}

// In production a denial says "access denied" and the decision id: the
// policy's reasons (which name roles and rules) stay in the log.
func TestDenialsAreGenericUnlessDetailIsOn(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"DENIAL_DETAIL": "false"})
	cs := e.connect(t, e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}}))
	for _, name := range []string{"approve_budget", "no_such_tool"} {
		_, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: name, Arguments: map[string]any{"department": "it", "amount": 10}})
		var rpcErr *jsonrpc.Error
		if !errors.As(err, &rpcErr) || rpcErr.Code != server.CodeAccessDenied {
			t.Fatalf("%s: %v", name, err)
		}
		var d server.DenialData
		if err := json.Unmarshal(rpcErr.Data, &d); err != nil || d.DecisionID == "" || len(d.Reasons) != 0 {
			t.Fatalf("%s: data %s", name, rpcErr.Data)
		}
		if strings.Contains(rpcErr.Message, "finance") || strings.Contains(rpcErr.Message, "catalog") || !strings.Contains(rpcErr.Message, d.DecisionID) {
			t.Fatalf("%s: message %q", name, rpcErr.Message)
		}
	}
}

// completion/complete reveals a prompt's or resource's argument values: it
// is decided like a use of its ref.
func TestCompletionDecidedLikeItsRef(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	tok := e.token(t, devidp.Token{User: "alice"})
	sid := session(t, e, tok)
	complete := func(ref string) string {
		res := post(t, e.URL, tok, `{"jsonrpc":"2.0","id":5,"method":"completion/complete","params":{"ref":`+ref+`,"argument":{"name":"item_id","value":"4"}}}`,
			map[string]string{"Mcp-Session-Id": sid})
		return body(t, res)
	}
	denied := fmt.Sprintf(`"code":%d`, server.CodeAccessDenied)
	for _, ref := range []string{
		`{"type":"ref/resource","uri":"data://items/{item_id}"}`, // needs data_reader
		`{"type":"ref/prompt","name":"not_in_catalog"}`,
	} {
		if b := complete(ref); !strings.Contains(b, denied) {
			t.Fatalf("completion of %s: %s, want access denied", ref, b)
		}
	}
	if b := complete(`{"type":"ref/prompt","name":"summarize_access"}`); strings.Contains(b, denied) {
		t.Fatalf("completion of an allowed prompt denied: %s", b)
	}
}
