package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/server"
	"github.com/mcpguard/mcpguard/tools"
)

// eventually polls cond every 50ms until it holds or the bound passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tooManyRefusal checks a per-user cap refusal: 429 and a JSON-RPC error.
func tooManyRefusal(t *testing.T, res *http.Response, variable string) {
	t.Helper()
	if res.StatusCode != http.StatusTooManyRequests {
		// Not the body: an accepted stream's would never end.
		t.Fatalf("over the cap: %d, want 429", res.StatusCode)
	}
	b := body(t, res)
	var msg struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(b), &msg); err != nil || msg.Error.Code != server.CodeTooManySessions || !strings.Contains(msg.Error.Message, variable) {
		t.Fatalf("refusal body %s (%v)", b, err)
	}
}

// getStream opens a Streamable HTTP GET stream on a session; cancel ends it.
func getStream(t *testing.T, url, token, sid string) (*http.Response, context.CancelFunc) {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(c, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	if sid != "" {
		req.Header.Set("Mcp-Session-Id", sid)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res, cancel
}

// A session nobody uses for SESSION_IDLE_TIMEOUT is closed, and its slot
// under MAX_SESSIONS_PER_USER is free again. The SDK owns the idle timer, so
// the timeout is real (and short); the test waits for what it does — the
// slot coming free, the session answering 404 — not for a guessed time.
// Asking for a new session does not touch the idle one: over the cap it is
// refused (429) before the SDK sees it.
func TestSessionIdleTimeout(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"SESSION_IDLE_TIMEOUT": "1s", "MAX_SESSIONS_PER_USER": "1"})
	tok := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	sid := session(t, e, tok)
	ping := `{"jsonrpc":"2.0","id":2,"method":"ping"}`
	if res := post(t, e.URL, tok, ping, map[string]string{"Mcp-Session-Id": sid}); res.StatusCode != 200 {
		t.Fatalf("ping on a fresh session: %d %s", res.StatusCode, body(t, res))
	}
	eventually(t, 10*time.Second, "the idle session's slot is free", func() bool {
		return post(t, e.URL, tok, initBody, nil).StatusCode == 200
	})
	// The slot is freed once the session has closed; the SDK forgets its id
	// as it closes, a moment later at most.
	eventually(t, 5*time.Second, "the idle session answers 404", func() bool {
		res := post(t, e.URL, tok, ping, map[string]string{"Mcp-Session-Id": sid})
		if res.StatusCode == 200 {
			t.Fatalf("a session idle past SESSION_IDLE_TIMEOUT still answers: %s", body(t, res))
		}
		return res.StatusCode == http.StatusNotFound
	})
}

// MAX_SESSIONS_PER_USER refuses a user's next session with 429, concurrent
// initializes included, leaves other users alone, and a closed session
// frees its slot.
func TestSessionCapPerUser(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"MAX_SESSIONS_PER_USER": "2"})
	alice := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	first := e.connect(t, alice)
	e.connect(t, alice)

	tooManyRefusal(t, post(t, e.URL, alice, initBody, nil), "MAX_SESSIONS_PER_USER")
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-go", Version: "1.0"}, nil)
	_, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{
		Endpoint: e.URL, HTTPClient: &http.Client{Transport: &bearer{token: alice, base: http.DefaultTransport}},
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "Too Many Requests") {
		t.Fatalf("the Go client's third session: %v", err)
	}

	// Another user, and another token of no roles at all, are not alice.
	e.connect(t, e.token(t, devidp.Token{User: "bob"}))

	// A session the client ends (DELETE) gives its slot back.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "alice's closed session frees a slot", func() bool {
		return post(t, e.URL, alice, initBody, nil).StatusCode == 200
	})
	tooManyRefusal(t, post(t, e.URL, alice, initBody, nil), "MAX_SESSIONS_PER_USER")

	// Concurrent initializes cannot slip past the cap together.
	carol := e.token(t, devidp.Token{User: "carol"})
	var ok, refused atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, e.URL, strings.NewReader(initBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+carol)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			switch res.StatusCode {
			case 200:
				ok.Add(1)
			case http.StatusTooManyRequests:
				refused.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 2 || refused.Load() != 6 {
		t.Fatalf("8 concurrent initializes under a cap of 2: %d opened, %d refused", ok.Load(), refused.Load())
	}
}

// MAX_STREAMS_PER_USER bounds a user's Streamable HTTP GET streams.
func TestStreamableGETStreamCap(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"MAX_STREAMS_PER_USER": "1"})
	alice := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	s1, s2 := session(t, e, alice), session(t, e, alice)
	res, end := getStream(t, e.URL, alice, s1)
	if res.StatusCode != 200 {
		t.Fatalf("first GET stream: %d %s", res.StatusCode, body(t, res))
	}
	res, _ = getStream(t, e.URL, alice, s2)
	tooManyRefusal(t, res, "MAX_STREAMS_PER_USER")

	bob := e.token(t, devidp.Token{User: "bob"})
	if res, _ := getStream(t, e.URL, bob, session(t, e, bob)); res.StatusCode != 200 {
		t.Fatalf("bob's GET stream: %d", res.StatusCode)
	}
	end()
	eventually(t, 2*time.Second, "the ended stream frees its slot", func() bool {
		res, end := getStream(t, e.URL, alice, s2)
		defer end()
		return res.StatusCode == 200
	})
}

// sseOpen opens a legacy SSE stream and returns its message endpoint and a
// reader positioned after the endpoint event.
func sseOpen(t *testing.T, base, token string) (*http.Response, string, *bufio.Reader, context.CancelFunc) {
	t.Helper()
	res, cancel := getStream(t, base+"/sse", token, "")
	if res.StatusCode != 200 {
		return res, "", nil, cancel
	}
	br := bufio.NewReader(res.Body)
	return res, base + endpointEvent(t, br), br, cancel
}

// endpointEvent reads a legacy SSE stream up to its endpoint event and
// returns the session's message path.
func endpointEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("no endpoint event: %v", err)
		}
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "data:"); ok {
			return strings.TrimSpace(rest)
		}
	}
}

// MAX_STREAMS_PER_USER bounds a user's legacy SSE streams (each one a session).
func TestSSEStreamCap(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"TRANSPORT": "sse", "MAX_STREAMS_PER_USER": "1"})
	alice := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	_, _, _, end := sseOpen(t, e.Base, alice)
	res, _, _, _ := sseOpen(t, e.Base, alice)
	tooManyRefusal(t, res, "MAX_STREAMS_PER_USER")
	if res, _, _, _ := sseOpen(t, e.Base, e.token(t, devidp.Token{User: "bob"})); res.StatusCode != 200 {
		t.Fatalf("bob's SSE stream: %d", res.StatusCode)
	}
	end()
	eventually(t, 2*time.Second, "the ended SSE stream frees its slot", func() bool {
		res, _, _, end := sseOpen(t, e.Base, alice)
		defer end()
		return res.StatusCode == 200
	})
}

// swapBearer sends, per request, the token its chooser picks from the body.
type swapBearer struct {
	choose func(body []byte) string
}

func (b *swapBearer) RoundTrip(r *http.Request) (*http.Response, error) {
	var data []byte
	if r.Body != nil {
		var err error
		if data, err = io.ReadAll(r.Body); err != nil {
			return nil, err
		}
		r.Body.Close()
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(data))
	r.Header.Set("Authorization", "Bearer "+b.choose(data))
	return http.DefaultTransport.RoundTrip(r)
}

// Over legacy SSE every POST is decided with its own token: a session
// opened with an admin token does not lend the admin role to a later POST
// of the same user whose token has no roles (its roles were revoked, or it
// is another client of that user), however the POSTs interleave.
func TestSSEDecidesEachPOSTWithItsOwnToken(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"TRANSPORT": "sse"})
	admin := e.token(t, devidp.Token{User: "boss", Roles: []string{"admin"}})
	plain := e.token(t, devidp.Token{User: "boss"})
	var current atomic.Value
	current.Store(admin)
	rt := &swapBearer{choose: func(body []byte) string {
		switch {
		case bytes.Contains(body, []byte(`"as-plain`)):
			return plain
		case bytes.Contains(body, []byte(`"as-admin`)):
			return admin
		}
		return current.Load().(string)
	}}
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "sse-test"}, nil).Connect(c, &mcp.SSEClientTransport{
		Endpoint: e.Base + "/sse", HTTPClient: &http.Client{Transport: rt},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	call := func(op string) error {
		_, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "admin_operation", Arguments: map[string]any{"operation": op}})
		return err
	}
	if err := call("x"); err != nil {
		t.Fatalf("admin_operation with the admin token: %v", err)
	}
	current.Store(plain)
	denial(t, call("x"))
	current.Store(admin)
	if err := call("x"); err != nil {
		t.Fatalf("admin_operation with the admin token again: %v", err)
	}

	// Interleaved POSTs of both tokens: each is decided as its own token.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Go(func() {
			if i%2 == 0 {
				err := call(fmt.Sprintf("as-plain-%d", i))
				var rpcErr *jsonrpc.Error
				if !errors.As(err, &rpcErr) || rpcErr.Code != server.CodeAccessDenied {
					errs <- fmt.Errorf("call %d with the role-less token: %v", i, err)
				}
			} else if err := call(fmt.Sprintf("as-admin-%d", i)); err != nil {
				errs <- fmt.Errorf("call %d with the admin token: %v", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A legacy SSE stream ends when the token that opened it expires, and not
// before: while the token lives, its session serves. Then the session is gone
// for every later POST. The server's timer is real (a token's exp is in whole
// seconds): the test waits for the stream to end, and reads in the log that
// the token's expiry ended it.
func TestSSEStreamEndsWithItsToken(t *testing.T) {
	logs := &syncBuffer{}
	e := startWith(t, startIssuer(t), map[string]string{"TRANSPORT": "sse"},
		server.Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	short := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}, Lifetime: 3 * time.Second})
	res, endpoint, br, _ := sseOpen(t, e.Base, short)
	if res.StatusCode != 200 {
		t.Fatalf("SSE open: %d", res.StatusCode)
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, br)
		ended <- err
	}()
	fresh := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	if res := post(t, endpoint, fresh, ping, nil); res.StatusCode != http.StatusAccepted {
		t.Fatalf("POST to the session while its token lives (at least 2s): %d %s", res.StatusCode, body(t, res))
	}
	select {
	case <-ended:
	case <-time.After(15 * time.Second):
		t.Fatal("the SSE stream outlived its 3s token by more than 12s")
	}
	if l := logs.String(); !strings.Contains(l, "the token that opened it expired") {
		t.Fatalf("the stream ended, but not for its token's expiry; log:\n%s", l)
	}
	if res := post(t, endpoint, fresh, ping, nil); res.StatusCode != http.StatusNotFound {
		t.Fatalf("POST to the ended session: %d %s", res.StatusCode, body(t, res))
	}
}

// syncBuffer is a log sink the server writes from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const panicValue = "tool exploded: secret-detail-42"

// A panicking tool costs its own request an internal error, nothing more:
// the caller learns nothing of the panic, the log has its stack, the server
// serves the next request.
func TestPanickingToolIsAnInternalError(t *testing.T) {
	register := func(s *mcp.Server) {
		tools.Register(s)
		type in struct {
			Query string `json:"query"`
		}
		mcp.AddTool(s, &mcp.Tool{Name: "read_critical_data"}, func(_ context.Context, _ *mcp.CallToolRequest, a in) (*mcp.CallToolResult, any, error) {
			if a.Query == "boom" {
				panic(panicValue)
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "fine"}}}, nil, nil
		})
	}
	for _, transport := range []string{"http", "sse"} {
		t.Run(transport, func(t *testing.T) {
			logs := &syncBuffer{}
			e := startWith(t, startIssuer(t), map[string]string{"TRANSPORT": transport},
				server.Options{Register: register, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			tok := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
			var cs *mcp.ClientSession
			if transport == "http" {
				cs = e.connect(t, tok)
			} else {
				c, cancel := context.WithCancel(context.Background())
				t.Cleanup(cancel)
				var err error
				cs, err = mcp.NewClient(&mcp.Implementation{Name: "sse-test"}, nil).Connect(c, &mcp.SSEClientTransport{
					Endpoint: e.Base + "/sse", HTTPClient: &http.Client{Transport: &bearer{token: tok, base: http.DefaultTransport}},
				}, nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = cs.Close() })
			}
			_, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "read_critical_data", Arguments: map[string]any{"query": "boom"}})
			var rpcErr *jsonrpc.Error
			if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInternalError || rpcErr.Message != "internal error" || len(rpcErr.Data) != 0 {
				t.Fatalf("a panicking tool answered %v", err)
			}
			res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "read_critical_data", Arguments: map[string]any{"query": "x"}})
			if err != nil || res.IsError {
				t.Fatalf("the call after the panic: %v %+v", err, res)
			}
			if l := logs.String(); !strings.Contains(l, panicValue) || !strings.Contains(l, "goroutine ") {
				t.Fatalf("the panic and its stack are not in the log:\n%s", l)
			}
		})
	}
}

// panickyRoles panics for one user and reads roles from the token for the rest.
type panickyRoles struct{ exchange.TokenRoles }

func (p panickyRoles) Resolve(ctx context.Context, id *authn.Identity, token string) (*exchange.Authorization, error) {
	if id.Name == "boom" {
		panic(panicValue)
	}
	return p.TokenRoles.Resolve(ctx, id, token)
}

// A panic in the HTTP layer (here: role resolution) answers 500 with a
// JSON-RPC internal error instead of a cut connection, and the server
// serves the next request.
func TestPanicInHTTPLayerIsAnInternalError(t *testing.T) {
	logs := &syncBuffer{}
	e := startWith(t, startIssuer(t), nil, server.Options{Roles: panickyRoles{}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	res := post(t, e.URL, e.token(t, devidp.Token{User: "boom"}), initBody, nil)
	b := body(t, res)
	if res.StatusCode != http.StatusInternalServerError || !strings.Contains(b, `"code":-32603`) || strings.Contains(b, "secret-detail") {
		t.Fatalf("panic in role resolution: %d %s", res.StatusCode, b)
	}
	if l := logs.String(); !strings.Contains(l, panicValue) || !strings.Contains(l, "goroutine ") {
		t.Fatalf("the panic and its stack are not in the log:\n%s", l)
	}
	if res := post(t, e.URL, e.token(t, devidp.Token{User: "alice"}), initBody, nil); res.StatusCode != 200 {
		t.Fatalf("the request after the panic: %d %s", res.StatusCode, body(t, res))
	}
}
