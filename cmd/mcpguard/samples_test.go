package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// update rewrites the fixtures under test/policy from the commands' output:
// go test ./cmd/mcpguard -run 'TestSampleInputs|TestCatalogFixture' -update
var update = flag.Bool("update", false, "rewrite test/policy/ from the output of policy input and policy catalog")

// fixtures is where the sample inputs and the catalog live: outside the
// policy folder, whose every *.json the server (and opa test) would load as
// data (policies/testdata/x.json as data.testdata).
var fixtures = filepath.Join("..", "..", "test", "policy")

// sampleSession is the MCP session every sample arrives in, and sampleTime
// its time: a Wednesday, 10:00 UTC, within working hours.
var (
	sampleSession = []string{"--client", "mcp-inspector/0.17.0", "--protocol-version", "2025-11-25", "--session-id", "3f6c2a9e5b7d4e1f8a0b9c8d7e6f5a4b"}
	sampleTime    = []string{"--time", "2026-03-04T10:00:00Z"}
)

// samples are the inputs of test/policy/inputs, made by policy input, and
// what the shipped policies decide for them (policy eval's exit status).
var samples = []struct {
	file string
	args []string
	exit int
}{
	{"user-call-allowed.json", []string{"--user", "bob", "--tool", "approve_budget", "--arguments", `{"department":"operations","amount":5000}`}, 0},
	{"user-call-denied.json", []string{"--user", "alice", "--tool", "approve_budget", "--arguments", `{"department":"operations","amount":5000}`}, exitDenied},
	{"app-call-allowed.json", []string{"--app", "--user", "reporting-agent", "--roles", "data_reader", "--tool", "read_critical_data", "--arguments", `{"query":"open tickets","limit":5}`}, 0},
	{"app-call-denied.json", []string{"--app", "--user", "reporting-agent", "--roles", "data_reader", "--tool", "approve_budget", "--arguments", `{"department":"operations","amount":5000}`}, exitDenied},
	{"user-tools-list.json", []string{"--user", "alice", "--method", "tools/list"}, 0},
	{"anonymous-call-denied.json", []string{"--anonymous", "--tool", "get_current_user"}, exitDenied},
}

// devAuthority is the development identity provider's address under make
// run; the samples carry it in place of the free port a test serves it on.
const devAuthority = "http://127.0.0.1:8001"

var authorityRE = regexp.MustCompile(`http://127\.0\.0\.1:\d+/`)

// normalize puts make run's issuer address in place of the test's.
func normalize(doc string) string { return authorityRE.ReplaceAllString(doc, devAuthority+"/") }

// comparable is a document without what differs from one minting of a
// token to the next (its times and unique id).
func comparable(t *testing.T, doc string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, doc)
	}
	if id, ok := m["identity"].(map[string]any); ok {
		if claims, ok := id["claims"].(map[string]any); ok {
			for _, k := range []string{"iat", "nbf", "exp", "uti"} {
				delete(claims, k)
			}
		}
	}
	return m
}

// The sample inputs are what policy input prints for their command lines
// today, and the shipped policies decide each as expected (policy eval).
func TestSampleInputs(t *testing.T) {
	isolate(t)
	for _, s := range samples {
		t.Run(s.file, func(t *testing.T) {
			path := filepath.Join(fixtures, "inputs", s.file)
			args := append([]string{"policy", "input", "--policy-dir", shippedPolicies}, s.args...)
			args = append(append(args, sampleSession...), sampleTime...)
			out, errOut, code := runCLI(t, args...)
			if code != 0 {
				t.Fatalf("policy input: exit %d: %s", code, errOut)
			}
			out = normalize(out)
			if *update {
				if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			stored, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test ./cmd/mcpguard -run TestSampleInputs -update writes it)", err)
			}
			got, want := comparable(t, out), comparable(t, string(stored))
			if g, w := mustJSON(t, got), mustJSON(t, want); g != w {
				t.Errorf("%s is stale (go test ./cmd/mcpguard -run TestSampleInputs -update):\npolicy input prints %s\nthe file holds      %s", path, g, w)
			}

			evalOut, evalErr, code := runCLI(t, "policy", "eval", "--policy-dir", shippedPolicies, "--input", path)
			if code != s.exit {
				t.Fatalf("policy eval: exit %d, want %d\n%s%s", code, s.exit, evalOut, evalErr)
			}
			var d struct{ Allow bool }
			if err := json.Unmarshal([]byte(evalOut), &d); err != nil || d.Allow != (s.exit == 0) {
				t.Errorf("policy eval printed %q (%v)", evalOut, err)
			}
		})
	}
}

func mustJSON(t *testing.T, x any) string {
	t.Helper()
	b, err := json.Marshal(x)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// test/policy/catalog.json is what policy catalog prints, and carries what
// a test fixture needs: every tool with its hints and its schema.
func TestCatalogFixture(t *testing.T) {
	isolate(t)
	out, errOut, code := runCLI(t, "policy", "catalog")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	path := filepath.Join(fixtures, "catalog.json")
	if *update {
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, []byte(out)) {
		t.Errorf("%s is stale (go test ./cmd/mcpguard -run TestCatalogFixture -update):\n%s", path, out)
	}
	var c struct {
		Tools             map[string]map[string]any
		Resources         map[string]map[string]any
		ResourceTemplates map[string]map[string]any `json:"resource_templates"`
		Prompts           map[string]map[string]any
	}
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Tools) == 0 || len(c.Resources) == 0 || len(c.ResourceTemplates) == 0 || len(c.Prompts) == 0 {
		t.Fatalf("a section is empty: %s", out)
	}
	for name, tool := range c.Tools {
		// The hints as the policy reads them: each one said, defaults applied.
		ann, _ := tool["annotations"].(map[string]any)
		for _, h := range []string{"readOnlyHint", "idempotentHint", "openWorldHint"} {
			if _, ok := ann[h].(bool); !ok {
				t.Errorf("tool %s: annotations lack %s: %v", name, h, ann)
			}
		}
		if s, _ := tool["inputSchema"].(map[string]any); s["type"] != "object" {
			t.Errorf("tool %s: no input schema: %v", name, tool)
		}
		if _, ok := tool["name"]; ok {
			t.Errorf("tool %s: the name is the key, not a field", name)
		}
	}
	if !strings.Contains(out, `"data://items/{item_id}"`) {
		t.Errorf("the resource template is not keyed by its URI template:\n%s", out)
	}
}
