package policy

import (
	"encoding/json"
	"strings"
	"testing"
)

// benchArgs are typical tools/call arguments: the benchmark inputs' small
// query, and a larger document with nesting, escapes and fractions.
var benchArgs = map[string]string{
	"small": `{"query":"q3 revenue","limit":10}`,
	"medium": `{"department":"ops","amount":1250.75,"currency":"EUR","approvers":["alice@example.com","bob@example.com"],` +
		`"note":"line one\nline two \"quoted\" caf\u00e9","items":[` +
		strings.Repeat(`{"sku":"A-1001","qty":3,"price":19.99,"tags":["x","y"],"meta":{"ok":true,"ref":null}},`, 15) +
		`{"sku":"Z","qty":1,"price":0.5,"tags":[],"meta":{}}]}`,
}

// BenchmarkArguments is the conversion of a call's arguments into the
// policy's input, which an evaluated decision makes ("decode"), and the
// check a reused decision makes of the same bytes ("check": the same rules,
// no AST).
func BenchmarkArguments(b *testing.B) {
	for _, way := range []struct {
		name string
		run  func(json.RawMessage) error
	}{
		{"decode", func(raw json.RawMessage) error { _, err := decodeArguments(raw); return err }},
		{"check", checkArguments},
	} {
		for _, name := range []string{"small", "medium"} {
			raw := json.RawMessage(benchArgs[name])
			b.Run(way.name+"/"+name, func(b *testing.B) {
				b.SetBytes(int64(len(raw)))
				b.ReportAllocs()
				for b.Loop() {
					if err := way.run(raw); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
