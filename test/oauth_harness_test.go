package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/oauthproxy"
)

// The OAuth cases: mcpguard with its authorization server façade on
// (OAUTH_PROXY=true), the Entra-shaped issuer playing Entra's sign-in
// (authorize, token, a test user), and real clients doing what interactive
// MCP clients do: discover, register, send the user to authorize, redeem the
// code, call tools, refresh.

// apiSecret is the API application's secret at the issuer (AZURE_CLIENT_SECRET).
const apiSecret = "e2e-api-secret"

// Keys shared by the replicas of a test (`mcpguard keys generate` shapes).
const (
	testSigningKey = "ZTJlLXNpZ25pbmcta2V5LW9mLWF0LWxlYXN0LTMyLWJ5dGVz"
	testStorageKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
)

// oauthVars turns the façade on; more overrides them.
func oauthVars(more map[string]string) map[string]string {
	v := map[string]string{
		"OAUTH_PROXY":            "true",
		"AZURE_CLIENT_SECRET":    apiSecret,
		"JWT_SIGNING_KEY":        testSigningKey,
		"STORAGE_ENCRYPTION_KEY": testStorageKey,
		"STATELESS":              "true",
	}
	for k, val := range more {
		v[k] = val
	}
	return v
}

// startOAuth runs mcpguard with the façade on, and registers the API
// application at the issuer as an Entra admin would: its secret, and the
// façade's callback as redirect URI. alice (data_reader) may sign in.
func startOAuth(t testing.TB, iss *devidp.Issuer, vars map[string]string) *env {
	t.Helper()
	e := start(t, iss, oauthVars(vars))
	registerAPI(iss, e.Base)
	return e
}

// registerAPI registers the API application with the callbacks of the given
// public base URLs, and the test users.
func registerAPI(iss *devidp.Issuer, bases ...string) {
	var redirects []string
	for _, b := range bases {
		redirects = append(redirects, b+oauthproxy.PathCallback)
	}
	iss.RegisterClient(devidp.Client{ID: clientID, Secret: apiSecret, RedirectURIs: redirects})
	iss.AddUser(devidp.User{Name: "alice", Roles: []string{"data_reader"}})
	iss.AddUser(devidp.User{Name: "bob"})
}

// userAgent is the user's browser, reduced to what the flow asks of it:
// it follows redirects, keeps cookies, picks a user on the issuer's sign-in
// page and answers the consent page, until the browser is sent to the
// client's redirect URI, which it does not visit but returns.
type userAgent struct {
	client *http.Client
	// user is the test user picked on the issuer's sign-in page.
	user string
	// decision is the consent button pressed: approve (default) or deny.
	decision string

	mu sync.Mutex
	// consent is the text of the last consent page shown.
	consent string
	// visits are the URLs requested, in order.
	visits []string
}

func newUserAgent(t testing.TB, user string) *userAgent {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &userAgent{
		user: user,
		client: &http.Client{
			Jar:           jar,
			Timeout:       10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// maxHops bounds the pages and redirects of one authorization.
const maxHops = 12

// authorize runs the user's side of an authorization request, from its URL
// to the redirect back to redirectURI (returned, with code, state and iss).
func (ua *userAgent) authorize(ctx context.Context, authURL, redirectURI string) (*url.URL, error) {
	method, target, body := http.MethodGet, authURL, url.Values(nil)
	for range maxHops {
		if strings.HasPrefix(target, redirectURI+"?") || target == redirectURI {
			return url.Parse(target)
		}
		ua.mu.Lock()
		ua.visits = append(ua.visits, method+" "+target)
		ua.mu.Unlock()
		var rd io.Reader
		if body != nil {
			rd = strings.NewReader(body.Encode())
		}
		req, err := http.NewRequestWithContext(ctx, method, target, rd)
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			// What a browser says of a form posted from the page it came from.
			req.Header.Set("Origin", origin(target))
			req.Header.Set("Sec-Fetch-Site", "same-origin")
		}
		res, err := ua.client.Do(req)
		if err != nil {
			return nil, err
		}
		page, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		res.Body.Close()
		if err != nil {
			return nil, err
		}
		switch {
		case res.StatusCode >= 300 && res.StatusCode < 400:
			loc, err := res.Location()
			if err != nil {
				return nil, fmt.Errorf("%s: redirect without a location: %w", target, err)
			}
			method, target, body = http.MethodGet, loc.String(), nil
			continue
		case res.StatusCode != http.StatusOK:
			return nil, &pageError{status: res.StatusCode, url: target, text: pageText(page)}
		}
		f, err := ua.answer(page)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", target, err)
		}
		action := target
		if f.action != "" {
			base, _ := url.Parse(target)
			a, err := base.Parse(f.action)
			if err != nil {
				return nil, err
			}
			action = a.String()
		}
		method, target, body = http.MethodPost, action, f.values
	}
	return nil, fmt.Errorf("no redirect to %s within %d hops: %v", redirectURI, maxHops, ua.visits)
}

// pageError is a page the user agent could not go on from.
type pageError struct {
	status int
	url    string
	text   string
}

func (e *pageError) Error() string {
	return fmt.Sprintf("%s answered %d: %s", e.url, e.status, e.text)
}

// answer picks what to submit on a page: the issuer's user list, or the
// consent form.
func (ua *userAgent) answer(page []byte) (*form, error) {
	doc, err := html.Parse(strings.NewReader(string(page)))
	if err != nil {
		return nil, err
	}
	for _, f := range forms(doc) {
		if v, ok := f.buttons["decision"]; ok {
			ua.mu.Lock()
			ua.consent = pageText(page)
			ua.mu.Unlock()
			d := ua.decision
			if d == "" {
				d = "approve"
			}
			if !contains(v, d) {
				return nil, fmt.Errorf("the consent page offers %v, not %s", v, d)
			}
			f.values.Set("decision", d)
			return f, nil
		}
		if v, ok := f.buttons["user"]; ok {
			if !contains(v, ua.user) {
				return nil, fmt.Errorf("the sign-in page offers %v, not %s", v, ua.user)
			}
			f.values.Set("user", ua.user)
			return f, nil
		}
	}
	return nil, fmt.Errorf("a page with nothing to answer: %s", pageText(page))
}

func (ua *userAgent) consentText() string {
	ua.mu.Lock()
	defer ua.mu.Unlock()
	return ua.consent
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// origin is the scheme://host of a URL.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// form is a <form>: where it posts, its hidden fields, its submit buttons.
type form struct {
	action  string
	values  url.Values
	buttons map[string][]string
}

func forms(n *html.Node) []*form {
	var out []*form
	var cur *form
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			attr := func(k string) string {
				for _, a := range n.Attr {
					if a.Key == k {
						return a.Val
					}
				}
				return ""
			}
			switch n.Data {
			case "form":
				cur = &form{action: attr("action"), values: url.Values{}, buttons: map[string][]string{}}
				out = append(out, cur)
			case "input":
				if cur != nil && attr("type") == "hidden" && attr("name") != "" {
					cur.values.Set(attr("name"), attr("value"))
				}
			case "button":
				if cur != nil && attr("name") != "" && (attr("type") == "" || attr("type") == "submit") {
					cur.buttons[attr("name")] = append(cur.buttons[attr("name")], attr("value"))
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

// pageText is a page's visible text, spaces collapsed.
func pageText(page []byte) string {
	doc, err := html.Parse(strings.NewReader(string(page)))
	if err != nil {
		return string(page)
	}
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "style" || n.Data == "script" || n.Data == "title") {
			return
		}
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte(' ')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return strings.Join(strings.Fields(b.String()), " ")
}

// errNoCode: the redirect back to the client carried no code.
var errNoCode = errors.New("the authorization response carries no code")

// codeOf reads an authorization response: code, state and iss (RFC 9207),
// or its error.
func codeOf(u *url.URL) (code, state, iss string, err error) {
	q := u.Query()
	if e := q.Get("error"); e != "" {
		return "", q.Get("state"), q.Get("iss"), fmt.Errorf("authorization error %s: %s", e, q.Get("error_description"))
	}
	if q.Get("code") == "" {
		return "", "", "", errNoCode
	}
	return q.Get("code"), q.Get("state"), q.Get("iss"), nil
}
