package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// The Rego tests' table of tool annotations (policies/authz_test.rego) is
// what the server puts in the input for each registered tool: the catalog
// fixture, which TestCatalogFixture keeps equal to `mcpguard policy catalog`.
func TestRegoTestAnnotationsMatchCatalog(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(fixtures, "catalog.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Tools map[string]struct {
			Annotations map[string]any `json:"annotations"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{}
	for name, tool := range c.Tools {
		want[name] = tool.Annotations
	}
	loaded, err := policy.Load(filepath.Join("..", "..", "policies"), true)
	if err != nil {
		t.Fatal(err)
	}
	compiler, err := loaded.Compile()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rego.New(rego.Query("data.mcp.authz_test.tool_annotations"), rego.Compiler(compiler),
		rego.Store(inmem.NewFromObject(loaded.Documents))).Eval(context.Background())
	if err != nil || len(rs) != 1 {
		t.Fatalf("tool_annotations: %v %v", rs, err)
	}
	if got := rs[0].Expressions[0].Value; !reflect.DeepEqual(got, want) {
		t.Fatalf("policies/authz_test.rego tool_annotations differ from %s:\n got %v\nwant %v", filepath.Join(fixtures, "catalog.json"), got, want)
	}
}
