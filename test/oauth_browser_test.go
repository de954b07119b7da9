package e2e

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// A user in a real browser: headless Chromium opens the authorization URL
// the Go SDK hands out, picks alice on the issuer's sign-in page, reads and
// approves the consent page, and is sent back to the client's loopback
// redirect URI, where a listener takes the code as a native app's does.
func TestBrowserApprovesTheConsentPage(t *testing.T) {
	b := startBrowser(t)
	iss := startIssuer(t)
	e := startOAuth(t, iss, nil)

	// The client's redirect listener.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	redirect := "http://" + ln.Addr().String() + "/callback"
	var once sync.Once
	arrived := make(chan struct{})
	var back *url.URL
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		once.Do(func() {
			u := *r.URL
			u.Scheme, u.Host = "http", ln.Addr().String()
			back = &u
			close(arrived)
		})
		_, _ = w.Write([]byte("You can close this window."))
	})}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	var consent string
	l := newGoLoginTo(t, redirect, func(ctx context.Context, authURL, _ string) (*url.URL, error) {
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		text, err := b.authorize(c, authURL, "alice", arrived)
		consent = text
		if err != nil {
			return nil, err
		}
		return back, nil
	})
	cs := l.connect(t, e.URL)
	if out := readCritical(t, cs); !strings.Contains(out, "alice@") {
		t.Fatalf("the tool ran for %s", out)
	}
	// The page the user approved named the client, where it returns, and
	// what it asks for.
	for _, want := range []string{"e2e-go", ln.Addr().String(), "read", "Approve"} {
		if !strings.Contains(consent, want) {
			t.Errorf("the consent page does not show %q:\n%s", want, consent)
		}
	}
	if got := l.results[0].Iss; got != e.Base {
		t.Fatalf("RFC 9207 iss %q", got)
	}
}
