package authn_test

import (
	"context"
	"testing"

	"github.com/mcpguard/mcpguard/internal/devidp"
)

// Without scp, a token is app-only when it says so (idtyp=app) or, without
// idtyp, when its sub is its oid (a service principal's). Neither: refused,
// whatever else it carries (an ID token's shape).
func TestAppOnlyNeedsIdtypOrSubEqualOid(t *testing.T) {
	f := newFixture(t, nil)
	for _, c := range []struct {
		name  string
		extra map[string]any
		ok    bool
	}{
		{"idtyp=app", map[string]any{"idtyp": "app"}, true},
		{"no idtyp, sub = oid", map[string]any{"idtyp": nil}, true},
		{"no idtyp, another sub", map[string]any{"idtyp": nil, "sub": "not-the-oid"}, false},
		{"no idtyp, no sub", map[string]any{"idtyp": nil, "sub": nil}, false},
		{"idtyp=user", map[string]any{"idtyp": "user"}, false},
	} {
		_, err := f.v.Verify(context.Background(), f.mint(t, devidp.Token{User: "svc-" + c.name, App: true, Extra: c.extra}))
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.ok {
			if err == nil {
				t.Errorf("%s: accepted as app-only", c.name)
				continue
			}
			wantErr(t, err, 401, "neither a delegated access token")
		}
	}
}
