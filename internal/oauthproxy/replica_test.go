package oauthproxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcpguard/mcpguard/internal/oauthproxy"
	"github.com/mcpguard/mcpguard/internal/store"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// onRedis gives n replicas each their own connection to one real Redis,
// sealed with the shared key, and a raw client to inspect the keyspace.
func onRedis(t *testing.T, n int) ([]store.Store, *redis.Client) {
	addr, _ := storetest.RedisServer(t)
	var stores []store.Store
	for range n {
		r, err := store.NewRedis(store.RedisOptions{Addrs: []string{addr}, Password: storetest.Password, Prefix: "mcpguard:oauth:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Close() })
		stores = append(stores, sealed(t, r))
	}
	raw := redis.NewClient(&redis.Options{Addr: addr, Password: storetest.Password})
	t.Cleanup(func() { _ = raw.Close() })
	return stores, raw
}

// TestFlowAcrossReplicasOnRedis: two proxies share one Redis behind a
// balancer that alternates between them, so every step of the flow lands on
// the other replica from the step before; tokens resolve on both; a refresh
// token presented to both at once is honoured once (and the second use
// revokes the sign-in); and the keyspace holds no secret in plain text.
func TestFlowAcrossReplicasOnRedis(t *testing.T) {
	stores, raw := onRedis(t, 2)
	r := newRig(t, rigOptions{stores: stores})
	ctx := context.Background()
	var secrets []string

	id, status := r.register(t)
	if status != http.StatusCreated {
		t.Fatalf("registration: %d", status)
	}
	c := r.client(id, "read", "write")
	secrets = append(secrets, c.verifier, c.state)
	b := newBrowser(t)
	servedBefore := []int64{r.served[0].Load(), r.served[1].Load()}
	form := b.get(c.authURL()).consent(t)
	secrets = append(secrets, form.id, form.csrf)
	base, _ := url.Parse(r.base)
	for _, ck := range b.hc.Jar.Cookies(base) {
		secrets = append(secrets, ck.Value)
	}
	pg := b.post(form.action, form.values("approve"), nil)
	if pg.back == nil || pg.back.Query().Get("code") == "" {
		t.Fatalf("flow across replicas: %+v", pg)
	}
	code := pg.back.Query().Get("code")
	tok, err := c.exchange(code)
	if err != nil {
		t.Fatal(err)
	}
	// authorize, consent, callback, token: four requests, two per replica.
	if a, b := r.served[0].Load()-servedBefore[0], r.served[1].Load()-servedBefore[1]; a != 2 || b != 2 {
		t.Fatalf("replicas served %d and %d steps; want 2 each", a, b)
	}
	secrets = append(secrets, code, tok.AccessToken, tok.RefreshToken)

	var upstream string
	for i, p := range r.proxies {
		up, err := p.Resolve(ctx, tok.AccessToken)
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
		if upstream != "" && up != upstream {
			t.Fatal("replicas resolved to different upstream tokens")
		}
		upstream = up
	}

	// Refresh (rotation) through the balancer, then the scan.
	status, _, body := r.refresh(t, id, tok.RefreshToken)
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %v", status, body)
	}
	rt2, at2 := body["refresh_token"].(string), body["access_token"].(string)
	secrets = append(secrets, rt2, at2)
	secrets = append(secrets, r.wire.all()...)
	if len(r.wire.all()) < 4 {
		t.Fatalf("the wire recorded too little: %d secrets", len(r.wire.all()))
	}
	scanForSecrets(t, raw, secrets)

	// One refresh token to both replicas at once: one wins, the other is a
	// reuse and revokes the sign-in, on both.
	var wg sync.WaitGroup
	results := make([]int, 2)
	for i := range 2 {
		wg.Go(func() {
			host := r.replicaURL(i)
			resp, err := http.PostForm(host+"/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt2}, "client_id": {id}})
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			results[i] = resp.StatusCode
		})
	}
	wg.Wait()
	if (results[0] == http.StatusOK) == (results[1] == http.StatusOK) {
		t.Fatalf("one refresh token presented twice at once: statuses %v; want exactly one 200", results)
	}
	if r.refusals("refresh_reuse") != 1 {
		t.Fatal("the concurrent reuse was not detected")
	}
	for i, p := range r.proxies {
		if _, err := p.Resolve(ctx, at2); !errors.Is(err, oauthproxy.ErrInvalidToken) {
			t.Fatalf("replica %d still resolves a token of the revoked sign-in: %v", i, err)
		}
	}
}

// replicaURL is replica i's own address, past the balancer.
func (r *rig) replicaURL(i int) string { return r.backends[i] }

// scanForSecrets reads every key and value in Redis: each must expire, and
// no secret may appear in either.
func scanForSecrets(t *testing.T, raw *redis.Client, secrets []string) {
	t.Helper()
	ctx := context.Background()
	keys, err := raw.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 8 {
		t.Fatalf("only %d keys in Redis: the flow did not store its state there", len(keys))
	}
	for _, k := range keys {
		v, err := raw.Get(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		ttl, _ := raw.PTTL(ctx, k).Result()
		if ttl <= 0 {
			t.Errorf("key %s has no expiry (%s)", k, ttl)
		}
		for _, s := range secrets {
			if len(s) >= 16 && (strings.Contains(k, s) || strings.Contains(v, s)) {
				t.Errorf("key %s holds a secret in plain text (%.8s…)", k, s)
			}
		}
		for _, plain := range []string{"client_id", "refresh_token", "access_token", "redirect_uri", "verifier"} {
			if strings.Contains(v, plain) {
				t.Errorf("value of %s is not sealed: it contains %q", k, plain)
			}
		}
	}
}

// TestConcurrentCodeRedemptionAcrossReplicas: one code presented to both
// replicas at once. One presentation wins the code, the other is a reuse
// and revokes the sign-in; whatever the interleaving, no token it issued
// may resolve afterwards (the revocation cannot be overwritten by the
// winner creating its sign-in late).
func TestConcurrentCodeRedemptionAcrossReplicas(t *testing.T) {
	stores, _ := onRedis(t, 2)
	r := newRig(t, rigOptions{stores: stores})
	id, _ := r.register(t)
	for round := range 5 {
		c := r.client(id)
		code := r.code(t, c)
		var wg sync.WaitGroup
		tokens := make([]string, 2)
		statuses := make([]int, 2)
		for i := range 2 {
			wg.Go(func() {
				resp, err := http.PostForm(r.replicaURL(i)+"/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
					"client_id": {id}, "redirect_uri": {clientRedirect}, "code_verifier": {c.verifier}})
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				var body struct {
					AccessToken string `json:"access_token"`
				}
				_ = json.NewDecoder(resp.Body).Decode(&body)
				statuses[i], tokens[i] = resp.StatusCode, body.AccessToken
			})
		}
		wg.Wait()
		// The winner may itself be refused, if the loser's revocation
		// landed before the winner created the sign-in.
		if statuses[0] == http.StatusOK && statuses[1] == http.StatusOK || statuses[0] == 0 || statuses[1] == 0 {
			t.Fatalf("round %d: statuses %v; want at most one 200", round, statuses)
		}
		for _, at := range tokens {
			if at == "" {
				continue
			}
			for i, p := range r.proxies {
				if _, err := p.Resolve(context.Background(), at); !errors.Is(err, oauthproxy.ErrInvalidToken) {
					t.Fatalf("round %d: replica %d resolves a token of a reused code: %v", round, i, err)
				}
			}
		}
	}
}

// pausing holds the first write of a key with the given prefix until
// released: a way to put one replica's request at a chosen point while the
// other replica acts.
type pausing struct {
	store.Claimer
	prefix  string
	armed   atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func (p *pausing) Set(ctx context.Context, k string, v []byte, ttl time.Duration) error {
	if strings.HasPrefix(k, p.prefix) && p.armed.CompareAndSwap(true, false) {
		close(p.reached)
		<-p.release
	}
	return p.Claimer.Set(ctx, k, v, ttl)
}

// TestCodeReuseRevocationBeatsLateRedemption: replica A wins a code and is
// held before it creates the sign-in; replica B gets the same code (a
// reuse) and revokes. When A goes on, it must not bring the sign-in back.
func TestCodeReuseRevocationBeatsLateRedemption(t *testing.T) {
	mem := store.NewMemory(0)
	// Having won the code, the redemption extends the upstream tokens' life,
	// then creates the sign-in.
	hold := &pausing{Claimer: mem, prefix: "oauth:upstream:", reached: make(chan struct{}), release: make(chan struct{})}
	r := newRig(t, rigOptions{stores: []store.Store{sealed(t, hold), sealed(t, mem)}})
	id, _ := r.register(t)
	c := r.client(id)
	code := r.code(t, c)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "client_id": {id}, "redirect_uri": {clientRedirect}, "code_verifier": {c.verifier}}
	hold.armed.Store(true)
	done := make(chan int, 1)
	go func() {
		resp, err := http.PostForm(r.replicaURL(0)+"/token", form)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	select {
	case <-hold.reached:
	case <-time.After(10 * time.Second):
		t.Fatal("replica A never reached the sign-in's creation")
	}
	resp, err := http.PostForm(r.replicaURL(1)+"/token", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("the reuse on replica B: %d", resp.StatusCode)
	}
	close(hold.release)
	if status := <-done; status != http.StatusBadRequest {
		t.Fatalf("replica A completed a sign-in revoked while it worked: %d", status)
	}
	r.counted(t, "code_reuse", 2)
}

// TestUpstreamRefreshOnceAcrossReplicas: replicas resolving one token near
// its upstream expiry at once refresh it upstream once, and all answer.
func TestUpstreamRefreshOnceAcrossReplicas(t *testing.T) {
	stores, _ := onRedis(t, 2)
	r := newRig(t, rigOptions{stores: stores})
	r.idp.SetTokenLifetime(5 * time.Minute)
	id, _ := r.register(t)
	tok := r.login(t, r.client(id))
	r.clock.Advance(4*time.Minute + 30*time.Second)
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			if _, err := r.proxies[i%2].Resolve(context.Background(), tok.AccessToken); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := r.idp.TokenRequests("refresh_token"); n != 1 {
		t.Fatalf("%d upstream refreshes; want 1", n)
	}
}
