package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// redisServer runs Debian's redis-server on a free loopback port. Outside
// make test a missing binary skips; with MCPGUARD_REDIS=1 it fails.
func redisServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("MCPGUARD_REDIS") == "1" {
			t.Fatal("redis-server not installed (make test installs it)")
		}
		t.Skip("SKIPPED: redis-server not installed; run `make test`, which installs it")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--requirepass", "test-pass")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr = "127.0.0.1:" + strconv.Itoa(port)
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatalf("redis-server did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return addr, stop
}

func key32() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

func TestMemoryExpiryAndBound(t *testing.T) {
	ctx := context.Background()
	m := NewMemory(100)
	now := time.Now()
	m.now = func() time.Time { return now }
	_ = m.Set(ctx, "a", []byte("1"), time.Second)
	if v, err := m.Get(ctx, "a"); err != nil || string(v) != "1" {
		t.Fatalf("%q %v", v, err)
	}
	now = now.Add(2 * time.Second)
	if _, err := m.Get(ctx, "a"); !errors.Is(err, ErrNotFound) {
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
	inner := NewMemory(0)
	old, fresh := key32(), key32()
	e1, _ := NewEncrypted(inner, [][]byte{old})
	secret := []byte(`{"roles":["data_reader"]}`)
	if err := e1.Set(ctx, "k", secret, time.Minute); err != nil {
		t.Fatal(err)
	}
	raw, _ := inner.Get(ctx, "k")
	if bytes.Contains(raw, []byte("data_reader")) {
		t.Fatal("plain text reached the inner store")
	}
	// The new key first: old values still open, new ones are sealed with the new key.
	e2, _ := NewEncrypted(inner, [][]byte{fresh, old})
	if v, err := e2.Get(ctx, "k"); err != nil || !bytes.Equal(v, secret) {
		t.Fatalf("rotation: %q %v", v, err)
	}
	_ = e2.Set(ctx, "k2", secret, time.Minute)
	if _, err := e1.Get(ctx, "k2"); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("a value sealed with the new key opened with the old alone: %v", err)
	}
	// A value moved under another key does not open.
	_ = inner.Set(ctx, "moved", raw, time.Minute)
	if _, err := e1.Get(ctx, "moved"); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("moved value opened: %v", err)
	}
	_ = inner.Set(ctx, "short", []byte("x"), time.Minute)
	if _, err := e1.Get(ctx, "short"); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("truncated value: %v", err)
	}
}

func TestParseKeys(t *testing.T) {
	if _, err := ParseKeys("dG9vIHNob3J0"); err == nil {
		t.Fatal("short key accepted")
	}
	if _, err := ParseKeys("!!!"); err == nil {
		t.Fatal("non-base64 accepted")
	}
	k, err := ParseKeys("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=, AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")
	if err != nil || len(k) != 2 {
		t.Fatalf("%v %d", err, len(k))
	}
}

func TestRedisEncryptedAndFallback(t *testing.T) {
	ctx := context.Background()
	addr, stop := redisServer(t)
	r, err := NewRedis(RedisOptions{Addrs: []string{addr}, Password: "test-pass", Prefix: "test:"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	fb := NewFallback(r, NewMemory(0), nil)
	e, _ := NewEncrypted(fb, [][]byte{key32()})
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
	time.Sleep(120 * time.Millisecond)
	if _, err := e.Get(ctx, "short"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired in Redis: %v", err)
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
	_, wrong := NewRedis(RedisOptions{URL: "http://nope"})
	if wrong == nil {
		t.Fatal("bad REDIS_URL accepted")
	}
}
