package authn

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
)

type identityKey struct{}

// FromContext returns the identity the Middleware put in ctx, or nil.
func FromContext(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	return id
}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// Challenge describes the resource server to clients that fail authentication.
type Challenge struct {
	// ResourceMetadataURL is the RFC 9728 metadata document's URL.
	ResourceMetadataURL string
	// Scopes are advertised in scope= (full Entra names, e.g. api://…/read).
	Scopes []string
}

// Middleware verifies the bearer token of every request. Failures answer 401
// (missing or invalid token), 403 (insufficient_scope) or 503 (keys
// unavailable) with an RFC 6750 WWW-Authenticate challenge naming the
// resource metadata; success puts the Identity in the request context.
func (v *Verifier) Middleware(ch Challenge) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, _, err := v.Authenticate(r)
			if err != nil {
				ch.Write(w, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
		})
	}
}

// Authenticate verifies the request's bearer token and returns the identity
// and the token itself (for a role source that must exchange it; never to be
// stored or logged). Errors are *Error.
func (v *Verifier) Authenticate(r *http.Request) (*Identity, string, error) {
	raw, err := Bearer(r)
	if err != nil {
		return nil, "", err
	}
	id, err := v.Verify(r.Context(), raw)
	if err != nil {
		return nil, "", err
	}
	return id, raw, nil
}

// Bearer returns the request's bearer token, or an *Error (401, no error
// code: RFC 6750 §3.1) when it carries none. The server uses it where a
// token may first have to be resolved to the Entra token it stands for.
func Bearer(r *http.Request) (string, error) {
	raw, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return "", &Error{Status: http.StatusUnauthorized, Description: "bearer token required"}
	}
	return raw, nil
}

// Write answers a failed authentication with its status and challenge.
func (ch Challenge) Write(w http.ResponseWriter, err error) {
	var ae *Error
	if !errors.As(err, &ae) {
		ae = &Error{Status: http.StatusUnauthorized, Code: "invalid_token", Description: "token rejected"}
	}
	writeChallenge(w, ch, strings.Join(ch.Scopes, " "), ae)
}

func bearer(h string) (string, bool) {
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	tok := strings.TrimSpace(h[len(p):])
	// Two byte scans: ContainsAny walks a long token rune by rune.
	return tok, tok != "" && strings.IndexByte(tok, ' ') < 0 && strings.IndexByte(tok, '\t') < 0
}

func writeChallenge(w http.ResponseWriter, ch Challenge, scope string, e *Error) {
	var b strings.Builder
	b.WriteString("Bearer")
	sep := " "
	param := func(k, v string) {
		b.WriteString(sep)
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(quoted(v))
		sep = ", "
	}
	if ch.ResourceMetadataURL != "" {
		param("resource_metadata", ch.ResourceMetadataURL)
	}
	if e.Code != "" && e.Status != http.StatusServiceUnavailable {
		param("error", e.Code)
		param("error_description", e.Description)
	}
	if scope != "" {
		param("scope", scope)
	}
	if e.Status != http.StatusServiceUnavailable {
		w.Header().Set("WWW-Authenticate", b.String())
	} else {
		w.Header().Set("Retry-After", "5")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	code := e.Code
	if code == "" {
		code = "invalid_request"
		if e.Status == http.StatusUnauthorized {
			code = "unauthorized"
		}
	}
	body, _ := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, e.Description})
	_, _ = w.Write(append(body, '\n'))
}

// quoted makes an RFC 9110 quoted-string: backslash and quote escaped, and
// control characters (which no header may carry) left out.
func quoted(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range v {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
