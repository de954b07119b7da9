package policytest

import (
	"context"
	"encoding/json"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// EchoIn and EchoOut are the scaled tools' types: the benchmarks and the
// load harness serve the same tools from mcpguard and from a bare SDK
// server, so both list the same schemas and answer the same shapes.
type EchoIn struct {
	Text string `json:"text"`
}

// EchoOut is what an echo tool answers.
type EchoOut struct {
	Text string `json:"text"`
}

func echo(_ context.Context, _ *mcp.CallToolRequest, in EchoIn) (*mcp.CallToolResult, EchoOut, error) {
	return nil, EchoOut{Text: in.Text}, nil
}

// RegisterEchoTools registers n echo tools named ToolName(0…n-1): the tools
// of a catalog Scaled to n tools.
func RegisterEchoTools(n int) func(*mcp.Server) {
	return func(s *mcp.Server) {
		for i := range n {
			mcp.AddTool(s, &mcp.Tool{Name: ToolName(i), Description: "echoes its text",
				Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}}, echo)
		}
	}
}

// ResourceClient is the client whose roles Scaled's require_resource_role
// rows name.
const ResourceClient = "api"

// Roles is a static roles file (ROLE_SOURCE=static, ROLES_FILE) for a
// catalog Scaled over nRoles roles: app role RoleName(i) grants the realm
// role of that name, app role "api."+RoleName(i) the client role of
// ResourceClient.
func Roles(nRoles int) ([]byte, error) {
	app := map[string]any{}
	for i := range nRoles {
		r := RoleName(i)
		app[r] = map[string]any{"realm_roles": []string{r}}
		app[ResourceClient+"."+r] = map[string]any{"client_roles": map[string]any{ResourceClient: []string{r}}}
	}
	return json.Marshal(map[string]any{"app_roles": app})
}

// AllRoles is every app role Roles(nRoles) maps: a caller holding them is
// allowed every tool of a Scaled catalog.
func AllRoles(nRoles int) []string {
	var all []string
	for i := range nRoles {
		all = append(all, RoleName(i), ResourceClient+"."+RoleName(i))
	}
	return all
}

// Allowed counts the tools of a catalog Scaled to nTools tools over nRoles
// roles that a caller holding appRoles (mapped by Roles) is allowed, from
// the rows Scaled writes: what a filtered tools/list must hold. The
// harness's and the benchmarks' list checks hold the shipped policy to it.
func Allowed(nTools, nRoles int, appRoles []string) int {
	var realm, client []string
	for _, r := range appRoles {
		if c, ok := strings.CutPrefix(r, ResourceClient+"."); ok {
			client = append(client, c)
		} else {
			realm = append(realm, r)
		}
	}
	has := func(i int) bool { return slices.Contains(realm, RoleName(i%nRoles)) }
	n := 0
	for i := range nTools {
		var ok bool
		switch i % 4 { // the cases of Scaled
		case 0:
			ok = has(i)
		case 1:
			ok = has(i) || has(i+7)
		case 2:
			ok = has(i) && has(i+1)
		case 3:
			ok = slices.Contains(client, RoleName(i%nRoles))
		}
		if ok {
			n++
		}
	}
	return n
}
