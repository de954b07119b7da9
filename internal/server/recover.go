package server

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync/atomic"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// internalErrorMessage is all a caller learns of a panic; the log has the rest.
const internalErrorMessage = "internal error"

// recovering turns a panic in the policy path or in a handler into a
// JSON-RPC internal error for this request alone. The SDK recovers nothing,
// and its handlers run on goroutines of its own, outside net/http's recovery:
// one panicking tool would otherwise end the process and every session in it.
func (s *Server) recovering(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (res mcp.Result, err error) {
		defer func() {
			if v := recover(); v != nil {
				user, session := "", ""
				if extra := req.GetExtra(); extra != nil && extra.TokenInfo != nil {
					user = extra.TokenInfo.UserID
				}
				if ss, ok := req.GetSession().(*mcp.ServerSession); ok && ss != nil {
					session = ss.ID()
				}
				s.logger.Error("panic while handling an MCP request: answered as an internal error",
					"method", method, "user", user, "session", session, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				res, err = nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: internalErrorMessage}
			}
		}()
		return next(ctx, method, req)
	}
}

// recoverHTTP answers a panic in the HTTP layer (authentication, role
// resolution, the SDK's HTTP handling) with a 500 and a JSON-RPC internal
// error, and logs its stack with the server's logger. net/http would keep the
// process alive, but cut the connection without an answer and print the
// stack outside the server's log. A panic after the answer has begun cuts
// the connection (http.ErrAbortHandler): nothing sound can be added to it.
func (s *Server) recoverHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.logger.Error("panic while serving HTTP: answered as an internal error",
				"method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if tw.started.Load() {
				panic(http.ErrAbortHandler)
			}
			writeJSONRPCError(w, http.StatusInternalServerError, jsonrpc.CodeInternalError, internalErrorMessage)
		}()
		h.ServeHTTP(tw, r)
	})
}

// trackingWriter notes whether the response has begun. Streams write from
// other goroutines, hence the atomic.
type trackingWriter struct {
	http.ResponseWriter
	started atomic.Bool
}

func (w *trackingWriter) WriteHeader(code int) {
	w.started.Store(true)
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.started.Store(true)
	return w.ResponseWriter.Write(b)
}

func (w *trackingWriter) Flush() {
	w.started.Store(true)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (deadlines, flushes).
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
