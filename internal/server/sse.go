package server

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// sseHandler serves the legacy HTTP+SSE transport (MCP 2024-11-05): a GET
// opens a session and its event stream, POSTs to ?sessionid= bring the
// client's messages.
//
// The SDK's SSE handler puts POSTed messages on a queue without the POST's
// TokenInfo, which left every message decided as the user who opened the
// stream, with that token's roles, for as long as the stream lived. Here the
// SDK writes the stream, but each POSTed request carries the TokenInfo of the
// very POST that brought it (RequestExtra, as over Streamable HTTP): every
// request is decided with its own token's principal, concurrent POSTs cannot
// mix, and the stream ends when the token that opened it expires.
func (s *Server) sseHandler() http.Handler {
	return &sseHandler{
		s:        s,
		streams:  newUserLimit(s.cfg.Sessions.MaxStreamsPerUser),
		sessions: map[string]*sseSession{},
	}
}

type sseHandler struct {
	s       *Server
	streams *userLimit

	mu       sync.Mutex
	sessions map[string]*sseSession
}

// sseSession is one open stream and the queue of messages POSTed to it.
type sseSession struct {
	id   string
	user string
	in   chan jsonrpc.Message
	// done is closed when the session ends; POSTs then find it gone.
	done    chan struct{}
	endOnce sync.Once
	// conn is the SDK's side of the stream, set by Connect.
	conn mcp.Connection
}

func (x *sseSession) end() { x.endOnce.Do(func() { close(x.done) }) }

func (h *sseHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The DNS-rebinding guard the SDK's handlers apply on loopback listeners.
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && la != nil && isLoopback(la.String()) && !isLoopback(r.Host) {
		http.Error(w, "Forbidden: invalid Host header", http.StatusForbidden)
		return
	}
	switch r.Method {
	case http.MethodGet:
		h.open(w, r)
	case http.MethodPost:
		h.deliver(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	}
}

// open serves a session's event stream until the client leaves, the server
// closes the session, or the opening token expires.
func (h *sseHandler) open(w http.ResponseWriter, r *http.Request) {
	ti := auth.TokenInfoFromContext(r.Context())
	user := userOf(r)
	if !h.streams.acquire(user) {
		h.s.logger.Info("SSE stream refused: per-user cap", "user", user, "max", h.streams.max)
		tooMany(w, "streams", "MAX_STREAMS_PER_USER", h.streams.max)
		return
	}
	defer h.streams.release(user)

	x := &sseSession{id: rand.Text(), user: user, in: make(chan jsonrpc.Message, 100), done: make(chan struct{})}
	endpoint, err := r.URL.Parse("?sessionid=" + x.id)
	if err != nil {
		http.Error(w, "internal error: failed to create endpoint", http.StatusInternalServerError)
		return
	}
	h.mu.Lock()
	h.sessions[x.id] = x
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.sessions, x.id)
		h.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Connection", "keep-alive")
	t := &sseTransport{sdk: &mcp.SSEServerTransport{Endpoint: endpoint.RequestURI(), Response: w}, x: x}
	ss, err := h.s.mcp.Connect(r.Context(), t, nil)
	if err != nil {
		h.s.logger.Warn("SSE session could not start", "error", err)
		http.Error(w, "connection failed", http.StatusInternalServerError)
		return
	}

	var expired <-chan time.Time
	if ti != nil && !ti.Expiration.IsZero() {
		timer := time.NewTimer(time.Until(ti.Expiration))
		defer timer.Stop()
		expired = timer.C
	}
	select {
	case <-r.Context().Done():
	case <-x.done:
	case <-expired:
		h.s.logger.Info("SSE stream ended: the token that opened it expired", "user", user, "session", x.id)
	}
	// Closing the SDK's connection first stops every write to w and every
	// read at once; the graceful close waits for requests still running,
	// which must not keep the stream open.
	_ = x.conn.Close()
	go func() { _ = ss.Close() }()
}

// deliver queues one POSTed message for its session, with the POST's own
// TokenInfo, after checking that the session belongs to the POST's user.
func (h *sseHandler) deliver(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		http.Error(w, "Content-Type must be 'application/json'", http.StatusUnsupportedMediaType)
		return
	}
	id := r.URL.Query().Get("sessionid")
	if id == "" {
		http.Error(w, "sessionid must be provided", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	x := h.sessions[id]
	h.mu.Unlock()
	if x == nil {
		http.Error(w, "session not found", http.StatusNotFound)
		return
	}
	if x.user != userOf(r) {
		http.Error(w, "session belongs to another user", http.StatusForbidden)
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.s.cfg.MaxRequestBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSONRPCError(w, http.StatusRequestEntityTooLarge, jsonrpc.CodeInvalidRequest, "request body exceeds the limit of MAX_REQUEST_BYTES")
			return
		}
		http.Error(w, "failed to read body", http.StatusBadRequest)
		return
	}
	msg, err := jsonrpc.DecodeMessage(data)
	if err != nil {
		writeJSONRPCError(w, http.StatusBadRequest, jsonrpc.CodeParseError, "invalid JSON-RPC message")
		return
	}
	if req, ok := msg.(*jsonrpc.Request); ok {
		// protect has already stripped the credentials from r.Header.
		req.Extra = &mcp.RequestExtra{TokenInfo: auth.TokenInfoFromContext(r.Context()), Header: r.Header}
	}
	select {
	case x.in <- msg:
		w.WriteHeader(http.StatusAccepted)
	case <-x.done:
		http.Error(w, "session closed", http.StatusNotFound)
	case <-r.Context().Done():
	}
}

// sseTransport is the SDK's SSE server transport for the stream (the
// endpoint event, message events, the end of the response) with reads taken
// from the session's own queue.
type sseTransport struct {
	sdk *mcp.SSEServerTransport
	x   *sseSession
}

func (t *sseTransport) Connect(ctx context.Context) (mcp.Connection, error) {
	c, err := t.sdk.Connect(ctx)
	if err != nil {
		return nil, err
	}
	t.x.conn = &sseConn{Connection: c, x: t.x}
	return t.x.conn, nil
}

// SupportsProtocolVersion keeps the SDK transport's answer: no 2026-07-28 over SSE.
func (t *sseTransport) SupportsProtocolVersion(v string) bool {
	return t.sdk.SupportsProtocolVersion(v)
}

type sseConn struct {
	mcp.Connection
	x *sseSession
}

func (c *sseConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case m := <-c.x.in:
		return m, nil
	case <-c.x.done:
		return nil, io.EOF
	}
}

func (c *sseConn) Close() error {
	c.x.end()
	return c.Connection.Close()
}

// SessionID gives input.mcp.session_id a value over SSE too (the SDK's is empty).
func (c *sseConn) SessionID() string { return c.x.id }

// isLoopback reports whether a host or host:port names the loopback interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = strings.Trim(addr, "[]")
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
