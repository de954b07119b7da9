// Package store keeps small values that expire: in memory, or in Redis
// (standalone, Sentinel or Cluster). Encrypted seals the values of any store
// with AES-256-GCM, so nothing reaches Redis in plain text; Fallback serves
// from memory while Redis is down.
package store

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrNotFound: no value under the key, or it expired.
var ErrNotFound = errors.New("store: not found")

// Store is a key-value store with per-value expiry.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	Delete(ctx context.Context, key string) error
}

// ErrFull: a Records store holds as many live values as it may; nothing
// was written.
var ErrFull = errors.New("store: full")

// Memory is an in-process Store, bounded in entries.
type Memory struct {
	mu   sync.RWMutex
	max  int
	data map[string]memEntry
	now  func() time.Time
	// keep: never drop a live value to make room (NewRecords).
	keep bool
}

type memEntry struct {
	value []byte
	until time.Time
}

// NewMemory returns a Memory store holding at most max entries (10,000 if 0).
func NewMemory(max int) *Memory {
	if max <= 0 {
		max = 10000
	}
	return &Memory{max: max, data: map[string]memEntry{}, now: time.Now}
}

// NewRecords returns a Memory store for values that must not be lost before
// they expire (spent codes, revocations): when max live values are held, a
// new key is refused with ErrFull instead of dropping others to make room,
// as a cache (NewMemory) does. Whoever fills it cannot make it forget.
func NewRecords(max int) *Memory {
	m := NewMemory(max)
	m.keep = true
	return m
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, key string) ([]byte, error) {
	m.mu.RLock()
	e, ok := m.data[key]
	m.mu.RUnlock()
	if !ok || !m.now().Before(e.until) {
		return nil, ErrNotFound
	}
	return e.value, nil
}

// Set implements Store. A value with a ttl of zero or less is not kept.
func (m *Memory) Set(_ context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.room(key, now); err != nil {
		return err
	}
	m.data[key] = memEntry{value: value, until: now.Add(ttl)}
	return nil
}

// room makes room for key; m.mu is held.
func (m *Memory) room(key string, now time.Time) error {
	if len(m.data) < m.max {
		return nil
	}
	if _, ok := m.data[key]; ok {
		return nil // replaced, not added
	}
	m.evict(now)
	if len(m.data) >= m.max {
		return ErrFull
	}
	return nil
}

// evict drops expired entries, then (unless the store keeps live values)
// random ones (map order) down to 3/4 full.
func (m *Memory) evict(now time.Time) {
	for k, e := range m.data {
		if !now.Before(e.until) {
			delete(m.data, k)
		}
	}
	if m.keep {
		return
	}
	for k := range m.data {
		if len(m.data) < m.max*3/4 {
			break
		}
		delete(m.data, k)
	}
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	delete(m.data, key)
	m.mu.Unlock()
	return nil
}

// Len is the number of entries held (expired ones included until evicted).
func (m *Memory) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.data)
}
