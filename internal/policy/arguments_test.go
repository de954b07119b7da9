package policy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// budgetVeto allows approve_budget unless the amount is over 1000.
const budgetVeto = `package mcp.authz

tool_allowed("approve_budget")

deny contains "amount over 1000" if {
	input.mcp.tool.name == "approve_budget"
	input.mcp.tool.arguments.amount > 1000
}
`

func budgetCall(args string) *policy.Input {
	in := &policy.Input{Identity: policy.MustFragment(map[string]any{"authenticated": true, "kind": "user"})}
	in.MCP.Method = "tools/call"
	in.MCP.Tool = &policy.Tool{Name: "approve_budget", Arguments: json.RawMessage(args)}
	return in
}

// Arguments the tool would read otherwise than the policy are a deny, with
// the reason and a logged decision id; never an empty object that slips past
// a veto.
func TestDecideRefusesArguments(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	e, err := policy.New(ctx, writePolicy(t, map[string]string{"authz.rego": budgetVeto}),
		policy.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, args, reason string }{
		// The SDK decodes amount 5000 from this (the invalid string is
		// replaced, the last key wins); the old conversion gave the policy {}.
		{"issue example", "{\"department\":\"ops\",\"amount\":\"\xff\",\"amount\":5000}", "tool arguments refused: invalid UTF-8 in a string at byte 30"},
		{"invalid UTF-8 elsewhere", "{\"department\":\"ops\xff\",\"amount\":5000}", "tool arguments refused: invalid UTF-8"},
		{"duplicate key", `{"department":"ops","amount":5000,"amount":10}`, `tool arguments refused: duplicate key "amount"`},
		{"escaped duplicate key", `{"amount":5000,"\u0061mount":10}`, `tool arguments refused: duplicate key "amount"`},
		{"deep nesting", `{"amount":5000,"x":` + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + `}`, "tool arguments refused: nested deeper than 1000"},
		{"not an object", `[5000]`, "tool arguments refused: arguments must be a JSON object, not an array"},
		{"big integer", `{"amount":9007199254740993}`, "tool arguments refused: integer 9007199254740993 is beyond ±2^53"},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs.Reset()
			d, err := e.Decide(ctx, budgetCall(c.args))
			if err != nil || d.Allow || d.ID == "" || len(d.Reasons) != 1 || !strings.HasPrefix(d.Reasons[0], c.reason) {
				t.Fatalf("want a refusal %q: %+v %v", c.reason, d, err)
			}
			if !strings.Contains(logs.String(), `"decision_id":"`+d.ID+`"`) || !strings.Contains(logs.String(), "tool arguments refused") {
				t.Fatalf("refusal not logged with its decision id: %s", logs.String())
			}
		})
	}
	// What every decoder reads alike is decided by the policy as before.
	for args, allow := range map[string]bool{
		`{"department":"ops","amount":500}`:                                     true,
		`{"department":"ops","amount":5000}`:                                    false,
		`{"department":"ops","amount":5e3}`:                                     false,
		`{"department":"ops","Amount":5000}`:                                    true, // the SDK's decoder matches field names exactly
		`{"department":"caf\u00e9\ud83d\ude00","amount":1000.0000000000000001}`: true, // 1000 as a float64
		``:     true,
		`null`: true,
	} {
		d, err := e.Decide(ctx, budgetCall(args))
		if err != nil || d.Allow != allow {
			t.Fatalf("%s: %+v %v, want allow=%v", args, d, err, allow)
		}
	}
}
