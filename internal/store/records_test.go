package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// A Records store never drops a live value to make room: once full, a new
// key is refused, an existing one may still be replaced, and an expired one
// makes room again. (A cache store drops random live values instead.)
func TestRecordsRefuseRatherThanForget(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	m := NewRecords(8)
	m.now = func() time.Time { return now }
	for i := range 8 {
		if err := m.Set(ctx, fmt.Sprint("k", i), []byte("v"), time.Duration(i+1)*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Set(ctx, "new", []byte("v"), time.Hour); !errors.Is(err, ErrFull) {
		t.Fatalf("Set on a full store: %v, want ErrFull", err)
	}
	if won, err := m.SetNX(ctx, "new", []byte("v"), time.Hour); won || !errors.Is(err, ErrFull) {
		t.Fatalf("SetNX on a full store: %v %v, want ErrFull", won, err)
	}
	if err := m.Set(ctx, "k3", []byte("w"), time.Hour); err != nil {
		t.Fatalf("replacing a value of a full store: %v", err)
	}
	for i := range 8 {
		if _, err := m.Get(ctx, fmt.Sprint("k", i)); err != nil {
			t.Fatalf("k%d was dropped: %v", i, err)
		}
	}
	now = now.Add(90 * time.Second) // k0 expired
	if err := m.Set(ctx, "new", []byte("v"), time.Hour); err != nil {
		t.Fatalf("Set once a value expired: %v", err)
	}
	if m.Len() != 8 {
		t.Fatalf("%d entries, want 8", m.Len())
	}
}

// The cache store keeps its old behaviour: full, it drops values to make room.
func TestMemoryCacheMakesRoom(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(8)
	for i := range 20 {
		if err := m.Set(ctx, fmt.Sprint("k", i), []byte("v"), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.Len(); n > 8 {
		t.Fatalf("%d entries in a cache of 8", n)
	}
	if _, err := m.Get(ctx, "k19"); err != nil {
		t.Fatalf("the last value written is not there: %v", err)
	}
}
