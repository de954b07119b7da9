package store_test

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/clocktest"
	"github.com/mcpguard/mcpguard/internal/store"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// claimOnce has 8 goroutines claim one key at once: exactly one must win.
func claimOnce(t *testing.T, c store.Claimer, key string) {
	t.Helper()
	ctx := context.Background()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			won, err := c.SetNX(ctx, key, []byte("claimed"), time.Minute)
			if err != nil {
				t.Error(err)
			}
			if won {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d claims of one key won; want exactly 1", n)
	}
	if v, err := c.Get(ctx, key); err != nil || !bytes.Equal(v, []byte("claimed")) {
		t.Fatalf("claimed value: %q %v", v, err)
	}
}

func TestClaimMemoryOnceAndAfterExpiry(t *testing.T) {
	m := store.NewMemory(0)
	clock := clocktest.New(time.Now())
	store.SetClock(m, clock.Now)
	claimOnce(t, m, "k")
	clock.Advance(time.Minute)
	if won, _ := m.SetNX(context.Background(), "k", []byte("again"), time.Minute); !won {
		t.Fatal("an expired claim still held the key")
	}
	if won, _ := m.SetNX(context.Background(), "z", []byte("x"), 0); won {
		t.Fatal("a claim without a lifetime was reported as kept")
	}
}

func TestClaimEncryptedSealsAndClaimsOnce(t *testing.T) {
	inner := store.NewMemory(0)
	e, _ := store.NewEncrypted(inner, [][]byte{key32()})
	claimOnce(t, e, "k")
	raw, _ := inner.Get(context.Background(), "k")
	if bytes.Contains(raw, []byte("claimed")) {
		t.Fatal("a claimed value reached the inner store in plain text")
	}
}

func TestClaimRedisOnceAcrossClients(t *testing.T) {
	addr, _ := storetest.RedisServer(t)
	a, _ := store.NewRedis(store.RedisOptions{Addrs: []string{addr}, Password: storetest.Password, Prefix: "t:"})
	b, _ := store.NewRedis(store.RedisOptions{Addrs: []string{addr}, Password: storetest.Password, Prefix: "t:"})
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	if won, err := a.SetNX(ctx, "k", []byte("a"), time.Minute); err != nil || !won {
		t.Fatalf("first claim: %v %v", won, err)
	}
	if won, err := b.SetNX(ctx, "k", []byte("b"), time.Minute); err != nil || won {
		t.Fatalf("second client's claim of a held key: %v %v", won, err)
	}
	ea, _ := store.NewEncrypted(store.NewFallback(a, store.NewMemory(0), nil), [][]byte{key32()})
	claimOnce(t, ea, "sealed")
}
