package main

import (
	"bytes"
	"context"
	"encoding/json"
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

// caller makes one request (a tools/call, or a tools/list) and checks its answer.
type caller interface {
	call(ctx context.Context) error
	close()
}

// openClient connects a Go SDK client session to t's endpoint, each client
// on a connection of its own, and makes one request of method through it:
// that proves the caller is allowed and the answer has the tool's shape (or
// the list its length). With -client raw it then records that request
// (headers, session, body) to replay; the session stays open, as a
// client's would.
func openClient(ctx context.Context, t *target, kind, method string) (caller, error) {
	rec := &recorder{method: method, base: http.DefaultTransport.(*http.Transport).Clone()}
	hc := &http.Client{Transport: &bearer{token: t.token, base: rec}}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "mcpguard-load", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: t.url, HTTPClient: hc}, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: connecting the Go SDK client: %w", t.name, err)
	}
	sc := &sdkCaller{cs: cs, method: method, wantTools: t.wantTools}
	if err := sc.call(ctx); err != nil {
		sc.close()
		return nil, fmt.Errorf("%s: first %s through the Go SDK client: %w", t.name, method, err)
	}
	if kind == "sdk" {
		return sc, nil
	}
	header, body := rec.last()
	rc, err := newRawCaller(t.url, method, t.wantTools, header, body)
	if err != nil {
		sc.close()
		return nil, fmt.Errorf("%s: %w", t.name, err)
	}
	rc.session = sc
	// The replayed call must be answered as the SDK's was.
	if err := rc.call(ctx); err != nil {
		rc.close()
		return nil, fmt.Errorf("%s: first replayed %s: %w", t.name, method, err)
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

// recorder keeps the last request of method the SDK client sent.
type recorder struct {
	method string
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
	if json.Unmarshal(b, &env) == nil && env.Method == r.method {
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
type sdkCaller struct {
	cs        *mcp.ClientSession
	method    string
	wantTools int // tools/list: the answer's length
}

func (c *sdkCaller) call(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if c.method == methodList {
		res, err := c.cs.ListTools(ctx, nil)
		if err != nil {
			return err
		}
		return checkList(len(res.Tools), res.NextCursor, c.wantTools)
	}
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

// checkList fails a list that is not the whole list the caller may see:
// a policy that filters wrongly, or a page cut short, fails the run.
func checkList(n int, nextCursor string, want int) error {
	if n != want || nextCursor != "" {
		return fmt.Errorf("listed %d tools (next cursor %q), want %d on one page", n, nextCursor, want)
	}
	return nil
}

func checkResult(out *tools.QueryResult) error {
	if out.Query != query || len(out.Records) != wantRecords {
		return fmt.Errorf("answer for query %q with %d records, want %q with %d", out.Query, len(out.Records), query, wantRecords)
	}
	return nil
}

// rawCaller replays, over plain HTTP, the request the Go SDK client sent:
// the same headers (session, protocol version, token) and the same params,
// with a fresh JSON-RPC id each time. The wire is the SDK client's; the
// client's own work per call is an HTTP round trip and one JSON decode.
type rawCaller struct {
	hc        *http.Client
	url       string
	method    string
	wantTools int
	header    http.Header
	params    json.RawMessage
	id        int64
	resp      bytes.Buffer
	session   *sdkCaller
}

// firstRawID keeps the replayed ids apart from the SDK session's own.
const firstRawID = 1 << 40

func newRawCaller(url, method string, wantTools int, header http.Header, body []byte) (*rawCaller, error) {
	if header == nil {
		return nil, fmt.Errorf("the Go SDK client's %s request was not recorded", method)
	}
	var env struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Method != method {
		return nil, fmt.Errorf("the recorded request is not a %s: %s", method, body)
	}
	h := header.Clone()
	h.Del("Content-Length")
	return &rawCaller{
		hc:        &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: callTimeout},
		url:       url,
		method:    method,
		wantTools: wantTools,
		header:    h,
		params:    env.Params,
		id:        firstRawID,
	}, nil
}

// rpcRequest is a JSON-RPC request with its params as recorded.
type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      int64           `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// rpcAnswer is the part of a tools/call or tools/list answer the harness
// checks. A listed tool is counted, not decoded: the client's work per
// answer stays a scan, alike for both servers.
type rpcAnswer struct {
	ID    int64 `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Result *struct {
		IsError           bool               `json:"isError"`
		StructuredContent *tools.QueryResult `json:"structuredContent"`
		Tools             []struct{}         `json:"tools"`
		NextCursor        string             `json:"nextCursor"`
	} `json:"result"`
}

func (c *rawCaller) call(ctx context.Context) error {
	c.id++
	body, err := json.Marshal(rpcRequest{JSONRPC: "2.0", ID: c.id, Method: c.method, Params: c.params})
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
	case ans.Result == nil:
		return fmt.Errorf("no result: %.300s", msg)
	case c.method == methodList:
		return checkList(len(ans.Result.Tools), ans.Result.NextCursor, c.wantTools)
	case ans.Result.StructuredContent == nil:
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
