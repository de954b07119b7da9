package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
	"github.com/mcpguard/mcpguard/internal/server"
)

// The HTTP layer as an attacker meets it: credentials never reach a tool,
// connections cannot be held by sending slowly or nothing, /metrics is not
// on the MCP listener, and shutdown ends streams and exits cleanly. Streams
// themselves are unaffected by the timeouts.

// served runs e's server through Server.Serve, as the binary does (timeouts,
// connection cap, metrics listener, graceful shutdown), on listeners of its
// own. stop cancels Serve's context and returns its result.
func served(t *testing.T, e *env, withMetrics bool) (base, metrics string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mln net.Listener
	if withMetrics {
		if mln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		metrics = "http://" + mln.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Server.Serve(ctx, ln, mln) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(15 * time.Second):
				result = errors.New("Serve did not return within 15s of its context ending")
			}
		})
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return "http://" + ln.Addr().String(), metrics, stop
}

// at is e with its MCP endpoint at base (a listener of served).
func (e *env) at(base string) *env {
	c := *e
	c.URL, c.Base = base+"/mcp", base
	return &c
}

// allowAll is a policy directory allowing everything: these tests are about
// the transport, not the decisions.
func allowAll(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := policytest.AllowAll(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

type headersOut struct {
	Header map[string][]string `json:"header"`
}

type slowIn struct {
	Millis int `json:"millis"`
}

type slowOut struct {
	Slept int `json:"slept"`
}

// testTools are a tool reporting the request headers the SDK hands it, and
// one that answers after a while (or when its request is cancelled).
func testTools(s *mcp.Server) { testToolsNoting(nil, nil)(s) }

// testToolsNoting is testTools whose slow tool notes each start on started
// and, when release is not nil, answers as soon as release is closed: a tool
// the test holds in flight for as long as it needs, and no longer.
func testToolsNoting(started chan<- struct{}, release <-chan struct{}) func(*mcp.Server) {
	return func(s *mcp.Server) { addTestTools(s, started, release) }
}

func addTestTools(s *mcp.Server, started chan<- struct{}, release <-chan struct{}) {
	mcp.AddTool(s, &mcp.Tool{Name: "headers", Description: "the request headers this tool was given"},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, headersOut, error) {
			if req.Extra == nil {
				return nil, headersOut{}, nil
			}
			return nil, headersOut{Header: req.Extra.Header}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "slow", Description: "answers after millis"},
		func(ctx context.Context, _ *mcp.CallToolRequest, in slowIn) (*mcp.CallToolResult, slowOut, error) {
			if started != nil {
				started <- struct{}{}
			}
			select {
			case <-time.After(time.Duration(in.Millis) * time.Millisecond):
				return nil, slowOut{Slept: in.Millis}, nil
			case <-release: // never, when release is nil
				return nil, slowOut{Slept: in.Millis}, nil
			case <-ctx.Done():
				return nil, slowOut{}, ctx.Err()
			}
		})
}

// withHeaders adds headers to every request.
type withHeaders struct {
	h    http.Header
	base http.RoundTripper
}

func (w *withHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range w.h {
		r.Header[k] = v
	}
	return w.base.RoundTrip(r)
}

func connectWith(t *testing.T, url string, h http.Header) *mcp.ClientSession {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "conn-test", Version: "1"}, nil).Connect(c, &mcp.StreamableClientTransport{
		Endpoint: url, HTTPClient: &http.Client{Transport: &withHeaders{h: h, base: http.DefaultTransport}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.Close() })
	return cs
}

// No tool sees the caller's token, or any other credential the request
// carried; the other headers still reach it.
func TestToolsSeeNoCredentials(t *testing.T) {
	for _, auth := range []string{"true", "false"} {
		t.Run("ENABLE_AUTH="+auth, func(t *testing.T) {
			e := startWith(t, startIssuer(t), map[string]string{"POLICY_DIR": allowAll(t), "ENABLE_AUTH": auth},
				server.Options{Register: testTools})
			tok := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
			secrets := map[string]string{
				"Authorization":               "Bearer " + tok,
				"Proxy-Authorization":         "Basic c2VjcmV0LXByb3h5",
				"Cookie":                      "session=secret-cookie",
				"X-Ms-Token-Aad-Access-Token": "secret-easyauth",
				"X-Forwarded-Access-Token":    "secret-forwarded",
				"X-Api-Key":                   "secret-key",
			}
			h := http.Header{"X-Request-Id": {"kept-42"}}
			for k, v := range secrets {
				h.Set(k, v)
			}
			cs := connectWith(t, e.URL, h)
			res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "headers", Arguments: map[string]any{}})
			if err != nil || res.IsError {
				t.Fatalf("headers tool: %v %+v", err, res)
			}
			seen := toJSON(res.StructuredContent)
			if !strings.Contains(seen, "kept-42") {
				t.Fatalf("the tool was not given the request headers at all: %s", seen)
			}
			for name, value := range secrets {
				if strings.Contains(strings.ToLower(seen), strings.ToLower(name)) || strings.Contains(seen, value) {
					t.Errorf("the tool saw %s", name)
				}
			}
			if strings.Contains(seen, tok[strings.LastIndex(tok, ".")+1:]) {
				t.Error("the tool saw the token's signature")
			}
		})
	}
}

// rawConn opens a TCP connection to base's host.
func rawConn(t *testing.T, base string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedWithin reads c until the server closes it, or fails after limit,
// and returns how long after since that was. since is taken before the
// client sent what starts the server's timer, so however slow the machine,
// the time returned is never less than the server's timeout: a lower bound
// on it cannot fail spuriously.
func closedWithin(t *testing.T, c net.Conn, since time.Time, limit time.Duration) (time.Duration, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(limit))
	got, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server still held the connection after %s (read so far: %q)", limit, got)
	}
	return time.Since(since), string(got)
}

// A client that declares a body and sends one byte is cut off after
// HTTP_BODY_TIMEOUT, whether or not it is authenticated.
func TestSlowBodyCutOff(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"HTTP_BODY_TIMEOUT": "300ms"})
	base, _, _ := served(t, e, false)
	tok := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	for name, auth := range map[string]string{"anonymous": "", "authenticated": "Authorization: Bearer " + tok + "\r\n"} {
		t.Run(name, func(t *testing.T) {
			c := rawConn(t, base)
			sent := time.Now()
			fmt.Fprintf(c, "POST /mcp HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
				"Accept: application/json, text/event-stream\r\n%sContent-Length: 1000\r\n\r\n{", strings.TrimPrefix(base, "http://"), auth)
			took, _ := closedWithin(t, c, sent, 5*time.Second)
			if took < 200*time.Millisecond {
				t.Fatalf("closed after %s, before the body deadline", took)
			}
		})
	}
}

// A keep-alive connection with no next request is closed after HTTP_IDLE_TIMEOUT.
func TestIdleKeepAliveClosed(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"HTTP_IDLE_TIMEOUT": "300ms"})
	base, _, _ := served(t, e, false)
	c := rawConn(t, base)
	sent := time.Now()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", strings.TrimPrefix(base, "http://"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || res.StatusCode != http.StatusOK || res.Close {
		t.Fatalf("healthz over keep-alive: %v %v", res, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	if took, _ := closedWithin(t, c, sent, 5*time.Second); took < 200*time.Millisecond {
		t.Fatalf("closed after %s, before the idle timeout", took)
	}
}

// At HTTP_MAX_CONNECTIONS open connections the next one is not served
// until one of them closes.
func TestConnectionCap(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"HTTP_MAX_CONNECTIONS": "2"})
	base, _, _ := served(t, e, false)
	host := strings.TrimPrefix(base, "http://")
	healthz := func(c net.Conn, limit time.Duration) error {
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host)
		_ = c.SetReadDeadline(time.Now().Add(limit))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
	held := []net.Conn{rawConn(t, base), rawConn(t, base)}
	for _, c := range held {
		if err := healthz(c, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	third := rawConn(t, base)
	fmt.Fprintf(third, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	br := bufio.NewReader(third)
	_ = third.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := br.Peek(1); err == nil {
		t.Fatal("a third connection was served beside two held ones (HTTP_MAX_CONNECTIONS=2)")
	}
	_ = held[0].Close()
	_ = third.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("the third connection once a slot was free: %v %v", res, err)
	}
	res.Body.Close()
}

// A tool answering long after the body deadline and the idle timeout still
// answers in the POST's own response: the deadline is lifted once the body
// is read (net/http's read after the body would otherwise cancel the
// request), and an active connection is not idle.
func TestSlowToolOutlivesBodyDeadline(t *testing.T) {
	for _, stateless := range []string{"false", "true"} {
		t.Run("STATELESS="+stateless, func(t *testing.T) {
			e := startWith(t, startIssuer(t), map[string]string{"POLICY_DIR": allowAll(t), "STATELESS": stateless,
				"HTTP_BODY_TIMEOUT": "200ms", "HTTP_IDLE_TIMEOUT": "200ms"}, server.Options{Register: testTools})
			base, _, _ := served(t, e, false)
			tok := e.token(t, devidp.Token{User: "alice"})
			req := rawPost(base+"/mcp", tok, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow","arguments":{"millis":900}}}`)
			if stateless == "false" {
				req.Header.Set("Mcp-Session-Id", session(t, e.at(base), tok))
				req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if b := body(t, res); res.StatusCode != http.StatusOK || !strings.Contains(b, `"slept":900`) {
				t.Fatalf("slow tool: %d %q", res.StatusCode, b)
			}
		})
	}
}

// openSSE opens a legacy SSE stream and returns its reader and the session's
// message endpoint.
func openSSE(t *testing.T, url, token string) (*bufio.Reader, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	res, err := http.DefaultClient.Do(req.WithContext(c))
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("SSE stream: %v %v", res, err)
	}
	t.Cleanup(func() { res.Body.Close() })
	br := bufio.NewReader(res.Body)
	return br, endpointEvent(t, br)
}

// An SSE stream outlives the body and idle timeouts and still delivers.
func TestSSEStreamOutlivesTimeouts(t *testing.T) {
	e := start(t, startIssuer(t), map[string]string{"TRANSPORT": "sse", "HTTP_BODY_TIMEOUT": "200ms", "HTTP_IDLE_TIMEOUT": "200ms"})
	base, _, _ := served(t, e, false)
	tok := e.token(t, devidp.Token{User: "alice", Roles: []string{"data_reader"}})
	stream, endpoint := openSSE(t, base+"/sse", tok)
	// The server's timers are real: rather than sleep for a guess, watch them
	// act on a keep-alive connection opened after the stream. Once the server
	// has closed it as idle, the quiet stream has been idle longer still.
	idle := rawConn(t, base)
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", strings.TrimPrefix(base, "http://"))
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if res, err := http.ReadResponse(bufio.NewReader(idle), nil); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("healthz over keep-alive: %v %v", res, err)
	}
	closedWithin(t, idle, time.Now(), 5*time.Second)
	if res := post(t, base+endpoint, tok, initBody, nil); res.StatusCode != http.StatusAccepted {
		t.Fatalf("initialize on the SSE session: %d %s", res.StatusCode, body(t, res))
	}
	got := make(chan string, 1)
	go func() {
		for {
			line, err := stream.ReadString('\n')
			if err != nil {
				got <- "stream ended: " + err.Error()
				return
			}
			if strings.Contains(line, `"id":1`) {
				got <- line
				return
			}
		}
	}()
	select {
	case line := <-got:
		if !strings.Contains(line, `"result"`) {
			t.Fatalf("after the timeouts the stream gave %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer on the SSE stream")
	}
}

// /metrics is not on the MCP listener; it is on the metrics listener, which
// serves nothing else but the probes (/healthz, /readyz), and only to
// requests addressed by IP or localhost. The probes answer on both.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	e := start(t, startIssuer(t), nil)
	res, err := http.Get(e.Base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the MCP handler: %d", res.StatusCode)
	}
	base, metrics, _ := served(t, e, true)
	get := func(url, host string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if host != "" {
			req.Host = host
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, body(t, res)
	}
	if code, b := get(metrics+"/metrics", ""); code != http.StatusOK || !strings.Contains(b, "mcpguard_policy_decisions_total") {
		t.Fatalf("metrics listener: %d %.200s", code, b)
	}
	if code, _ := get(metrics+"/metrics", "localhost:9464"); code != http.StatusOK {
		t.Fatalf("metrics for Host localhost: %d", code)
	}
	if code, _ := get(metrics+"/metrics", "rebound.attacker.example:9464"); code != http.StatusForbidden {
		t.Fatalf("metrics for a DNS name (rebinding): %d", code)
	}
	for _, path := range []string{"/mcp", "/.well-known/oauth-protected-resource", "/authorize", "/token"} {
		if code, _ := get(metrics+path, ""); code != http.StatusNotFound {
			t.Fatalf("%s on the metrics listener: %d", path, code)
		}
	}
	for _, url := range []string{metrics + "/healthz", metrics + "/readyz", base + "/readyz"} {
		if code, b := get(url, ""); code != http.StatusOK || !strings.Contains(b, `"status":`) {
			t.Fatalf("%s: %d %s", url, code, b)
		}
	}
	if code, _ := get(metrics+"/readyz", "rebound.attacker.example:9464"); code != http.StatusForbidden {
		t.Fatalf("/readyz on the metrics listener for a DNS name (rebinding): %d", code)
	}
	if code, _ := get(base+"/metrics", ""); code != http.StatusNotFound {
		t.Fatalf("/metrics on the served MCP listener: %d", code)
	}
	if code, _ := get(base+"/healthz", ""); code != http.StatusOK {
		t.Fatalf("/healthz on the MCP listener: %d", code)
	}
}

func waitStarted(t *testing.T, started <-chan struct{}) {
	t.Helper()
	select {
	case <-started: // the call is in flight
	case <-time.After(10 * time.Second):
		t.Fatal("the slow tool never started")
	}
}

// rawPost is a JSON-RPC POST, for goroutines (no testing.T).
func rawPost(url, token, body string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	return req
}

// Shutdown ends the open streams at once, lets a request in flight finish,
// and returns nil.
func TestShutdownEndsStreamsWaitsForRequests(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	var releaseOnce sync.Once
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	e := startWith(t, startIssuer(t), map[string]string{"POLICY_DIR": allowAll(t)}, server.Options{Register: testToolsNoting(started, release)})
	base, _, stop := served(t, e, false)
	tok := e.token(t, devidp.Token{User: "alice"})
	sid := session(t, e.at(base), tok)

	req, _ := http.NewRequest(http.MethodGet, base+"/mcp", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
	stream, err := http.DefaultClient.Do(req)
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("GET stream: %v %v", stream, err)
	}
	defer stream.Body.Close()
	streamEnded := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, stream.Body)
		close(streamEnded)
	}()

	callDone := make(chan struct{})
	var callBody string
	go func() {
		defer close(callDone)
		// The tool answers when the test releases it, never by itself.
		req := rawPost(base+"/mcp", tok, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow","arguments":{"millis":600000}}}`)
		req.Header.Set("Mcp-Session-Id", sid)
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			callBody = err.Error()
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		callBody = fmt.Sprint(string(b), err)
	}()
	waitStarted(t, started)

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The call is held in flight: the stream must end while it still is.
	select {
	case <-streamEnded:
	case <-callDone:
		t.Fatalf("the call in flight ended before the stream, unreleased: %s", callBody)
	case <-time.After(10 * time.Second):
		t.Fatal("the GET stream was not ended by the shutdown (while a call was in flight)")
	}
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned (%v) with a call still in flight", err)
	default:
	}
	releaseOnce.Do(func() { close(release) })
	select {
	case <-callDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the call in flight never answered")
	}
	if !strings.Contains(callBody, `"slept":600000`) {
		t.Fatalf("the call in flight was cut: %s", callBody)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve after a clean shutdown: %v", err)
	}
}

// Past SHUTDOWN_TIMEOUT the requests still in flight are cut off, and Serve
// says so.
func TestShutdownBounded(t *testing.T) {
	started := make(chan struct{}, 1)
	e := startWith(t, startIssuer(t), map[string]string{"POLICY_DIR": allowAll(t), "SHUTDOWN_TIMEOUT": "300ms", "STATELESS": "true"},
		server.Options{Register: testToolsNoting(started, nil)})
	base, _, stop := served(t, e, false)
	tok := e.token(t, devidp.Token{User: "alice"})
	cut := make(chan string, 1)
	go func() {
		// The tool would answer in 10 minutes: only the shutdown's bound ends it.
		req := rawPost(base+"/mcp", tok, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow","arguments":{"millis":600000}}}`)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			cut <- err.Error()
			return
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		cut <- fmt.Sprint(string(b), err)
	}()
	waitStarted(t, started)
	// stop waits at most 15 s for Serve (see served): a shutdown that waited
	// for the tool fails there, with another error.
	err := stop()
	if err == nil || !strings.Contains(err.Error(), "SHUTDOWN_TIMEOUT") {
		t.Fatalf("Serve after cutting a request off: %v", err)
	}
	select {
	case got := <-cut:
		if strings.Contains(got, `"slept"`) {
			t.Fatalf("the request in flight was not cut: %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight was still open after Serve returned")
	}
}
