package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/config"
)

// Handler is the HTTP face of the server: the MCP endpoint (/mcp, or /sse
// for TRANSPORT=sse), RFC 9728 metadata, /healthz and /readyz. Metrics are
// not here: they need no token, so they are served by MetricsHandler on a
// listener of their own.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	endpoint := "/mcp"
	var mcpHandler http.Handler
	if s.transport == config.TransportSSE {
		endpoint = "/sse"
		mcpHandler = s.sseHandler()
	} else {
		mcpHandler = s.limitSessions(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s.mcp }, &mcp.StreamableHTTPOptions{
			Stateless:           s.cfg.Stateless,
			JSONResponse:        s.cfg.Stateless,
			MaxRequestBodyBytes: s.cfg.MaxRequestBytes,
			SessionTimeout:      s.cfg.Sessions.IdleTimeout,
			Logger:              quieter(s.logger),
		}))
	}
	mux.Handle(endpoint, s.protect(mcpHandler))

	if s.proxy != nil {
		s.mountFacade(mux, endpoint)
	}
	if s.verifier != nil {
		meta := auth.ProtectedResourceMetadataHandler(s.resourceMetadata(endpoint))
		mux.Handle("GET /.well-known/oauth-protected-resource", meta)
		mux.Handle("GET /.well-known/oauth-protected-resource"+endpoint, meta)
	}
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.Handle("GET /readyz", s.readiness.handler(false))

	cop := http.NewCrossOriginProtection()
	for _, o := range s.cfg.AllowedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			s.logger.Warn("ALLOWED_ORIGINS entry ignored", "origin", o, "error", err)
		}
	}
	if s.proxy != nil {
		// Browser-based clients register, get and revoke tokens from any
		// origin (the façade answers them with CORS): those endpoints take
		// no cookie, so a cross-site POST can do nothing a script could not.
		// The consent form, which rides on a cookie, stays refused.
		for _, p := range []string{facadePaths.register, facadePaths.token, facadePaths.revoke} {
			cop.AddInsecureBypassPattern(p)
		}
	}
	return s.recoverHTTP(bodyDeadline(cop.Handler(mux), s.cfg.HTTP.BodyTimeout))
}

// protect puts authentication and role resolution in front of an MCP handler.
func (s *Server) protect(h http.Handler) http.Handler {
	if s.verifier == nil {
		// The SDK hands every handler the request's headers
		// (RequestExtra.Header): none may carry a credential.
		return limitBody(stripCredentials(h, ""), s.cfg.MaxRequestBytes)
	}
	// The SDK reads the caller from its own context key, which only its
	// middleware can set: hand it the TokenInfo this server already built.
	// That middleware splits the Authorization header into fields, a scan
	// of the whole token that costs microseconds: by then the token is
	// verified, so it is shown a stand-in, and the stand-in is taken out
	// before the SDK hands the headers on.
	h = auth.RequireBearerToken(func(ctx context.Context, _ string, _ *http.Request) (*auth.TokenInfo, error) {
		if ti, ok := ctx.Value(tokenInfoKey{}).(*auth.TokenInfo); ok {
			return ti, nil
		}
		return nil, auth.ErrInvalidToken
	}, &auth.RequireBearerTokenOptions{ClockSkew: s.cfg.Azure.ClockSkew})(dropStandIn(h))
	// After authentication has read them, before the SDK's middleware.
	h = stripCredentials(h, "Bearer "+standInToken)
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
		id, raw, until, err := s.bearerCredential(r)
		if err != nil {
			ch.Write(w, err)
			return
		}
		p := s.resolve(r.Context(), id, raw)
		ti := p.tokenInfo(r)
		if !until.IsZero() && until.Before(ti.Expiration) {
			// A proxy token ends before the Entra token it stands for: what
			// it opened (an SSE stream) ends with it.
			short := *ti
			short.Expiration = until
			ti = &short
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tokenInfoKey{}, ti)))
	})
}

// mountFacade serves the OAuth façade's endpoints on the MCP listener.
func (s *Server) mountFacade(mux *http.ServeMux, endpoint string) {
	h := limitBody(s.proxy.Handler(), oauthMaxBody)
	p := facadePaths
	for _, path := range []string{p.metadata, p.metadata + endpoint, p.jwks, p.register, p.authorize, p.consent, p.callback, p.token, p.revoke} {
		mux.Handle(path, h)
	}
}

// oauthMaxBody bounds a request to the OAuth façade: a registration, a
// consent form or a token request is a few KiB at most.
const oauthMaxBody = 64 << 10

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

// stripCredentials removes every header that carries a credential, so that
// no tool, resource or prompt handler ever sees the caller's token. With a
// standIn, the request goes on with that Authorization instead, in a
// header of its own that dropStandIn may then change.
func stripCredentials(h http.Handler, standIn string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var drop []string
		for name := range r.Header {
			if isCredentialHeader(name) {
				drop = append(drop, name)
			}
		}
		if len(drop) > 0 || standIn != "" {
			r2 := *r
			r2.Header = r.Header.Clone()
			for _, name := range drop {
				delete(r2.Header, name)
			}
			if standIn != "" {
				r2.Header["Authorization"] = []string{standIn}
			}
			r = &r2
		}
		h.ServeHTTP(w, r)
	})
}

// standInToken is what the SDK's bearer middleware is shown in place of
// the verified token.
const standInToken = "verified"

// dropStandIn takes the stand-in Authorization out. The header is the copy
// stripCredentials made for this request, so it is changed in place.
func dropStandIn(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delete(r.Header, "Authorization")
		h.ServeHTTP(w, r)
	})
}

// credentialWords mark a header as a credential: Authorization,
// Proxy-Authorization, Cookie, and what proxies add (X-Forwarded-Access-Token,
// X-MS-TOKEN-AAD-ID-TOKEN, X-Api-Key, …). None is in a header the SDK reads.
var credentialWords = []string{"auth", "cookie", "token", "secret", "password", "passwd", "api-key", "apikey", "credential"}

func isCredentialHeader(name string) bool {
	// Lower-cased on the stack: this runs for every header of every request.
	var buf [64]byte
	if len(name) > len(buf) {
		return true // no header the SDK reads is this long
	}
	lower := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		lower[i] = c
	}
	for _, w := range credentialWords {
		if bytes.Contains(lower, []byte(w)) {
			return true
		}
	}
	return false
}

// bodyDeadline bounds the reading of a request body, so that a client that
// declares a body and sends it slowly, or not at all, cannot hold a
// connection. The deadline is lifted as soon as the body is read: net/http
// then keeps a read pending to notice the client leaving, and a deadline
// expiring there would cancel the request, ending a response that streams
// (Go 1.26's net/http clears it too when it starts that read; this does
// not rely on it).
func bodyDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		// Without a connection (a recorder, in tests) there is nothing to bound.
		if err := rc.SetReadDeadline(time.Now().Add(d)); err == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		}
		h.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the connection's read deadline when the body ends.
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	lifted bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.lifted {
		b.lifted = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
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
	if s.proxy != nil {
		// Clients that read the challenge ask the façade, in its names.
		return s.proxy.Metadata().ScopesSupported
	}
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

// resourceMetadata is the RFC 9728 document. It names Entra as the
// authorization server, or, with the OAuth proxy on, the proxy: clients
// that log users in then register and authorize there. Callers that hold
// Entra tokens do not read it, and keep working.
func (s *Server) resourceMetadata(endpoint string) *oauthex.ProtectedResourceMetadata {
	if s.proxy != nil {
		m := s.proxy.Metadata()
		m.Resource = s.cfg.Azure.BaseURL + endpoint
		m.ResourceName = s.cfg.ServerName
		return m
	}
	return &oauthex.ProtectedResourceMetadata{
		Resource:               s.cfg.Azure.BaseURL + endpoint,
		AuthorizationServers:   []string{s.cfg.Azure.AuthorityHost + "/" + s.cfg.Azure.TenantID + "/v2.0"},
		ScopesSupported:        s.fullScopes(),
		BearerMethodsSupported: []string{"header"},
		ResourceName:           s.cfg.ServerName,
	}
}
