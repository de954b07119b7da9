package server

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/clocktest"
	"github.com/mcpguard/mcpguard/internal/exchange"
)

// expiringRoles grants one role until a set time, counting the asks.
type expiringRoles struct {
	until time.Time
	calls int
}

func (*expiringRoles) Name() string { return "test" }

func (r *expiringRoles) Resolve(context.Context, *authn.Identity, string) (*exchange.Authorization, error) {
	r.calls++
	return &exchange.Authorization{Source: "test", Roles: []string{"r"}, RealmRoles: []string{"r"},
		ClientRoles: map[string][]string{}, Claims: map[string]any{}, Expiry: r.until}, nil
}

// A caller's roles are kept with its identity until the role source's
// expiry, and resolved again from then on: roles taken away at the source
// stop counting. The server's clock is moved, not slept through.
func TestRolesResolvedAgainAfterTheirExpiry(t *testing.T) {
	clock := clocktest.New(time.Now())
	src := &expiringRoles{until: clock.Now().Add(time.Minute)}
	s := &Server{logger: slog.New(slog.DiscardHandler), roles: src, now: clock.Now}
	id := &authn.Identity{Kind: authn.KindUser, TenantID: "t", ObjectID: "o", Expiry: clock.Now().Add(time.Hour)}
	ctx := context.Background()

	first := s.resolve(ctx, id, "token")
	clock.Advance(time.Minute - time.Nanosecond)
	if p := s.resolve(ctx, id, "token"); p != first || src.calls != 1 {
		t.Fatalf("before the roles' expiry: resolved again (%d asks)", src.calls)
	}
	clock.Advance(time.Nanosecond)
	if p := s.resolve(ctx, id, "token"); p == first || src.calls != 2 {
		t.Fatalf("at the roles' expiry: still the old roles (%d asks)", src.calls)
	}
}
