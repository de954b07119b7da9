package oauthproxy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mcpguard/mcpguard/internal/store"
)

// tokenError is an RFC 6749 §5.2 refusal with the reason it is counted under.
type tokenError struct {
	status int
	code   string
	desc   string
	reason string
}

func (e *tokenError) Error() string { return e.code + ": " + e.desc }

func grantError(reason, desc string) *tokenError {
	return &tokenError{status: http.StatusBadRequest, code: "invalid_grant", desc: desc, reason: reason}
}

var errStore = &tokenError{status: http.StatusServiceUnavailable, code: "temporarily_unavailable", desc: "the authorization server's store is unavailable"}

// readForm reads a POSTed form, once-only parameters, body bounded.
func readForm(w http.ResponseWriter, r *http.Request) (map[string]string, *tokenError) {
	if r.Method != http.MethodPost {
		return nil, &tokenError{status: http.StatusMethodNotAllowed, code: "invalid_request", desc: "POST only", reason: "invalid_request"}
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil, &tokenError{status: http.StatusBadRequest, code: "invalid_request", desc: "the body must be application/x-www-form-urlencoded", reason: "invalid_request"}
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return nil, &tokenError{status: http.StatusBadRequest, code: "invalid_request", desc: "the form is unreadable", reason: "invalid_request"}
	}
	f, err := singleValues(r.PostForm)
	if err != nil {
		return nil, &tokenError{status: http.StatusBadRequest, code: "invalid_request", desc: err.Error(), reason: "invalid_request"}
	}
	return f, nil
}

// clientIdentity is the client_id a public client names, in the form or as
// the user of HTTP Basic with an empty password (what oauth2's auto-detected
// style sends first). The proxy issues no secrets, so any secret is wrong.
func clientIdentity(r *http.Request, f map[string]string) (string, *tokenError) {
	id := f["client_id"]
	if u, pw, ok := r.BasicAuth(); ok {
		uid, err := url.QueryUnescape(u)
		if err != nil || pw != "" || (id != "" && id != uid) {
			return "", &tokenError{status: http.StatusUnauthorized, code: "invalid_client", desc: "clients of this server are public: client_id only, no secret", reason: "invalid_client"}
		}
		id = uid
	}
	if f["client_secret"] != "" {
		return "", &tokenError{status: http.StatusUnauthorized, code: "invalid_client", desc: "clients of this server are public: client_id only, no secret", reason: "invalid_client"}
	}
	if id == "" {
		return "", &tokenError{status: http.StatusBadRequest, code: "invalid_request", desc: "client_id is required", reason: "invalid_request"}
	}
	return id, nil
}

// tokenResponse is RFC 6749 §5.1.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

func (p *Proxy) serveToken(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	resp, terr := func() (*tokenResponse, *tokenError) {
		f, terr := readForm(w, r)
		if terr != nil {
			return nil, terr
		}
		clientID, terr := clientIdentity(r, f)
		if terr != nil {
			return nil, terr
		}
		if res := f["resource"]; res != "" && !p.sameResource(res) {
			return nil, &tokenError{status: http.StatusBadRequest, code: "invalid_target", desc: "resource is not this server's MCP endpoint", reason: "resource"}
		}
		switch f["grant_type"] {
		case "authorization_code":
			return p.redeemCode(ctx, clientID, f)
		case "refresh_token":
			return p.rotateRefresh(ctx, clientID, f)
		}
		return nil, &tokenError{status: http.StatusBadRequest, code: "unsupported_grant_type", desc: "authorization_code and refresh_token only", reason: "invalid_request"}
	}()
	if terr != nil {
		if terr.reason != "" {
			p.refuse(ctx, terr.reason, terr.desc)
		}
		if terr.status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
		}
		writeJSON(w, terr.status, oauthError{Error: terr.code, Description: terr.desc})
		return
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// redeemCode is the authorization_code grant. The code is claimed before
// anything else is checked: it is tried once, right or wrong, and a second
// presentation revokes whatever the first one obtained.
func (p *Proxy) redeemCode(ctx context.Context, clientID string, f map[string]string) (*tokenResponse, *tokenError) {
	code := f["code"]
	var rec codeRecord
	if err := p.get(ctx, secretKey(kindCode, code), &rec); err != nil || code == "" {
		if errors.Is(err, ErrUnavailable) {
			return nil, errStore
		}
		return nil, grantError("code_invalid", "the code is unknown or expired")
	}
	now := p.now()
	if !now.Before(rec.Expires) {
		return nil, grantError("code_expired", "the code expired")
	}
	won, err := p.claim(ctx, secretKey(kindCodeUsed, code), used{Family: rec.Family}, p.cfg.CodeTTL)
	if err != nil {
		return nil, errStore
	}
	if !won {
		_ = p.revokeFamily(ctx, rec.Family, "code reused") // refused either way; a failure is logged
		return nil, grantError("code_reuse", "the code was already used; what it issued is revoked")
	}
	var terr *tokenError
	switch {
	case rec.ClientID != clientID:
		terr = grantError("client_mismatch", "the code was issued to another client")
	case f["redirect_uri"] != rec.RedirectURI:
		terr = grantError("redirect_uri", "redirect_uri differs from the authorization request's")
	case !pkceMatches(f["code_verifier"], rec.CodeChallenge):
		terr = grantError("pkce_verifier", "code_verifier does not match the code_challenge")
	}
	if terr != nil {
		// The code is spent; the upstream tokens it held go with it.
		_ = p.revokeFamily(ctx, rec.Family, "code redemption refused") // refused either way; a failure is logged
		return nil, terr
	}
	var ut upstreamTokens
	if err := p.get(ctx, key(kindUpstream, rec.Family), &ut); err != nil {
		if errors.Is(err, ErrUnavailable) {
			return nil, errStore
		}
		return nil, grantError("code_invalid", "the sign-in behind the code is gone")
	}
	fam := family{ClientID: rec.ClientID, Scopes: rec.Scopes, Expires: now.Add(p.cfg.SessionTTL)}
	if err := p.put(ctx, key(kindUpstream, rec.Family), ut, p.cfg.SessionTTL); err != nil {
		return nil, errStore
	}
	// Created only if absent: a revocation that raced ahead (a reuse of this
	// code on another replica) has already written the family as revoked.
	created, err := p.claim(ctx, key(kindFamily, rec.Family), fam, p.cfg.SessionTTL)
	if err != nil {
		return nil, errStore
	}
	if !created {
		p.del(ctx, key(kindUpstream, rec.Family))
		return nil, grantError("code_reuse", "the sign-in was revoked")
	}
	return p.issue(ctx, rec.Family, fam)
}

// rotateRefresh is the refresh_token grant with rotation: each refresh token
// is used once; a second use revokes its whole family.
func (p *Proxy) rotateRefresh(ctx context.Context, clientID string, f map[string]string) (*tokenResponse, *tokenError) {
	rt := f["refresh_token"]
	var rec refreshRecord
	if err := p.get(ctx, secretKey(kindRefresh, rt), &rec); err != nil || rt == "" {
		if errors.Is(err, ErrUnavailable) {
			return nil, errStore
		}
		return nil, grantError("refresh_invalid", "the refresh token is unknown or expired")
	}
	now := p.now()
	if !now.Before(rec.Expires) {
		return nil, grantError("refresh_expired", "the refresh token expired")
	}
	var fam family
	if err := p.get(ctx, key(kindFamily, rec.Family), &fam); err != nil || fam.Revoked || !now.Before(fam.Expires) {
		if errors.Is(err, ErrUnavailable) {
			return nil, errStore
		}
		return nil, grantError("token_revoked", "the sign-in was revoked or ended")
	}
	// A refresh keeps the sign-in's scopes (checked before the token is
	// spent). A narrower token is refused, not issued: requests are decided
	// on the upstream Entra token, which carries every scope of the sign-in,
	// so the narrowing would be a promise the policy does not keep.
	if raw := f["scope"]; raw != "" {
		asked, err := p.parseScopes(raw)
		if err != nil || !sameScopes(asked, fam.Scopes) {
			return nil, &tokenError{status: http.StatusBadRequest, code: "invalid_scope",
				desc: "a refresh keeps the sign-in's scopes (" + strings.Join(fam.Scopes, " ") + "); sign in again for others", reason: "scope"}
		}
	}
	won, err := p.claim(ctx, secretKey(kindRefreshUsed, rt), used{Family: rec.Family}, rec.Expires.Sub(now))
	if err != nil {
		return nil, errStore
	}
	if !won {
		_ = p.revokeFamily(ctx, rec.Family, "refresh token reused") // refused either way; a failure is logged
		return nil, grantError("refresh_reuse", "the refresh token was already used; its sign-in is revoked")
	}
	if rec.ClientID != clientID {
		_ = p.revokeFamily(ctx, rec.Family, "refresh token presented by another client") // refused either way; a failure is logged
		return nil, grantError("client_mismatch", "the refresh token was issued to another client")
	}
	// Read again after the claim: a revocation may have landed in between.
	if err := p.get(ctx, key(kindFamily, rec.Family), &fam); err != nil || fam.Revoked || !now.Before(fam.Expires) {
		if errors.Is(err, ErrUnavailable) {
			return nil, errStore
		}
		return nil, grantError("token_revoked", "the sign-in was revoked or ended")
	}
	return p.issue(ctx, rec.Family, fam)
}

// issue mints an access token and a fresh refresh token of the family, for
// the family's scopes.
func (p *Proxy) issue(ctx context.Context, famID string, fam family) (*tokenResponse, *tokenError) {
	scopes := fam.Scopes
	now := p.now()
	left := fam.Expires.Sub(now)
	atl := min(p.cfg.AccessTokenTTL, left)
	at, err := p.keys.sign(accessClaims{
		Issuer: p.cfg.Issuer, Audience: p.cfg.Resource, Expiry: now.Add(atl).Unix(), IssuedAt: now.Unix(),
		ID: newSecret()[:22], ClientID: fam.ClientID, Session: famID, Scope: strings.Join(scopes, " "),
	})
	if err != nil {
		p.logger.Error("access token not signed", "error", err)
		return nil, &tokenError{status: http.StatusInternalServerError, code: "server_error", desc: "the token could not be issued"}
	}
	rt := newSecret()
	rtl := min(p.cfg.RefreshTokenTTL, left)
	if err := p.put(ctx, secretKey(kindRefresh, rt), refreshRecord{Family: famID, ClientID: fam.ClientID, Expires: now.Add(rtl)}, rtl); err != nil {
		return nil, errStore
	}
	return &tokenResponse{
		AccessToken: at, TokenType: "Bearer", ExpiresIn: int64(atl / time.Second),
		RefreshToken: rt, Scope: strings.Join(scopes, " "),
	}, nil
}

// sameScopes: a and b name the same scopes, in any order.
func sameScopes(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(s string) bool { return !slices.Contains(b, s) })
}

// pkceMatches checks an RFC 7636 verifier against an S256 challenge.
func pkceMatches(verifier, challenge string) bool {
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	for _, r := range verifier {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~", r)) {
			return false
		}
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// revokeFamily ends a sign-in: the family is written as revoked (kept as
// long as any of its tokens could live, and never re-created), and its
// upstream tokens are deleted. It returns an error (ErrUnavailable) when
// the revocation could not be stored: the sign-in may still be live.
func (p *Proxy) revokeFamily(ctx context.Context, famID, why string) error {
	if famID == "" {
		return nil
	}
	var fam family
	if err := p.get(ctx, key(kindFamily, famID), &fam); err != nil && !errors.Is(err, store.ErrNotFound) {
		p.logger.Error("revocation: family unreadable; revoking anyway", "error", err)
	}
	fam.Revoked = true
	if err := p.put(ctx, key(kindFamily, famID), fam, p.cfg.SessionTTL); err != nil {
		p.logger.Error("revocation not stored", "family", famID, "why", why, "error", err)
		return err
	}
	p.del(ctx, key(kindUpstream, famID))
	p.logger.Warn("oauth sign-in revoked", "family", famID, "client_id", fam.ClientID, "why", why)
	return nil
}

// serveRevoke is RFC 7009: a refresh token revokes its family, an access
// token is refused from then on. The answer is 200 whatever the token was.
func (p *Proxy) serveRevoke(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f, terr := readForm(w, r)
	if terr != nil {
		writeJSON(w, terr.status, oauthError{Error: terr.code, Description: terr.desc})
		return
	}
	clientID := f["client_id"]
	if u, _, ok := r.BasicAuth(); ok && clientID == "" {
		clientID, _ = url.QueryUnescape(u)
	}
	mine := func(owner string) bool { return clientID == "" || clientID == owner }
	tok := f["token"]
	var rec refreshRecord
	switch err := p.get(ctx, secretKey(kindRefresh, tok), &rec); {
	case err == nil && tok != "":
		if mine(rec.ClientID) {
			// RFC 7009 §2.2.1: a revocation that did not happen is no 200.
			if err := p.revokeFamily(ctx, rec.Family, "refresh token revoked by the client"); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, oauthError{Error: "temporarily_unavailable"})
				return
			}
		}
	case errors.Is(err, ErrUnavailable):
		writeJSON(w, http.StatusServiceUnavailable, oauthError{Error: "temporarily_unavailable"})
		return
	default:
		now := p.now()
		if c, err := p.keys.verify(tok, p.cfg.Issuer, p.cfg.Resource, now); err == nil && mine(c.ClientID) {
			ttl := time.Unix(c.Expiry, 0).Sub(now) + time.Minute
			if err := p.put(ctx, key(kindRevokedJTI, c.ID), used{Family: c.Session}, ttl); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, oauthError{Error: "temporarily_unavailable"})
				return
			}
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}
