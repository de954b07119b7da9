package server

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestUserLimit(t *testing.T) {
	l := newUserLimit(2)
	if !l.acquire("a") || !l.acquire("a") || l.acquire("a") {
		t.Fatal("a third slot under a cap of 2")
	}
	if !l.acquire("b") {
		t.Fatal("one user's slots count against another")
	}
	l.release("a")
	if !l.acquire("a") || l.acquire("a") {
		t.Fatal("a released slot is not free exactly once")
	}
	l.release("a")
	l.release("a")
	l.release("b")
	if l.held("a") != 0 || l.held("b") != 0 || len(l.n) != 0 {
		t.Fatalf("slots left after every release: %v", l.n)
	}
}

func TestRecoveringMiddleware(t *testing.T) {
	var logs bytes.Buffer
	s := &Server{logger: slog.New(slog.NewTextHandler(&logs, nil))}
	h := s.recovering(func(context.Context, string, mcp.Request) (mcp.Result, error) {
		panic("secret-detail")
	})
	res, err := h(context.Background(), "tools/call", &mcp.CallToolRequest{})
	rpcErr, ok := err.(*jsonrpc.Error)
	if res != nil || !ok || rpcErr.Code != jsonrpc.CodeInternalError || strings.Contains(rpcErr.Message, "secret") {
		t.Fatalf("got %v, %v", res, err)
	}
	if !strings.Contains(logs.String(), "secret-detail") || !strings.Contains(logs.String(), "goroutine ") {
		t.Fatalf("log lacks the panic or its stack: %s", logs.String())
	}
}

func TestRecoverHTTP(t *testing.T) {
	s := &Server{logger: slog.New(slog.DiscardHandler)}
	before := s.recoverHTTP(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("secret-detail") }))
	rec := httptest.NewRecorder()
	before.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/mcp", nil))
	var body struct {
		Error struct{ Code int } `json:"error"`
	}
	if rec.Code != http.StatusInternalServerError || json.Unmarshal(rec.Body.Bytes(), &body) != nil ||
		body.Error.Code != jsonrpc.CodeInternalError || strings.Contains(rec.Body.String(), "secret") {
		t.Fatalf("panic before the answer: %d %s", rec.Code, rec.Body)
	}

	// Once the answer has begun, the connection is cut rather than a second answer appended.
	after := s.recoverHTTP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("event: message\n"))
		panic("secret-detail")
	}))
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Fatalf("panic after the answer began: recovered %v, want http.ErrAbortHandler", v)
		}
	}()
	after.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/mcp", nil))
}
