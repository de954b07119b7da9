package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/server"
)

// subscriptions/listen (2026-07-28) subscribes to resources from inside the
// SDK, past the request check: its resource URIs are decided like
// resources/subscribe, before the stream opens.
func TestSubscriptionsListenDecidesItsResources(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"STATELESS": "true"})
	tok := e.token(t, devidp.Token{User: "alice"}) // no data_reader
	listen := func(uris string) string {
		t.Helper()
		b := `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}},"notifications":{"resourceSubscriptions":` + uris + `}}}`
		res := post(t, e.URL, tok, b, map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"})
		return body(t, res)
	}
	denied := fmt.Sprintf(`"code":%d`, server.CodeAccessDenied)
	if out := listen(`["data://server-info","data://items/7"]`); !strings.Contains(out, denied) {
		t.Fatalf("listen to a resource alice may not read: %s", out)
	}
	if out := listen(`["data://server-info"]`); strings.Contains(out, denied) {
		t.Fatalf("listen to a resource alice may read: %s", out)
	}
}
