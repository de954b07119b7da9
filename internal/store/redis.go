package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Store on a Redis deployment through go-redis's UniversalClient:
// one address is a standalone server, several a Cluster, a master name
// Sentinel. Keys are prefixed.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

// RedisOptions locate the deployment. URL (redis:// or rediss://) wins over
// Addrs; Password applies to either.
type RedisOptions struct {
	URL        string
	Addrs      []string
	Password   string
	MasterName string
	Prefix     string
	// Timeout bounds every command (default 500 ms): a slow Redis must not
	// hold requests.
	Timeout time.Duration
}

// NewRedis connects lazily; a Redis that is down fails commands, not this call.
func NewRedis(o RedisOptions) (*Redis, error) {
	uo, err := universalOptions(o)
	if err != nil {
		return nil, err
	}
	return &Redis{client: redis.NewUniversalClient(uo), prefix: o.Prefix}, nil
}

// universalOptions reads the deployment's shape from the options. A URL
// names a standalone server; with addr= parameters, the nodes of a Cluster;
// with master_name=, Sentinels (its user and password are theirs, Password
// the master's). The URL's other parameters are go-redis's own and are
// checked, but the timeouts and retries are this package's.
func universalOptions(o RedisOptions) (*redis.UniversalOptions, error) {
	if o.Timeout == 0 {
		o.Timeout = 500 * time.Millisecond
	}
	uo := &redis.UniversalOptions{
		Addrs: o.Addrs, Password: o.Password, MasterName: o.MasterName,
		DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
		MaxRetries: 1,
	}
	if o.URL != "" {
		u, err := url.Parse(o.URL)
		if err != nil {
			// url's error quotes the URL, password included.
			return nil, errors.New("REDIS_URL: not a URL")
		}
		q := u.Query()
		switch {
		case q.Has("master_name"):
			fo, err := redis.ParseFailoverURL(o.URL)
			if err != nil {
				return nil, fmt.Errorf("REDIS_URL (Sentinel): %w", err)
			}
			uo.MasterName, uo.Addrs = fo.MasterName, fo.SentinelAddrs
			uo.SentinelUsername, uo.SentinelPassword = fo.SentinelUsername, fo.SentinelPassword
			uo.Username, uo.DB, uo.TLSConfig = fo.Username, fo.DB, fo.TLSConfig
			if fo.Password != "" {
				uo.Password = fo.Password
			}
		case q.Has("addr"):
			co, err := redis.ParseClusterURL(o.URL)
			if err != nil {
				return nil, fmt.Errorf("REDIS_URL (Cluster): %w", err)
			}
			uo.Addrs, uo.Username, uo.TLSConfig = co.Addrs, co.Username, co.TLSConfig
			uo.IsClusterMode = true
			if co.Password != "" {
				uo.Password = co.Password
			}
		default:
			opt, err := redis.ParseURL(o.URL)
			if err != nil {
				return nil, fmt.Errorf("REDIS_URL: %w", err)
			}
			uo.Addrs = []string{opt.Addr}
			uo.Username, uo.DB, uo.TLSConfig = opt.Username, opt.DB, opt.TLSConfig
			if opt.Password != "" {
				uo.Password = opt.Password
			}
		}
	}
	if len(uo.Addrs) == 0 {
		return nil, errors.New("store: no Redis address")
	}
	return uo, nil
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, error) {
	b, err := r.client.Get(ctx, r.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	return b, err
}

// Set implements Store.
func (r *Redis) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return nil
	}
	return r.client.Set(ctx, r.prefix+key, value, ttl).Err()
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, key string) error {
	return r.client.Del(ctx, r.prefix+key).Err()
}

// Ping checks the connection.
func (r *Redis) Ping(ctx context.Context) error { return r.client.Ping(ctx).Err() }

// Close releases the connections.
func (r *Redis) Close() error { return r.client.Close() }

// Fallback reads and writes the primary store; while the primary fails it
// serves from the secondary (memory), warning once per outage, and returns
// to the primary as soon as it answers again.
type Fallback struct {
	primary, secondary Store
	logger             *slog.Logger
	down               atomic.Bool
}

// NewFallback returns a Fallback.
func NewFallback(primary, secondary Store, logger *slog.Logger) *Fallback {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Fallback{primary: primary, secondary: secondary, logger: logger}
}

func (f *Fallback) failed(err error) {
	if !f.down.Swap(true) {
		f.logger.Warn("shared store unavailable; caching in memory until it is back", "error", err)
	}
}

func (f *Fallback) ok() {
	if f.down.Swap(false) {
		f.logger.Info("shared store available again")
	}
}

// Get implements Store.
func (f *Fallback) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := f.primary.Get(ctx, key)
	switch {
	case err == nil || errors.Is(err, ErrNotFound):
		f.ok()
		if err != nil {
			// Values written during an outage live in the secondary.
			return f.secondary.Get(ctx, key)
		}
		return v, nil
	}
	f.failed(err)
	return f.secondary.Get(ctx, key)
}

// Set implements Store.
func (f *Fallback) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := f.primary.Set(ctx, key, value, ttl); err != nil {
		f.failed(err)
		return f.secondary.Set(ctx, key, value, ttl)
	}
	f.ok()
	return nil
}

// Delete implements Store.
func (f *Fallback) Delete(ctx context.Context, key string) error {
	_ = f.secondary.Delete(ctx, key)
	if err := f.primary.Delete(ctx, key); err != nil {
		f.failed(err)
	}
	return nil
}

// Down reports whether the primary failed last time it was asked.
func (f *Fallback) Down() bool { return f.down.Load() }
