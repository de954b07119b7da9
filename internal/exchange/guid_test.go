package exchange

import (
	"strings"
	"testing"
)

// A tenant id is 8-4-4-4-12 hexadecimal digits, either case: every digit and
// letter at the edges of the ranges is one, the characters next to them are not.
func TestIsGUID(t *testing.T) {
	base := "72f988bf-0000-4000-8000-000000000001"
	if !isGUID(base) {
		t.Fatal(base)
	}
	for _, c := range "09afAF" {
		if s := base[:35] + string(c); !isGUID(s) {
			t.Errorf("%q refused", s)
		}
		if s := string(c) + base[1:]; !isGUID(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, c := range "/:`g@G-" {
		if s := base[:35] + string(c); isGUID(s) {
			t.Errorf("%q accepted", s)
		}
	}
	for _, s := range []string{
		base[:35], base + "0", strings.Replace(base, "-", "0", 1), "72f988bf0000-4000-8000-0000000000001",
		"72f988bf-0000-4000-8000-00000000000é",
	} {
		if isGUID(s) {
			t.Errorf("%q accepted", s)
		}
	}
}
