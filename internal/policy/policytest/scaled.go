// Package policytest builds policy folders for tests and benchmarks: the
// shipped Rego with its catalog scaled to many tools and roles, the roles
// file and the echo tools that go with it, and what a caller is allowed.
package policytest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ToolName is the name of scaled tool i.
func ToolName(i int) string { return fmt.Sprintf("tool_%04d", i) }

// RoleName is the name of scaled role i.
func RoleName(i int) string { return fmt.Sprintf("role_%02d", i) }

// Scaled writes into dir the Rego of policiesDir (without tests) and its
// data.json with the tools catalog replaced by nTools rows over nRoles roles,
// cycling through require_role, require_any_role, require_all_roles and
// require_resource_role (client "api"). Tool i requires role i mod nRoles.
func Scaled(policiesDir, dir string, nTools, nRoles int) error {
	files, err := filepath.Glob(filepath.Join(policiesDir, "*.rego"))
	if err != nil {
		return err
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.rego") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), src, 0o600); err != nil {
			return err
		}
	}
	raw, err := os.ReadFile(filepath.Join(policiesDir, "data.json"))
	if err != nil {
		return err
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		return err
	}
	catalog, ok := data["mcp"].(map[string]any)["catalog"].(map[string]any)
	if !ok {
		return fmt.Errorf("%s has no mcp.catalog", policiesDir)
	}
	role := func(i int) string { return RoleName(i % nRoles) }
	tools := map[string]any{}
	for i := range nTools {
		var row map[string]any
		switch i % 4 {
		case 0:
			row = map[string]any{"require_role": role(i)}
		case 1:
			row = map[string]any{"require_any_role": []string{role(i), role(i + 7)}}
		case 2:
			row = map[string]any{"require_all_roles": []string{role(i), role(i + 1)}}
		case 3:
			row = map[string]any{"require_resource_role": map[string]any{"client": "api", "role": role(i)}}
		}
		tools[ToolName(i)] = row
	}
	catalog["tools"] = tools
	out, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "data.json"), out, 0o600)
}

// AllowAll writes a policy that allows every request, anonymous callers
// included, and so shows every list item: the baseline for measuring what
// the real policy costs.
func AllowAll(dir string) error {
	return os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(`package mcp.authz

allow_unauthenticated := true

allow := true

tool_allowed(_) := true

resource_allowed(_) := true

prompt_allowed(_) := true

template_allowed(_) := true
`), 0o600)
}

// Rows counts the tools in dir's catalog and the distinct rows among them
// (tools share rows: the catalog cycles four kinds over nRoles roles), so a
// benchmark can check the size it claims.
func Rows(dir string) (tools, distinct int, err error) {
	raw, err := os.ReadFile(filepath.Join(dir, "data.json"))
	if err != nil {
		return 0, 0, err
	}
	var data struct {
		MCP struct {
			Catalog struct {
				Tools map[string]json.RawMessage `json:"tools"`
			} `json:"catalog"`
		} `json:"mcp"`
	}
	if err := json.Unmarshal(raw, &data); err != nil {
		return 0, 0, err
	}
	seen := map[string]bool{}
	for _, row := range data.MCP.Catalog.Tools {
		seen[string(row)] = true
	}
	return len(data.MCP.Catalog.Tools), len(seen), nil
}
