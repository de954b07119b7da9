package store

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"
)

// Claimer is a Store that can also set a key only while it is absent, in one
// atomic step: what makes a one-time value (an authorization code, a refresh
// token) usable once even when two replicas present it at the same moment.
// Get followed by Set cannot promise that.
type Claimer interface {
	Store
	// SetNX stores value under key only if no live value is there, and
	// reports whether it did.
	SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
}

// ErrNoClaim: the store under an Encrypted or Fallback cannot claim keys.
var ErrNoClaim = errors.New("store: the inner store cannot claim keys atomically")

// SetNX implements Claimer.
func (m *Memory) SetNX(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, nil
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.data[key]; ok && now.Before(e.until) {
		return false, nil
	}
	if err := m.room(key, now); err != nil {
		return false, err
	}
	m.data[key] = memEntry{value: value, until: now.Add(ttl)}
	return true, nil
}

// SetNX implements Claimer with SET NX PX: one command, atomic on the server.
func (r *Redis) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if ttl <= 0 {
		return false, nil
	}
	return r.client.SetNX(ctx, r.prefix+key, value, ttl).Result()
}

// SetNX implements Claimer: the value is sealed as Set seals it, and the
// claim is the inner store's.
func (e *Encrypted) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	inner, ok := e.inner.(Claimer)
	if !ok {
		return false, ErrNoClaim
	}
	k := e.keys[0]
	nonce := make([]byte, k.NonceSize(), k.NonceSize()+len(value)+k.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return false, err
	}
	return inner.SetNX(ctx, key, k.Seal(nonce, nonce, value, []byte(key)), ttl)
}

// SetNX implements Claimer: on the primary, or on the secondary while the
// primary fails (a claim made during an outage holds for this replica only).
func (f *Fallback) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	p, ok1 := f.primary.(Claimer)
	s, ok2 := f.secondary.(Claimer)
	if !ok1 || !ok2 {
		return false, ErrNoClaim
	}
	won, err := p.SetNX(ctx, key, value, ttl)
	if err == nil {
		f.ok()
		return won, nil
	}
	f.failed(err)
	won, err = s.SetNX(ctx, key, value, ttl)
	if err != nil {
		return false, fmt.Errorf("claim on the fallback store: %w", err)
	}
	return won, nil
}
