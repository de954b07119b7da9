package policy

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	segjson "github.com/segmentio/encoding/json"
)

// sdkDecode decodes arguments as a typed tool of the MCP SDK does: with
// segmentio's decoder (the SDK's internal/json) into a Go map.
func sdkDecode(b []byte) (any, error) {
	var v any
	err := segjson.Unmarshal(b, &v)
	return v, err
}

// sameAsSDK reports where the policy's value and the SDK's decoding of the
// same arguments differ: objects by their keys, strings byte for byte,
// numbers by their float64.
func sameAsSDK(got ast.Value, want any, path string) error {
	switch w := want.(type) {
	case map[string]any:
		o, ok := got.(ast.Object)
		if !ok || o.Len() != len(w) {
			return fmt.Errorf("%s: policy has %v, the tool %v", path, got, w)
		}
		for k, wv := range w {
			gv := o.Get(ast.StringTerm(k))
			if gv == nil {
				return fmt.Errorf("%s: key %q missing for the policy", path, k)
			}
			if err := sameAsSDK(gv.Value, wv, path+"."+strconv.Quote(k)); err != nil {
				return err
			}
		}
		return nil
	case []any:
		a, ok := got.(*ast.Array)
		if !ok || a.Len() != len(w) {
			return fmt.Errorf("%s: policy has %v, the tool %v", path, got, w)
		}
		for i, wv := range w {
			if err := sameAsSDK(a.Elem(i).Value, wv, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case string:
		if s, ok := got.(ast.String); !ok || string(s) != w {
			return fmt.Errorf("%s: policy has %v, the tool %q", path, got, w)
		}
		return nil
	case float64:
		n, ok := got.(ast.Number)
		if !ok {
			return fmt.Errorf("%s: policy has %v, the tool %v", path, got, w)
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil || f != w {
			return fmt.Errorf("%s: policy has %s, the tool %v", path, n, w)
		}
		return nil
	case bool:
		if b, ok := got.(ast.Boolean); !ok || bool(b) != w {
			return fmt.Errorf("%s: policy has %v, the tool %v", path, got, w)
		}
		return nil
	case nil:
		if _, ok := got.(ast.Null); !ok {
			return fmt.Errorf("%s: policy has %v, the tool null", path, got)
		}
		return nil
	}
	return fmt.Errorf("%s: unexpected %T from the SDK's decoder", path, want)
}

func nest(depth int) string {
	// depth objects and arrays: the arguments object, then arrays.
	return `{"a":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`
}

// Arguments the tool would read one way and the policy could read another
// are refused, each with its reason; none becomes {}.
func TestArgumentsRefused(t *testing.T) {
	manyKeys := func(dup bool) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range 40 {
			fmt.Fprintf(&b, `"k%02d":%d,`, i, i)
		}
		if dup {
			b.WriteString(`"k\u0031\u0037":0,`)
		}
		b.WriteString(`"z":0}`)
		return b.String()
	}
	cases := []struct{ name, args, reason string }{
		// The example: the SDK reads amount 5000, the old parser gave {}.
		{"issue example", "{\"department\":\"ops\",\"amount\":\"\xff\",\"amount\":5000}", "invalid UTF-8 in a string at byte 30"},
		{"duplicate key", `{"department":"ops","amount":1,"amount":5000}`, `duplicate key "amount"`},
		{"duplicate key escaped", `{"amount":1,"\u0061mount":5000}`, `duplicate key "amount"`},
		{"duplicate key nested", `{"a":[{"x":1,"x":2}]}`, `duplicate key "x"`},
		{"duplicate U+FFFD key", "{\"\\ufffd\":1,\"\xef\xbf\xbd\":2}", "duplicate key \"\ufffd\""},
		{"duplicate among many keys", manyKeys(true), `duplicate key "k17"`},
		{"duplicate key with escapes", `{"a\nb":1,"a\u000ab":2}`, `duplicate key "a\nb"`},
		{"invalid UTF-8 value", "{\"a\":\"x\xffy\"}", "invalid UTF-8 in a string at byte 7"},
		{"invalid UTF-8 key", "{\"\xff\":1}", "invalid UTF-8"},
		{"invalid UTF-8 beside an escape", "{\"a\":\"\\n\xff\"}", "invalid UTF-8"},
		{"overlong UTF-8", "{\"a\":\"\xc0\x80\"}", "invalid UTF-8"},
		{"UTF-8 encoded surrogate", "{\"a\":\"\xed\xa0\x80\"}", "invalid UTF-8"},
		{"truncated UTF-8", "{\"a\":\"\xe2\x82\"}", "invalid UTF-8"},
		{"lone high surrogate", `{"a":"\ud800"}`, "lone UTF-16 surrogate at byte 6"},
		{"lone high surrogate then text", `{"a":"\ud800xxxxxxxx"}`, "lone UTF-16 surrogate"},
		{"high surrogate then non-surrogate", `{"a":"\ud800\u0041"}`, "lone UTF-16 surrogate"},
		{"lone low surrogate", `{"a":"\udc00"}`, "lone UTF-16 surrogate"},
		{"surrogates reversed", `{"a":"\udc00\ud800"}`, "lone UTF-16 surrogate"},
		{"lone surrogate in a key", `{"\ud83d":1}`, "lone UTF-16 surrogate"},
		{"too deep", nest(sdkMaxDepth + 1), "nested deeper than 1000"},
		{"number overflows", `{"a":1e400}`, "number 1e400 is out of the range of float64"},
		{"negative number overflows", `{"a":-1.8e308}`, "out of the range of float64"},
		{"integer beyond 2^53", `{"a":9007199254740993}`, "integer 9007199254740993 is beyond ±2^53"},
		{"negative integer beyond 2^53", `{"a":-9007199254740993}`, "beyond ±2^53"},
		{"long integer", `{"a":12345678901234567890}`, "beyond ±2^53"},
		{"array", `[1,2]`, "arguments must be a JSON object, not an array"},
		{"string", `"amount"`, "not a string"},
		{"number", ` 5000 `, "not a number"},
		{"boolean", `true`, "not a boolean"},
		{"garbage", `nope`, "malformed JSON at byte 0"},
		{"leading zero", `{"a":01}`, "malformed JSON"},
		{"bare fraction", `{"a":1.}`, "malformed JSON"},
		{"bare exponent", `{"a":1e+}`, "malformed JSON"},
		{"leading dot", `{"a":.5}`, "malformed JSON"},
		{"plus sign", `{"a":+1}`, "malformed JSON"},
		{"hex", `{"a":0x10}`, "malformed JSON"},
		{"NaN", `{"a":NaN}`, "malformed JSON"},
		{"short literal", `{"a":tru}`, "malformed JSON"},
		{"trailing comma", `{"a":1,}`, "malformed JSON"},
		{"missing colon", `{"a" 1}`, "malformed JSON"},
		{"bad escape", `{"a":"\q"}`, "malformed JSON"},
		{"short unicode escape", `{"a":"x\u00"}`, "malformed JSON"},
		{"control character", "{\"a\":\"\x01\"}", "control character"},
		{"unterminated string", `{"a":"abc\"}`, "unterminated string"},
		{"unterminated object", `{"a":1`, "malformed JSON"},
		{"data after", `{"a":1}x`, "data after the arguments object"},
		{"second object", `{"a":1} {"a":2}`, "data after the arguments object"},
		{"unicode space", "\u00a0{}", "malformed JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := decodeArguments([]byte(c.args))
			if cerr := checkArguments([]byte(c.args)); cerr == nil || err == nil || cerr.Error() != err.Error() {
				t.Errorf("checkArguments: %v; decodeArguments: %v", cerr, err)
			}
			var ae *argumentsError
			if !errors.As(err, &ae) {
				t.Fatalf("accepted as %v (err %v)", v, err)
			}
			if !strings.HasPrefix(err.Error(), "tool arguments refused: ") || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("reason %q, want it to contain %q", err, c.reason)
			}
		})
	}
}

// Arguments every decoder reads alike pass, and the policy sees what the
// SDK's decoder gives the tool.
func TestArgumentsUnchanged(t *testing.T) {
	for _, args := range []string{
		`{}`, ` { } `, `{"query":"q3 revenue","limit":10}`,
		`{"department":"ops","amount":5000}`,
		`{"s":"\u00e9\ud83d\ude00 \"\\\/\b\f\n\r\t","e":"","u":"caf` + "\xc3\xa9" + `"}`,
		"{\"fffd\":\"\xef\xbf\xbd\\ufffd\",\"nonchar\":\"\\ufffe\xef\xbf\xbf\",\"del\":\"\x7f\",\"nul\":\"\\u0000\"}",
		`{"amount":1,"Amount":2,"AMOUNT":3}`,
		`{"a":[1,[2,[3,{}]],{"b":null,"c":true,"d":false}],"n":[]}`,
		`{"i":[0,-0,1,-1,511,512,513,9007199254740992,-9007199254740992,999999999999999]}`,
		`{"f":[1.5,-2.25,1e2,1E2,1.0e+2,1000.0,1e-400,5e-324,1.7976931348623157e308,0.30000000000000001,1e21,1e-7,123456789012345678901234567890.0]}`,
		"\t{\"a\":1}\r\n",
		nest(sdkMaxDepth),
	} {
		got, err := decodeArguments([]byte(args))
		if err != nil {
			t.Fatalf("%.80q refused: %v", args, err)
		}
		if err := checkArguments([]byte(args)); err != nil {
			t.Fatalf("%.80q refused by the check: %v", args, err)
		}
		want, err := sdkDecode([]byte(args))
		if err != nil {
			t.Fatalf("%.80q: the SDK's decoder refuses it: %v", args, err)
		}
		if err := sameAsSDK(got, want, "arguments"); err != nil {
			t.Fatalf("%.80q: %v", args, err)
		}
	}
	// Absent and null are {}, as the SDK hands them to a typed tool.
	for _, args := range []string{"", "null", " null\n"} {
		got, err := decodeArguments([]byte(args))
		if err != nil || got.Compare(ast.NewObject()) != 0 {
			t.Fatalf("%q: %v %v", args, got, err)
		}
	}
}

// The policy reads a number as the float64 the tool gets, written so that
// integral values are Rego integers: 1000.0000000000000001 is 1000 for the
// tool, so it must not exceed 1000 for the policy either, and
// 999.99999999999999999 must not fall below it.
func TestArgumentsNumbersAsFloat64(t *testing.T) {
	for text, want := range map[string]string{
		"1000.0000000000000001": "1000", "999.99999999999999999": "1000", "5e3": "5000", "1E2": "100",
		"1e-400": "0", "-0.0": "-0", "0.30000000000000001": "0.3", "1.5": "1.5", "1e21": "1e+21", "1e-7": "1e-07",
		"42": "42", "9007199254740992": "9007199254740992", "9007199254740993.0": "9007199254740992",
	} {
		v, err := decodeArguments([]byte(`{"n":` + text + `}`))
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		got := v.(ast.Object).Get(ast.StringTerm("n")).Value
		if got.Compare(ast.Number(want)) != 0 || string(got.(ast.Number)) != want {
			t.Errorf("%s: policy sees %v, want %s", text, got, want)
		}
		if _, ok := got.(ast.Number).Int(); ok != !strings.ContainsAny(want, ".e") {
			t.Errorf("%s: %s is not read as an integer", text, want)
		}
	}
}

// FuzzArguments: whenever mcpguard shows arguments to the policy, the SDK's
// decoder reads the same bytes to the same value; whenever the SDK's decoder
// refuses bytes, mcpguard refuses them too.
func FuzzArguments(f *testing.F) {
	f.Add([]byte(`{"query":"q3 revenue","limit":10}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeArguments(b)
		// The check a reused decision makes refuses the same bytes, for the
		// same reason.
		if cerr := checkArguments(b); (cerr == nil) != (err == nil) || (err != nil && cerr.Error() != err.Error()) {
			t.Fatalf("%q: checkArguments: %v; decodeArguments: %v", b, cerr, err)
		}
		if err != nil {
			var ae *argumentsError
			if !errors.As(err, &ae) || !strings.HasPrefix(err.Error(), "tool arguments refused: ") {
				t.Fatalf("%q: not a refusal: %v", b, err)
			}
			return
		}
		if _, ok := got.(ast.Object); !ok {
			t.Fatalf("%q: accepted as %v, not an object", b, got)
		}
		if trimmed := bytes.Trim(b, " \t\r\n"); len(trimmed) == 0 || string(trimmed) == "null" {
			if got.Compare(ast.NewObject()) != 0 {
				t.Fatalf("%q: absent arguments are %v", b, got)
			}
			return
		}
		want, err := sdkDecode(b)
		if err != nil {
			t.Fatalf("%q: accepted as %v, the SDK's decoder refuses it: %v", b, got, err)
		}
		if err := sameAsSDK(got, want, "arguments"); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		// A number's text is a float64's shortest form, or an exact integer.
		ast.WalkTerms(got, func(term *ast.Term) bool {
			if n, ok := term.Value.(ast.Number); ok {
				f, err := strconv.ParseFloat(string(n), 64)
				if err != nil || math.IsInf(f, 0) {
					t.Fatalf("%q: number %s", b, n)
				}
			}
			return false
		})
	})
}
