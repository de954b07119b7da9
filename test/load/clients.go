package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/tools"
)

const (
	toolName    = "read_critical_data"
	query       = "loadtest"
	wantRecords = 3 // the tool's answer for a query without a limit
	callTimeout = 10 * time.Second
)

// caller makes one tools/call and checks its answer.
type caller interface {
	call(ctx context.Context) error
	close()
}

// openClient connects a Go SDK client session to t's endpoint, each client
// on a connection of its own, and makes one call through it: that proves
// the caller is allowed and the answer has the tool's shape. With -client
// raw it then records that call's request (headers, session, body) to
// replay; the session stays open, as a client's would.
func openClient(ctx context.Context, t *target, kind string) (caller, error) {
	rec := &recorder{base: http.DefaultTransport.(*http.Transport).Clone()}
	hc := &http.Client{Transport: &bearer{token: t.token, base: rec}}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "mcpguard-load", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: t.url, HTTPClient: hc}, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: connecting the Go SDK client: %w", t.name, err)
	}
	sc := &sdkCaller{cs: cs}
	if err := sc.call(ctx); err != nil {
		sc.close()
		return nil, fmt.Errorf("%s: first tools/call %s through the Go SDK client: %w", t.name, toolName, err)
	}
	if kind == "sdk" {
		return sc, nil
	}
	header, body := rec.last()
	rc, err := newRawCaller(t.url, header, body)
	if err != nil {
		sc.close()
		return nil, fmt.Errorf("%s: %w", t.name, err)
	}
	rc.session = sc
	// The replayed call must be answered as the SDK's was.
	if err := rc.call(ctx); err != nil {
		rc.close()
		return nil, fmt.Errorf("%s: first replayed tools/call: %w", t.name, err)
	}
	return rc, nil
}

// bearer adds the token to every request of the SDK client (none for the
// bare server, which still goes through it: equal work on the client side).
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.base.RoundTrip(r)
}

// recorder keeps the last tools/call request the SDK client sent.
type recorder struct {
	base   http.RoundTripper
	mu     sync.Mutex
	header http.Header
	body   []byte
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.Body == nil {
		return r.base.RoundTrip(req)
	}
	b, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.Body = io.NopCloser(bytes.NewReader(b))
	var env struct {
		Method string `json:"method"`
	}
	if json.Unmarshal(b, &env) == nil && env.Method == "tools/call" {
		r.mu.Lock()
		r.header, r.body = req.Header.Clone(), b
		r.mu.Unlock()
	}
	return r.base.RoundTrip(req)
}

func (r *recorder) last() (http.Header, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.header, r.body
}

// sdkCaller calls through the Go SDK client.
type sdkCaller struct{ cs *mcp.ClientSession }

func (c *sdkCaller) call(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.cs.CallTool(ctx, &mcp.CallToolParams{Name: toolName, Arguments: map[string]any{"query": query}})
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("tool error: %s", contentText(res.Content))
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return fmt.Errorf("structured content: %w", err)
	}
	var out tools.QueryResult
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("structured content %s: %w", raw, err)
	}
	return checkResult(&out)
}

// close ends the session, boundedly: the server may already be gone.
func (c *sdkCaller) close() {
	done := make(chan struct{})
	go func() { _ = c.cs.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
	}
}

func contentText(cs []mcp.Content) string {
	var b strings.Builder
	for _, c := range cs {
		if t, ok := c.(*mcp.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return b.String()
}

func checkResult(out *tools.QueryResult) error {
	if out.Query != query || len(out.Records) != wantRecords {
		return fmt.Errorf("answer for query %q with %d records, want %q with %d", out.Query, len(out.Records), query, wantRecords)
	}
	return nil
}

// rawCaller replays, over plain HTTP, the tools/call the Go SDK client sent:
// the same headers (session, protocol version, token) and the same params,
// with a fresh JSON-RPC id each time. The wire is the SDK client's; the
// client's own work per call is an HTTP round trip and one JSON decode.
type rawCaller struct {
	hc      *http.Client
	url     string
	header  http.Header
	params  json.RawMessage
	id      int64
	resp    bytes.Buffer
	session *sdkCaller
}

// firstRawID keeps the replayed ids apart from the SDK session's own.
const firstRawID = 1 << 40

func newRawCaller(url string, header http.Header, body []byte) (*rawCaller, error) {
	if header == nil {
		return nil, errors.New("the Go SDK client's tools/call request was not recorded")
	}
	var env struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Method != "tools/call" {
		return nil, fmt.Errorf("the recorded request is not a tools/call: %s", body)
	}
	h := header.Clone()
	h.Del("Content-Length")
	return &rawCaller{
		hc:     &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: callTimeout},
		url:    url,
		header: h,
		params: env.Params,
		id:     firstRawID,
	}, nil
}

// rpcRequest is a JSON-RPC request with its params as recorded.
type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      int64           `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// rpcAnswer is the part of a tools/call answer the harness checks.
type rpcAnswer struct {
	ID    int64 `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Result *struct {
		IsError           bool               `json:"isError"`
		StructuredContent *tools.QueryResult `json:"structuredContent"`
	} `json:"result"`
}

func (c *rawCaller) call(ctx context.Context) error {
	c.id++
	body, err := json.Marshal(rpcRequest{JSONRPC: "2.0", ID: c.id, Method: "tools/call", Params: c.params})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	// Shared by this client's calls, one at a time; nothing below writes to it.
	req.Header = c.header
	res, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	c.resp.Reset()
	_, err = c.resp.ReadFrom(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.300s", res.StatusCode, c.resp.Bytes())
	}
	msg := c.resp.Bytes()
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		if msg = sseData(msg); msg == nil {
			return fmt.Errorf("an event stream with no data: %.300s", c.resp.Bytes())
		}
	}
	var ans rpcAnswer
	if err := json.Unmarshal(msg, &ans); err != nil {
		return fmt.Errorf("answer %.300s: %w", msg, err)
	}
	switch {
	case ans.ID != c.id:
		return fmt.Errorf("answer to id %d, want %d", ans.ID, c.id)
	case ans.Error != nil:
		return fmt.Errorf("JSON-RPC error %d: %s", ans.Error.Code, ans.Error.Message)
	case ans.Result == nil || ans.Result.StructuredContent == nil:
		return fmt.Errorf("no structured result: %.300s", msg)
	case ans.Result.IsError:
		return fmt.Errorf("tool error: %.300s", msg)
	}
	return checkResult(ans.Result.StructuredContent)
}

func (c *rawCaller) close() {
	c.hc.CloseIdleConnections()
	if c.session != nil {
		c.session.close()
	}
}

// sseData is the data of the last event in an SSE body: the SDK answers a
// call on its POST's stream with one event, after any notifications.
func sseData(body []byte) []byte {
	var data []byte
	for line := range bytes.SplitSeq(body, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = bytes.TrimPrefix(d, []byte(" "))
		}
	}
	return data
}
