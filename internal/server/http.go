package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/config"
)

// Handler is the HTTP face of the server: the MCP endpoint (/mcp, or /sse
// for TRANSPORT=sse), RFC 9728 metadata, health and metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	endpoint := "/mcp"
	var mcpHandler http.Handler
	if s.transport == config.TransportSSE {
		endpoint = "/sse"
		mcpHandler = s.sseHandler()
	} else {
		mcpHandler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.mcp }, &mcp.StreamableHTTPOptions{
			Stateless:           s.cfg.Stateless,
			JSONResponse:        s.cfg.Stateless,
			MaxRequestBodyBytes: s.cfg.MaxRequestBytes,
			Logger:              quieter(s.logger),
		})
	}
	mux.Handle(endpoint, s.protect(mcpHandler))

	if s.verifier != nil {
		meta := auth.ProtectedResourceMetadataHandler(s.resourceMetadata(endpoint))
		mux.Handle("GET /.well-known/oauth-protected-resource", meta)
		mux.Handle("GET /.well-known/oauth-protected-resource"+endpoint, meta)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.Handle("GET /metrics", s.metrics.handler())

	cop := http.NewCrossOriginProtection()
	for _, o := range s.cfg.AllowedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			s.logger.Warn("ALLOWED_ORIGINS entry ignored", "origin", o, "error", err)
		}
	}
	return cop.Handler(mux)
}

// protect puts authentication and role resolution in front of an MCP handler.
func (s *Server) protect(h http.Handler) http.Handler {
	if s.verifier == nil {
		return limitBody(h, s.cfg.MaxRequestBytes)
	}
	// The SDK reads the caller from its own context key, which only its
	// middleware can set: hand it the TokenInfo this server already built.
	h = auth.RequireBearerToken(func(ctx context.Context, _ string, _ *http.Request) (*auth.TokenInfo, error) {
		if ti, ok := ctx.Value(tokenInfoKey{}).(*auth.TokenInfo); ok {
			return ti, nil
		}
		return nil, auth.ErrInvalidToken
	}, &auth.RequireBearerTokenOptions{ClockSkew: s.cfg.Azure.ClockSkew})(h)
	ch := authn.Challenge{
		ResourceMetadataURL: s.cfg.Azure.BaseURL + "/.well-known/oauth-protected-resource" + s.endpointPath(),
		Scopes:              s.fullScopes(),
	}
	h = s.authenticate(h, ch)
	return limitBody(h, s.cfg.MaxRequestBytes)
}

type tokenInfoKey struct{}

// authenticate verifies the caller, resolves its roles and passes caller and
// request facts to the MCP layer inside the request's TokenInfo.
func (s *Server) authenticate(next http.Handler, ch authn.Challenge) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, raw, err := s.verifier.Authenticate(r)
		if err != nil {
			ch.Write(w, err)
			return
		}
		p := s.resolve(r.Context(), id, raw)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenInfoKey{}, p.tokenInfo(r))))
	})
}

func bearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// limitBody refuses bodies over the limit before anything reads them.
func limitBody(h http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			writeJSONRPCError(w, http.StatusRequestEntityTooLarge, -32600, "request body exceeds the limit of MAX_REQUEST_BYTES")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		h.ServeHTTP(w, r)
	})
}

func writeJSONRPCError(w http.ResponseWriter, status int, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil, "error": map[string]any{"code": code, "message": msg}})
	_, _ = w.Write(append(b, '\n'))
}

func (s *Server) endpointPath() string {
	if s.transport == config.TransportSSE {
		return "/sse"
	}
	return "/mcp"
}

// fullScopes are the required scopes as Entra names them for a client:
// {App ID URI}/{scope}.
func (s *Server) fullScopes() []string {
	out := make([]string, 0, len(s.cfg.Azure.RequiredScopes))
	for _, sc := range s.cfg.Azure.RequiredScopes {
		if strings.Contains(sc, "://") {
			out = append(out, sc)
		} else {
			out = append(out, s.cfg.Azure.AppIDURI+"/"+sc)
		}
	}
	return out
}

func (s *Server) resourceMetadata(endpoint string) *oauthex.ProtectedResourceMetadata {
	return &oauthex.ProtectedResourceMetadata{
		Resource:               s.cfg.Azure.BaseURL + endpoint,
		AuthorizationServers:   []string{s.cfg.Azure.AuthorityHost + "/" + s.cfg.Azure.TenantID + "/v2.0"},
		ScopesSupported:        s.fullScopes(),
		BearerMethodsSupported: []string{"header"},
		ResourceName:           s.cfg.ServerName,
	}
}

// sseHandler serves the legacy HTTP+SSE transport. The SDK's SSE transport
// carries no TokenInfo, so each session gets a server bound to the principal
// that opened it, and POSTs to a session are accepted only from that user.
func (s *Server) sseHandler() http.Handler {
	var mu sync.Mutex
	owners := map[string]string{} // session id → user id
	cache := mcp.NewSchemaCache()
	h := mcp.NewSSEHandler(func(r *http.Request) *mcp.Server {
		p := s.anonymous
		if ti, ok := r.Context().Value(tokenInfoKey{}).(*auth.TokenInfo); ok {
			p = ti.Extra[extraKey].(*requestFacts).p
		}
		srv := mcp.NewServer(&mcp.Implementation{Name: s.cfg.ServerName, Version: Version}, s.serverOptions(cache))
		s.register(srv)
		srv.AddReceivingMiddleware(s.authorizer(p))
		return srv
	}, &mcp.SSEOptions{MaxRequestBodyBytes: s.cfg.MaxRequestBytes})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := ""
		if ti, ok := r.Context().Value(tokenInfoKey{}).(*auth.TokenInfo); ok {
			user = ti.UserID
		}
		if r.Method == http.MethodPost {
			id := r.URL.Query().Get("sessionid")
			mu.Lock()
			owner, known := owners[id]
			mu.Unlock()
			if !known {
				http.Error(w, "session not found", http.StatusNotFound)
				return
			}
			if owner != user {
				http.Error(w, "session belongs to another user", http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
			return
		}
		sw := &sniffWriter{ResponseWriter: w, onSession: func(id string) {
			mu.Lock()
			owners[id] = user
			mu.Unlock()
		}}
		h.ServeHTTP(sw, r)
		if sw.session != "" {
			mu.Lock()
			delete(owners, sw.session)
			mu.Unlock()
		}
	})
}

// sniffWriter learns a new SSE session's id from its endpoint event.
type sniffWriter struct {
	http.ResponseWriter
	session   string
	onSession func(string)
}

func (w *sniffWriter) Write(b []byte) (int, error) {
	if w.session == "" {
		if i := bytes.Index(b, []byte("sessionid=")); i >= 0 {
			rest := b[i+len("sessionid="):]
			if j := bytes.IndexAny(rest, "&\r\n \""); j >= 0 {
				rest = rest[:j]
			}
			if id, err := url.QueryUnescape(string(rest)); err == nil {
				w.session = id
				w.onSession(id)
			}
		}
	}
	return w.ResponseWriter.Write(b)
}

func (w *sniffWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *sniffWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
