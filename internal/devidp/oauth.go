package devidp

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Client is an application registered for the authorization-code flow, as
// an Entra app registration is: a secret, redirect URIs, and the App ID URI
// its own scopes are named under.
type Client struct {
	ID           string
	Secret       string
	RedirectURIs []string
	// AppIDURI names the app's scopes (AppIDURI/read); "api://" + ID when
	// empty. A token for those scopes has aud = ID, as Entra v2 tokens do.
	AppIDURI string
}

// User is a test user who may sign in. The object id is ObjectIDFor(Name),
// so the development roles file and `mcpguard token --dev` agree with it.
type User struct {
	Name   string
	Roles  []string // app roles assigned to the user (the roles claim)
	Groups []string
	Email  string
}

// oauthState is the sign-in side of the issuer. It lives in memory: the
// development identity provider is one process.
type oauthState struct {
	mu         sync.Mutex
	clients    map[string]Client
	users      []User
	autoSignIn string
	now        func() time.Time
	lifetime   time.Duration
	codes      map[string]authCode
	refresh    map[string]grant
	requests   map[string]int
}

// grant is what a code or a refresh token stands for.
type grant struct {
	client   string
	user     string
	audience string
	scopes   []string // as requested: api://…/read, offline_access, …
}

type authCode struct {
	grant
	redirectURI string
	challenge   string
	expires     time.Time
}

// maxGrants bounds the codes and refresh tokens kept.
const maxGrants = 10000

// codeLifetime is Entra's: codes live about ten minutes.
const codeLifetime = 10 * time.Minute

func (o *oauthState) init() {
	if o.clients == nil {
		o.clients = map[string]Client{}
		o.codes = map[string]authCode{}
		o.refresh = map[string]grant{}
		o.requests = map[string]int{}
	}
}

func (o *oauthState) clock() time.Time {
	if o.now != nil {
		return o.now()
	}
	return time.Now()
}

// RegisterClient registers (or replaces) an application.
func (i *Issuer) RegisterClient(c Client) {
	if c.AppIDURI == "" {
		c.AppIDURI = "api://" + c.ID
	}
	o := &i.oauth
	o.mu.Lock()
	defer o.mu.Unlock()
	o.init()
	o.clients[c.ID] = c
}

// AddUser adds (or replaces) a test user.
func (i *Issuer) AddUser(u User) {
	o := &i.oauth
	o.mu.Lock()
	defer o.mu.Unlock()
	o.users = slices.DeleteFunc(o.users, func(x User) bool { return x.Name == u.Name })
	o.users = append(o.users, u)
}

// SetAutoSignIn makes /authorize sign this user in without showing the form
// (tests); "" shows the form again. A login_hint naming a user wins.
func (i *Issuer) SetAutoSignIn(name string) {
	i.oauth.mu.Lock()
	defer i.oauth.mu.Unlock()
	i.oauth.autoSignIn = name
}

// SetClock makes codes, refresh and the tokens the flow mints read now, so
// that tests move time instead of sleeping.
func (i *Issuer) SetClock(now func() time.Time) {
	i.oauth.mu.Lock()
	defer i.oauth.mu.Unlock()
	i.oauth.now = now
}

// SetTokenLifetime sets the lifetime of access tokens the flow issues
// (default one hour).
func (i *Issuer) SetTokenLifetime(d time.Duration) {
	i.oauth.mu.Lock()
	defer i.oauth.mu.Unlock()
	i.oauth.lifetime = d
}

// TokenRequests is how many token requests of a grant type succeeded.
func (i *Issuer) TokenRequests(grantType string) int {
	i.oauth.mu.Lock()
	defer i.oauth.mu.Unlock()
	return i.oauth.requests[grantType]
}

// RevokeUser invalidates every refresh token of a user, as an administrator
// revoking sessions in Entra does.
func (i *Issuer) RevokeUser(name string) {
	o := &i.oauth
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, g := range o.refresh {
		if g.user == name {
			delete(o.refresh, k)
		}
	}
}

// oidcScopes carry no resource.
var oidcScopes = []string{"openid", "profile", "email", "offline_access"}

// resourceOf finds the app whose App ID URI the request's scopes are named
// under; every resource scope must name the same one.
func (o *oauthState) resourceOf(scopes []string) (Client, []string, bool) {
	var app Client
	var short []string
	for _, s := range scopes {
		if slices.Contains(oidcScopes, s) {
			continue
		}
		cut := strings.LastIndex(s, "/")
		if cut <= 0 {
			return Client{}, nil, false
		}
		var found bool
		for _, c := range o.clients {
			if c.AppIDURI == s[:cut] {
				if app.ID != "" && app.ID != c.ID {
					return Client{}, nil, false // AADSTS28000: scopes of two resources
				}
				app, found = c, true
			}
		}
		if !found {
			return Client{}, nil, false
		}
		short = append(short, s[cut+1:])
	}
	return app, short, app.ID != ""
}

func (o *oauthState) user(name string) (User, bool) {
	name = strings.TrimSuffix(name, "@dev.mcpguard.test")
	for _, u := range o.users {
		if u.Name == name {
			return u, true
		}
	}
	return User{}, false
}

// serveAuthorize is Entra's authorization endpoint: the client and its
// redirect URI are checked before anything is redirected; the user is the
// login_hint, the auto sign-in user, or one picked on a form.
func (i *Issuer) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "AADSTS900144: malformed request", http.StatusBadRequest)
		return
	}
	q := r.Form
	o := &i.oauth
	o.mu.Lock()
	o.init()
	c, ok := o.clients[q.Get("client_id")]
	o.mu.Unlock()
	if !ok {
		http.Error(w, "AADSTS700016: Application with identifier '"+q.Get("client_id")+"' was not found in the directory.", http.StatusBadRequest)
		return
	}
	redirectURI := q.Get("redirect_uri")
	if !slices.Contains(c.RedirectURIs, redirectURI) {
		http.Error(w, "AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.", http.StatusBadRequest)
		return
	}
	back := func(params url.Values) {
		u, _ := url.Parse(redirectURI)
		v := u.Query()
		for k, vs := range params {
			v[k] = vs
		}
		if st := q.Get("state"); st != "" {
			v.Set("state", st)
		}
		u.RawQuery = v.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	fail := func(code, desc string) { back(url.Values{"error": {code}, "error_description": {desc}}) }
	scopes := strings.Fields(q.Get("scope"))
	switch {
	case q.Has("resource"):
		// What Entra v2 does with the RFC 8707 parameter MCP clients send.
		fail("invalid_target", "AADSTS9010010: The resource parameter provided in the request doesn't match with the requested scopes.")
		return
	case q.Get("response_type") != "code":
		fail("unsupported_response_type", "AADSTS700054: response_type 'code' is required.")
		return
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		fail("invalid_request", "AADSTS9002325: Proof Key for Code Exchange (S256) is required.")
		return
	}
	o.mu.Lock()
	app, _, ok := o.resourceOf(scopes)
	auto := o.autoSignIn
	var who User
	var known bool
	switch {
	case r.Method == http.MethodPost && q.Get("user") != "":
		who, known = o.user(q.Get("user"))
	case q.Get("login_hint") != "":
		who, known = o.user(q.Get("login_hint"))
	case auto != "":
		who, known = o.user(auto)
	}
	users := slices.Clone(o.users)
	o.mu.Unlock()
	if !ok {
		fail("invalid_scope", "AADSTS500011: The resource principal named in the scopes was not found.")
		return
	}
	if !known {
		i.signInForm(w, r, q, users)
		return
	}
	code := randomString()
	o.mu.Lock()
	now := o.clock()
	prune(o.codes, now)
	o.codes[code] = authCode{
		grant:       grant{client: c.ID, user: who.Name, audience: app.ID, scopes: scopes},
		redirectURI: redirectURI, challenge: q.Get("code_challenge"), expires: now.Add(codeLifetime),
	}
	o.mu.Unlock()
	back(url.Values{"code": {code}})
}

func prune(codes map[string]authCode, now time.Time) {
	if len(codes) < maxGrants {
		return
	}
	for k, c := range codes {
		if !now.Before(c.expires) || len(codes) >= maxGrants {
			delete(codes, k)
		}
	}
}

var signInPage = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Development sign-in</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto}button{display:block;margin:.5rem 0;font-size:1rem;padding:.4rem 1rem}</style>
</head><body><h1>Development identity provider</h1>
<p>Not a real sign-in: pick a test user.</p>
<form method="post">{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
{{range .Users}}<button type="submit" name="user" value="{{.Name}}">{{.Name}}{{if .Roles}} ({{range $i, $r := .Roles}}{{if $i}}, {{end}}{{$r}}{{end}}){{end}}</button>{{end}}
</form>{{if not .Users}}<p>No test users are configured.</p>{{end}}</body></html>`))

func (i *Issuer) signInForm(w http.ResponseWriter, _ *http.Request, q url.Values, users []User) {
	params := map[string]string{}
	for k := range q {
		if k != "user" {
			params[k] = q.Get(k)
		}
	}
	var buf bytes.Buffer
	if err := signInPage.Execute(&buf, map[string]any{"Params": params, "Users": users}); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Frame-Options", "DENY")
	_, _ = w.Write(buf.Bytes())
}

// tokenError is Entra's error body (error, error_description with an AADSTS code).
func tokenError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": code, "error_description": desc})
}

// serveToken is Entra's token endpoint for confidential clients:
// authorization_code (PKCE S256) and refresh_token. Refresh tokens are not
// single-use, as Entra's are not.
func (i *Issuer) serveToken(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed request")
		return
	}
	f := r.PostForm
	id, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, _ = url.QueryUnescape(u)
		secret, _ = url.QueryUnescape(p)
	}
	o := &i.oauth
	o.mu.Lock()
	o.init()
	c, ok := o.clients[id]
	o.mu.Unlock()
	if !ok || c.Secret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(c.Secret)) != 1 {
		tokenError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
		return
	}
	if f.Has("resource") {
		tokenError(w, http.StatusBadRequest, "invalid_target", "AADSTS9010010: The resource parameter provided in the request doesn't match with the requested scopes.")
		return
	}
	var g grant
	o.mu.Lock()
	now := o.clock()
	switch f.Get("grant_type") {
	case "authorization_code":
		code, found := o.codes[f.Get("code")]
		delete(o.codes, f.Get("code"))
		sum := sha256.Sum256([]byte(f.Get("code_verifier")))
		switch {
		case !found || !now.Before(code.expires):
			o.mu.Unlock()
			tokenError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70008: The provided authorization code or refresh token has expired or was already used.")
			return
		case code.client != c.ID || code.redirectURI != f.Get("redirect_uri"):
			o.mu.Unlock()
			tokenError(w, http.StatusBadRequest, "invalid_grant", "AADSTS50148: The code was issued to another client or redirect URI.")
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != code.challenge:
			o.mu.Unlock()
			tokenError(w, http.StatusBadRequest, "invalid_grant", "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.")
			return
		}
		g = code.grant
	case "refresh_token":
		old, found := o.refresh[f.Get("refresh_token")]
		if !found || old.client != c.ID {
			o.mu.Unlock()
			tokenError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70008: The provided authorization code or refresh token has expired or was already used.")
			return
		}
		g = old
		if asked := strings.Fields(f.Get("scope")); len(asked) > 0 {
			for _, s := range asked {
				if !slices.Contains(old.scopes, s) {
					o.mu.Unlock()
					tokenError(w, http.StatusBadRequest, "invalid_scope", "AADSTS65001: The scope "+s+" was not granted.")
					return
				}
			}
			g.scopes = asked
		}
	default:
		o.mu.Unlock()
		tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: unsupported grant type")
		return
	}
	u, known := o.user(g.user)
	_, short, _ := o.resourceOf(g.scopes)
	life := o.lifetime
	if life == 0 {
		life = time.Hour
	}
	var refresh string
	if slices.Contains(g.scopes, "offline_access") {
		refresh = randomString()
		if len(o.refresh) >= maxGrants {
			for k := range o.refresh {
				delete(o.refresh, k)
				break
			}
		}
		o.refresh[refresh] = g
	}
	o.requests[f.Get("grant_type")]++
	o.mu.Unlock()
	if !known {
		tokenError(w, http.StatusBadRequest, "invalid_grant", "AADSTS50034: The user account does not exist in the directory.")
		return
	}
	at, err := i.Mint(Token{
		Audience: g.audience, User: u.Name, ClientAppID: c.ID, Scopes: short, Roles: u.Roles, Groups: u.Groups,
		Email: u.Email, Lifetime: life, IssuedAt: now,
	})
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "server_error", "token not signed")
		return
	}
	granted := slices.DeleteFunc(slices.Clone(g.scopes), func(s string) bool { return slices.Contains(oidcScopes, s) })
	body := map[string]any{
		"token_type": "Bearer", "scope": strings.Join(granted, " "),
		"expires_in": int(life / time.Second), "ext_expires_in": int(life / time.Second), "access_token": at,
	}
	if refresh != "" {
		body["refresh_token"] = refresh
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(body)
}

func randomString() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
