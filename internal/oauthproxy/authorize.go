package oauthproxy

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

//go:embed consent.html
var consentHTML string

var consentPage = template.Must(template.New("consent").Parse(consentHTML))

type pageData struct {
	Server  string
	Message string

	ClientName, ClientID, ClientHost string
	Document                         bool
	RedirectHost, RedirectURI        string
	Scopes                           []string
	Action, ID, CSRF                 string
}

// render fills the consent template: a message page, or the consent form.
// Nothing on it may be framed or cached.
func (p *Proxy) render(w http.ResponseWriter, status int, d pageData) {
	d.Server = p.cfg.ServerName
	var buf bytes.Buffer
	if err := consentPage.Execute(&buf, d); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// page shows an error to the user, never redirecting: used wherever the
// redirect URI is not (yet) known to be the client's.
func (p *Proxy) page(w http.ResponseWriter, status int, msg string) {
	p.render(w, status, pageData{Message: msg})
}

// singleValues flattens a query or form, refusing a parameter given twice
// (RFC 6749 §3.1: parameters MUST NOT be included more than once).
func singleValues(v url.Values) (map[string]string, error) {
	out := make(map[string]string, len(v))
	for k, vs := range v {
		if len(vs) != 1 {
			return nil, fmt.Errorf("parameter %q is repeated", k)
		}
		out[k] = vs[0]
	}
	return out, nil
}

// ignoredScopes are OpenID scopes some clients add; the proxy issues no ID
// tokens and drops them rather than failing the client.
var ignoredScopes = []string{"openid", "profile", "email", scopeOffline}

// parseScopes reads a scope parameter into short names the proxy offers;
// none asked means all of them.
func (p *Proxy) parseScopes(raw string) ([]string, error) {
	var out []string
	for _, s := range strings.Fields(raw) {
		if slices.Contains(ignoredScopes, s) {
			continue
		}
		short := strings.TrimPrefix(s, p.cfg.Upstream.ScopePrefix)
		if !slices.Contains(p.cfg.Scopes, short) {
			return nil, fmt.Errorf("scope %q is not offered", s)
		}
		if !slices.Contains(out, short) {
			out = append(out, short)
		}
	}
	if len(out) == 0 {
		out = slices.Clone(p.cfg.Scopes)
	}
	return out, nil
}

// sameResource compares an RFC 8707 resource with this server's, a trailing
// slash aside.
func (p *Proxy) sameResource(r string) bool {
	return strings.TrimSuffix(r, "/") == strings.TrimSuffix(p.cfg.Resource, "/")
}

// validChallenge: an S256 challenge is the base64url SHA-256, 43 characters.
func validChallenge(c string) bool {
	if len(c) != 43 {
		return false
	}
	for _, r := range c {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// redirectClient sends the browser back to a redirect URI already checked
// against the client, with RFC 9207's iss in every response.
func (p *Proxy) redirectClient(w http.ResponseWriter, r *http.Request, redirectURI string, params url.Values, status int) {
	u, err := url.Parse(redirectURI)
	if err != nil { // checked before; never here
		p.page(w, http.StatusBadRequest, "The application's redirect address is invalid.")
		return
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	q.Set("iss", p.cfg.Issuer)
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.String(), status)
}

func errorParams(code, desc, state string) url.Values {
	v := url.Values{"error": {code}}
	if desc != "" {
		v.Set("error_description", desc)
	}
	if state != "" {
		v.Set("state", state)
	}
	return v
}

// serveAuthorize checks an authorization request and shows the consent page.
// Until the client and its redirect URI are known good, errors are shown
// here and never redirected (no open redirect); after, they go back to the
// client as RFC 6749 §4.1.2.1 says.
func (p *Proxy) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if p.limited(w, r, true) {
		return
	}
	q, err := singleValues(r.URL.Query())
	if err != nil {
		p.refuse(ctx, "invalid_request", err.Error())
		p.page(w, http.StatusBadRequest, "This sign-in request is malformed: "+err.Error()+".")
		return
	}
	c, reason, err := p.lookupClient(ctx, q["client_id"])
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			p.logger.Error("authorize: client lookup", "error", err)
			p.page(w, http.StatusServiceUnavailable, "The sign-in service is unavailable; try again shortly.")
			return
		}
		p.refuse(ctx, reason, err.Error(), "client_id", q["client_id"])
		p.page(w, http.StatusBadRequest, "This application is not known here (unregistered client, or its metadata document could not be used).")
		return
	}
	redirectURI := q["redirect_uri"]
	if !c.allowsRedirect(redirectURI) {
		p.refuse(ctx, "redirect_uri", "redirect_uri is not one of the client's", "client_id", c.ID, "redirect_uri", redirectURI)
		p.page(w, http.StatusBadRequest, "The address this request would return to is not registered for the application.")
		return
	}
	state := q["state"]
	fail := func(code, reason, desc string) {
		p.refuse(ctx, reason, desc, "client_id", c.ID)
		p.redirectClient(w, r, redirectURI, errorParams(code, desc, state), http.StatusFound)
	}
	switch {
	case q["response_type"] != "code":
		fail("unsupported_response_type", "invalid_request", "response_type must be code")
		return
	case q["response_mode"] != "" && q["response_mode"] != "query":
		fail("invalid_request", "invalid_request", "response_mode must be query")
		return
	case state == "":
		fail("invalid_request", "state_missing", "state is required")
		return
	case len(state) > 1024 || len(q["scope"]) > 1024:
		// Both are stored with the pending authorization; clients send tens of bytes.
		state = ""
		fail("invalid_request", "invalid_request", "state or scope is longer than 1024 bytes")
		return
	case q["code_challenge_method"] != "S256":
		fail("invalid_request", "pkce_method", "PKCE with code_challenge_method=S256 is required")
		return
	case !validChallenge(q["code_challenge"]):
		fail("invalid_request", "pkce_method", "code_challenge is not an S256 challenge")
		return
	case q["resource"] != "" && !p.sameResource(q["resource"]):
		fail("invalid_target", "resource", "resource is not this server's MCP endpoint")
		return
	}
	scopes, err := p.parseScopes(q["scope"])
	if err != nil {
		fail("invalid_scope", "scope", err.Error())
		return
	}
	id, csrf, browser := newSecret(), newSecret(), newSecret()
	pend := pending{
		ClientID: c.ID, RedirectURI: redirectURI, State: state, CodeChallenge: q["code_challenge"], Scopes: scopes,
		CSRF: digest(csrf), Browser: digest(browser), Cookie: "mcpguard_auth_" + digest(id)[:16],
		Expires: p.now().Add(p.cfg.ConsentTTL),
	}
	if err := p.put(ctx, secretKey(kindPending, id), pend, p.cfg.ConsentTTL); err != nil {
		p.logger.Error("authorize: pending authorization not stored", "error", err)
		p.page(w, http.StatusServiceUnavailable, "The sign-in service is unavailable; try again shortly.")
		return
	}
	if !c.Document { // a registration in use stays registered
		if err := p.put(ctx, key(kindClient, c.ID), c, p.cfg.ClientTTL); err != nil {
			p.logger.Warn("authorize: client registration not renewed", "client_id", c.ID, "error", err)
		}
	}
	p.setCookie(w, pend.Cookie, browser, p.cfg.ConsentTTL)
	ru, _ := url.Parse(redirectURI)
	clientHost := ""
	if cu, err := url.Parse(c.ID); err == nil && c.Document {
		clientHost = cu.Host
	}
	shown := slices.Clone(scopes)
	shown = append(shown, "offline_access (stay signed in)")
	p.render(w, http.StatusOK, pageData{
		ClientName: c.Name, ClientID: c.ID, ClientHost: clientHost, Document: c.Document,
		RedirectHost: ru.Host, RedirectURI: redirectURI, Scopes: shown,
		Action: p.cfg.Issuer + PathConsent, ID: id, CSRF: csrf,
	})
}

// setCookie binds a flow to the browser: HttpOnly, SameSite=Lax (sent on
// the top-level redirect back from Entra, never on a cross-site POST),
// Secure when the issuer is https. A zero lifetime deletes it.
func (p *Proxy) setCookie(w http.ResponseWriter, name, value string, ttl time.Duration) {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode}
	if ttl > 0 {
		c.MaxAge = int(ttl / time.Second)
	} else {
		c.MaxAge = -1
	}
	http.SetCookie(w, c)
}

// serveConsent takes the user's answer. It continues only with the form
// token of the pending authorization and the cookie of the browser that
// was shown it, once.
func (p *Proxy) serveConsent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		p.refuse(ctx, "invalid_request", "consent form unreadable")
		p.page(w, http.StatusBadRequest, "This consent form is malformed.")
		return
	}
	f, err := singleValues(r.PostForm)
	if err != nil {
		p.refuse(ctx, "invalid_request", err.Error())
		p.page(w, http.StatusBadRequest, "This consent form is malformed.")
		return
	}
	id := f["id"]
	var pend pending
	if err := p.get(ctx, secretKey(kindPending, id), &pend); err != nil || id == "" || !p.now().Before(pend.Expires) {
		if errors.Is(err, ErrUnavailable) {
			p.page(w, http.StatusServiceUnavailable, "The sign-in service is unavailable; try again shortly.")
			return
		}
		p.refuse(ctx, "consent_unknown", "no such pending authorization, or it expired")
		p.page(w, http.StatusBadRequest, "This sign-in request expired or is unknown. Start again from your application.")
		return
	}
	cookie, err := r.Cookie(pend.Cookie)
	if err != nil || !sameDigest(cookie.Value, pend.Browser) || !sameDigest(f["csrf"], pend.CSRF) {
		p.refuse(ctx, "csrf", "consent without the form token and cookie of its browser", "client_id", pend.ClientID)
		p.page(w, http.StatusForbidden, "This approval did not come from the page this server showed you, and was refused.")
		return
	}
	won, err := p.claim(ctx, secretKey(kindPendingUsed, id), used{}, p.cfg.ConsentTTL)
	if err != nil || !won {
		if err == nil {
			p.refuse(ctx, "consent_replay", "consent answered twice", "client_id", pend.ClientID)
		}
		p.page(w, http.StatusBadRequest, "This sign-in request was already answered.")
		return
	}
	// The claim, not a delete, spends the pending authorization: it holds
	// across replicas answering at the same moment. The record expires.
	if f["decision"] != "approve" {
		p.setCookie(w, pend.Cookie, "", 0)
		p.logger.Info("oauth consent denied", "client_id", pend.ClientID)
		p.redirectClient(w, r, pend.RedirectURI, errorParams("access_denied", "the user denied the request", pend.State), http.StatusSeeOther)
		return
	}
	state, verifier := newSecret(), oauth2.GenerateVerifier()
	up := upState{pending: pend, Verifier: verifier}
	up.Expires = p.now().Add(p.cfg.ConsentTTL)
	if err := p.put(ctx, secretKey(kindUpState, state), up, p.cfg.ConsentTTL); err != nil {
		p.logger.Error("consent: upstream state not stored", "error", err)
		p.page(w, http.StatusServiceUnavailable, "The sign-in service is unavailable; try again shortly.")
		return
	}
	cfg := *p.oauth
	cfg.Scopes = p.upstreamScopes(pend.Scopes)
	// No resource parameter: Entra refuses it (AADSTS9010010); the audience
	// comes from the scopes.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), http.StatusSeeOther)
}

// upstreamScopes maps the proxy's scopes to Entra's (api://…/read), with
// offline_access so that the proxy can refresh upstream.
func (p *Proxy) upstreamScopes(scopes []string) []string {
	out := make([]string, 0, len(scopes)+1)
	for _, s := range scopes {
		out = append(out, p.cfg.Upstream.ScopePrefix+s)
	}
	return append(out, scopeOffline)
}

// serveCallback is where Entra returns the browser. The state must be one
// this proxy made, unused, for this browser; then the proxy redeems Entra's
// code with its own verifier, keeps the upstream tokens (sealed), and gives
// the client a code of its own.
func (p *Proxy) serveCallback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q, err := singleValues(r.URL.Query())
	if err != nil {
		p.refuse(ctx, "invalid_request", err.Error())
		p.page(w, http.StatusBadRequest, "This sign-in response is malformed.")
		return
	}
	state := q["state"]
	var up upState
	if err := p.get(ctx, secretKey(kindUpState, state), &up); err != nil || state == "" || !p.now().Before(up.Expires) {
		if errors.Is(err, ErrUnavailable) {
			p.page(w, http.StatusServiceUnavailable, "The sign-in service is unavailable; try again shortly.")
			return
		}
		p.refuse(ctx, "state", "callback state unknown, tampered with or expired")
		p.page(w, http.StatusBadRequest, "This sign-in response does not belong to a sign-in started here, or it expired.")
		return
	}
	if cookie, err := r.Cookie(up.Cookie); err != nil || !sameDigest(cookie.Value, up.Browser) {
		p.refuse(ctx, "state_browser", "callback from a browser that did not start the sign-in", "client_id", up.ClientID)
		p.page(w, http.StatusForbidden, "This sign-in response reached a different browser from the one that started it, and was refused.")
		return
	}
	won, err := p.claim(ctx, secretKey(kindUpStateUsed, state), used{}, p.cfg.ConsentTTL)
	if err != nil || !won {
		if err == nil {
			p.refuse(ctx, "state_replay", "callback replayed", "client_id", up.ClientID)
		}
		p.page(w, http.StatusBadRequest, "This sign-in response was already used.")
		return
	}
	p.setCookie(w, up.Cookie, "", 0)
	back := func(code, desc string) {
		p.redirectClient(w, r, up.RedirectURI, errorParams(code, desc, up.State), http.StatusFound)
	}
	if e := q["error"]; e != "" {
		p.refuse(ctx, "upstream_error", "the identity provider returned an error", "client_id", up.ClientID, "upstream_error", e)
		code := "access_denied"
		if e == "temporarily_unavailable" || e == "server_error" {
			code = "temporarily_unavailable"
		}
		back(code, "the identity provider did not sign the user in")
		return
	}
	if q["code"] == "" {
		p.refuse(ctx, "upstream_error", "callback without a code", "client_id", up.ClientID)
		back("server_error", "the identity provider returned no code")
		return
	}
	tok, err := p.oauth.Exchange(context.WithValue(ctx, oauth2.HTTPClient, p.upstream), q["code"], oauth2.VerifierOption(up.Verifier))
	if err != nil || tok.AccessToken == "" {
		p.refuse(ctx, "upstream_exchange", "the identity provider refused the code", "client_id", up.ClientID, "error", errString(err))
		back("server_error", "the sign-in could not be completed")
		return
	}
	fam := newSecret()
	now := p.now()
	ut := upstreamTokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expires: upstreamExpiry(now, tok)}
	// Kept only as long as the code: the code's redemption extends it to the
	// sign-in's lifetime.
	if err := p.put(ctx, key(kindUpstream, fam), ut, p.cfg.CodeTTL+time.Minute); err != nil {
		p.logger.Error("callback: upstream tokens not stored", "error", err)
		back("temporarily_unavailable", "the sign-in could not be stored")
		return
	}
	code := newSecret()
	rec := codeRecord{
		ClientID: up.ClientID, RedirectURI: up.RedirectURI, CodeChallenge: up.CodeChallenge, Scopes: up.Scopes,
		Family: fam, Expires: now.Add(p.cfg.CodeTTL),
	}
	if err := p.put(ctx, secretKey(kindCode, code), rec, p.cfg.CodeTTL); err != nil {
		p.logger.Error("callback: code not stored", "error", err)
		back("temporarily_unavailable", "the sign-in could not be stored")
		return
	}
	p.logger.Info("oauth sign-in completed upstream", "client_id", up.ClientID, "scopes", up.Scopes)
	p.redirectClient(w, r, up.RedirectURI, url.Values{"code": {code}, "state": {up.State}}, http.StatusFound)
}

// upstreamExpiry reads expires_in against the proxy's clock (oauth2's
// Expiry is computed from the wall clock).
func upstreamExpiry(now time.Time, tok *oauth2.Token) time.Time {
	if tok.ExpiresIn > 0 {
		return now.Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	if !tok.Expiry.IsZero() {
		return tok.Expiry
	}
	return now.Add(time.Hour)
}

// errString describes an upstream error without its response body.
func errString(err error) string {
	var re *oauth2.RetrieveError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &re) && re.Response != nil:
		return fmt.Sprintf("status %d: %s %s", re.Response.StatusCode, re.ErrorCode, re.ErrorDescription)
	case errors.As(err, &re):
		return re.ErrorCode + " " + re.ErrorDescription
	}
	return err.Error()
}
