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

// Memory is an in-process Store, bounded in entries.
type Memory struct {
	mu   sync.RWMutex
	max  int
	data map[string]memEntry
	now  func() time.Time
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
	if len(m.data) >= m.max {
		m.evict(now)
	}
	m.data[key] = memEntry{value: value, until: now.Add(ttl)}
	return nil
}

// evict drops expired entries, then random ones (map order) down to 3/4 full.
func (m *Memory) evict(now time.Time) {
	for k, e := range m.data {
		if !now.Before(e.until) {
			delete(m.data, k)
		}
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
