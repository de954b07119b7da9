package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/clocktest"
	"github.com/mcpguard/mcpguard/internal/store"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

func key32() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

func TestMemoryExpiryAndBound(t *testing.T) {
	ctx := context.Background()
	m := store.NewMemory(100)
	clock := clocktest.New(time.Now())
	store.SetClock(m, clock.Now)
	_ = m.Set(ctx, "a", []byte("1"), 50*time.Millisecond)
	clock.Advance(50*time.Millisecond - time.Nanosecond)
	if v, err := m.Get(ctx, "a"); err != nil || string(v) != "1" {
		t.Fatalf("%q %v", v, err)
	}
	clock.Advance(time.Nanosecond)
	if _, err := m.Get(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired value served: %v", err)
	}
	for i := range 1000 {
		_ = m.Set(ctx, fmt.Sprint(i), []byte("x"), time.Minute)
	}
	if m.Len() > 100 {
		t.Fatalf("bound not kept: %d", m.Len())
	}
}

func TestEncryptedSealsAndRotates(t *testing.T) {
	ctx := context.Background()
	inner := store.NewMemory(0)
	old, fresh := key32(), key32()
	e1, _ := store.NewEncrypted(inner, [][]byte{old})
	secret := []byte(`{"roles":["data_reader"]}`)
	if err := e1.Set(ctx, "k", secret, time.Minute); err != nil {
		t.Fatal(err)
	}
	raw, _ := inner.Get(ctx, "k")
	if bytes.Contains(raw, []byte("data_reader")) {
		t.Fatal("plain text reached the inner store")
	}
	// The new key first: old values still open, new ones are sealed with the new key.
	e2, _ := store.NewEncrypted(inner, [][]byte{fresh, old})
	if v, err := e2.Get(ctx, "k"); err != nil || !bytes.Equal(v, secret) {
		t.Fatalf("rotation: %q %v", v, err)
	}
	_ = e2.Set(ctx, "k2", secret, time.Minute)
	if _, err := e1.Get(ctx, "k2"); !errors.Is(err, store.ErrUnreadable) {
		t.Fatalf("a value sealed with the new key opened with the old alone: %v", err)
	}
	// A value moved under another key does not open.
	_ = inner.Set(ctx, "moved", raw, time.Minute)
	if _, err := e1.Get(ctx, "moved"); !errors.Is(err, store.ErrUnreadable) {
		t.Fatalf("moved value opened: %v", err)
	}
	_ = inner.Set(ctx, "short", []byte("x"), time.Minute)
	if _, err := e1.Get(ctx, "short"); !errors.Is(err, store.ErrUnreadable) {
		t.Fatalf("truncated value: %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	if _, err := store.ParseKeys("dG9vIHNob3J0"); err == nil {
		t.Fatal("short key accepted")
	}
	if _, err := store.ParseKeys("!!!"); err == nil {
		t.Fatal("non-base64 accepted")
	}
	k, err := store.ParseKeys("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=, AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
	if err != nil || len(k) != 2 {
		t.Fatalf("%v %d", err, len(k))
	}
}

func TestRedisEncryptedAndFallback(t *testing.T) {
	ctx := context.Background()
	addr, stop := storetest.RedisServer(t)
	r, err := store.NewRedis(store.RedisOptions{Addrs: []string{addr}, Password: storetest.Password, Prefix: "test:"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	fb := store.NewFallback(r, store.NewMemory(0), nil)
	e, _ := store.NewEncrypted(fb, [][]byte{key32()})
	secret := []byte("role:finance")
	if err := e.Set(ctx, "a", secret, time.Minute); err != nil {
		t.Fatal(err)
	}
	raw, err := r.Get(ctx, "a")
	if err != nil || bytes.Contains(raw, secret) {
		t.Fatalf("Redis holds %q (%v)", raw, err)
	}
	if v, err := e.Get(ctx, "a"); err != nil || !bytes.Equal(v, secret) {
		t.Fatalf("%q %v", v, err)
	}
	if err := e.Set(ctx, "short", secret, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Redis expires it by its own clock: asked until it has, within a bound.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := e.Get(ctx, "short")
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("a value set for 50ms, still in Redis after 5s: %v", err)
		}
	}

	stop() // Redis goes down: writes and reads fall back to memory, nothing is lost for this process.
	if err := e.Set(ctx, "b", secret, time.Minute); err != nil {
		t.Fatalf("set during outage: %v", err)
	}
	if v, err := e.Get(ctx, "b"); err != nil || !bytes.Equal(v, secret) {
		t.Fatalf("get during outage: %q %v", v, err)
	}
	if !fb.Down() {
		t.Fatal("outage not noticed")
	}
	_, wrong := store.NewRedis(store.RedisOptions{URL: "http://nope"})
	if wrong == nil {
		t.Fatal("bad REDIS_URL accepted")
	}
}
