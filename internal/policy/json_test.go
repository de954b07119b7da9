package policy

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

func TestParseJSONMatchesOPA(t *testing.T) {
	for _, doc := range []string{
		`{}`, `[]`, `{"a":1,"b":[true,false,null,"x"],"c":{"d":-1.5e3}}`, ` { "q" : "he said \"hi\"\n" , "u":"\u00e9\ud83d\ude00" } `,
		`"plain"`, `0`, `[[],{}]`, `{"n":12345678901234567890}`,
	} {
		got, err := parseJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		var x any
		if err := util.UnmarshalJSON([]byte(doc), &x); err != nil {
			t.Fatal(err)
		}
		want, _ := ast.InterfaceToValue(x)
		if got.Compare(want) != 0 {
			t.Fatalf("%s: got %v, want %v", doc, got, want)
		}
	}
}

func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `"\u0041"`, `[1e5,-0.0]`, `{"a":`, `tru`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseJSON([]byte(s))
		valid := json.Valid([]byte(s))
		if (err == nil) != valid {
			t.Fatalf("%q: parse err %v, json.Valid %v", s, err, valid)
		}
		if err == nil {
			var x any
			_ = util.UnmarshalJSON([]byte(s), &x)
			want, _ := ast.InterfaceToValue(x)
			if got.Compare(want) != 0 {
				t.Fatalf("%q: got %v want %v", s, got, want)
			}
		}
	})
}

func TestParseJSONRejects(t *testing.T) {
	for _, doc := range []string{`{`, `{"a"}`, `[1,]`, `{"a":1}x`, `nul`, "\"\x01\"", `01`, strings.Repeat("[", 200) + strings.Repeat("]", 200)} {
		if _, err := parseJSON([]byte(doc)); err == nil {
			t.Fatalf("%q accepted", doc)
		}
	}
}
