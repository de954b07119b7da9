package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Encrypted seals values with AES-256-GCM before they reach the inner store
// and opens them on the way back. The key name is authenticated with each
// value, so a value moved to another key does not open. The first key seals;
// every key opens (rotation: put the new key first, keep the old ones until
// their values have expired).
type Encrypted struct {
	inner Store
	keys  []cipher.AEAD
}

// ParseKeys reads STORAGE_ENCRYPTION_KEY: comma-separated base64 keys of 32
// bytes each (`mcpguard keys generate` prints one).
func ParseKeys(s string) ([][]byte, error) {
	var keys [][]byte
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(part)
		if err != nil {
			if k, err = base64.RawURLEncoding.DecodeString(part); err != nil {
				return nil, fmt.Errorf("key %d is not base64", i+1)
			}
		}
		if len(k) != 32 {
			return nil, fmt.Errorf("key %d has %d bytes; AES-256 needs 32", i+1, len(k))
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	return keys, nil
}

// NewEncrypted wraps inner; keys are 32-byte AES keys, the first one sealing.
func NewEncrypted(inner Store, keys [][]byte) (*Encrypted, error) {
	if len(keys) == 0 {
		return nil, errors.New("store: no encryption key")
	}
	e := &Encrypted{inner: inner}
	for _, k := range keys {
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		e.keys = append(e.keys, aead)
	}
	return e, nil
}

// ErrUnreadable: a stored value opens with none of the keys.
var ErrUnreadable = errors.New("store: value does not open with any key")

// Get implements Store.
func (e *Encrypted) Get(ctx context.Context, key string) ([]byte, error) {
	sealed, err := e.inner.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	for _, k := range e.keys {
		n := k.NonceSize()
		if len(sealed) < n {
			break
		}
		if plain, err := k.Open(nil, sealed[:n], sealed[n:], []byte(key)); err == nil {
			return plain, nil
		}
	}
	return nil, ErrUnreadable
}

// Set implements Store.
func (e *Encrypted) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	k := e.keys[0]
	nonce := make([]byte, k.NonceSize(), k.NonceSize()+len(value)+k.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	return e.inner.Set(ctx, key, k.Seal(nonce, nonce, value, []byte(key)), ttl)
}

// Delete implements Store.
func (e *Encrypted) Delete(ctx context.Context, key string) error { return e.inner.Delete(ctx, key) }
