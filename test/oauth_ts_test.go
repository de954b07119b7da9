package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tsLogin is oauth.mjs's report.
type tsLogin struct {
	Connect struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	} `json:"connect"`
	AuthorizationURLs     []string `json:"authorizationUrls"`
	StateMatches          bool     `json:"stateMatches"`
	Iss                   string   `json:"iss"`
	Issuer                string   `json:"issuer"`
	IssParameterSupported bool     `json:"issParameterSupported"`
	ClientID              string   `json:"clientId"`
	TokensSaved           int      `json:"tokensSaved"`
	Steps                 []struct {
		Op     string          `json:"op"`
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	} `json:"steps"`
	HTTPFailures []struct {
		Method string `json:"method"`
		URL    string `json:"url"`
		Status int    `json:"status"`
	} `json:"httpFailures"`
}

// runTSLogin runs oauth.mjs against endpoint, answering its authorization
// requests with the user agent.
func runTSLogin(t *testing.T, node, endpoint string, ua *userAgent, steps ...step) *tsLogin {
	t.Helper()
	const redirect = "http://127.0.0.1:49153/callback"
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(c, node, filepath.Join("ts", "oauth.mjs"))
	cmd.Dir = filepath.Join(repoRoot(), "test")
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if steps == nil {
		steps = []step{}
	}
	send := func(v any) {
		b, _ := json.Marshal(v)
		if _, err := stdin.Write(append(b, '\n')); err != nil {
			t.Errorf("oauth.mjs stdin: %v", err)
		}
	}
	send(map[string]any{"url": endpoint, "redirectUrl": redirect, "clientName": "e2e-ts", "timeoutMs": 15000, "steps": steps})
	var report *tsLogin
	var transcript []string
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		transcript = append(transcript, sc.Text())
		var msg struct {
			Authorize string   `json:"authorize"`
			Done      *tsLogin `json:"done"`
		}
		if err := json.Unmarshal(sc.Bytes(), &msg); err != nil {
			t.Errorf("oauth.mjs said %q: %v", sc.Text(), err)
			break
		}
		switch {
		case msg.Authorize != "":
			back, err := ua.authorize(c, msg.Authorize, redirect)
			if err != nil {
				t.Errorf("the user could not authorize: %v", err)
				back = &url.URL{Scheme: "http", Host: "127.0.0.1:49153", Path: "/callback", RawQuery: "error=user_agent_failed"}
			}
			send(map[string]string{"redirect": back.String()})
		case msg.Done != nil:
			report = msg.Done
		}
	}
	_ = stdin.Close()
	_, _ = io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if stderr.Len() > 0 {
		t.Logf("oauth.mjs stderr:\n%s", stderr.Bytes())
	}
	if errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("oauth.mjs timed out; it said %v", transcript)
	}
	if err != nil || report == nil {
		t.Fatalf("oauth.mjs: %v; it said %v", err, transcript)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("oauth.mjs said: %s", strings.Join(transcript, "\n"))
		}
	})
	return report
}

// The TypeScript SDK's OAuth client provider logs a user in through the
// façade as the Go SDK does (discovery, registration, authorize, consent,
// the Entra leg, callback, token), calls a tool, and refreshes when the
// server refuses its access token.
func TestTypeScriptLogsInThroughTheProxy(t *testing.T) {
	node := needTS(t)
	iss := startIssuer(t)
	e := startOAuth(t, iss, nil)
	ua := newUserAgent(t, "alice")
	call := step{"op": "callTool", "name": "read_critical_data", "arguments": map[string]any{"query": "q3"}}
	r := runTSLogin(t, node, e.URL, ua, call, step{"op": "expireAccessToken"}, call)

	if !r.Connect.OK {
		t.Fatalf("connect: %s", r.Connect.Error)
	}
	if len(r.AuthorizationURLs) != 1 {
		t.Fatalf("%d authorizations", len(r.AuthorizationURLs))
	}
	au, _ := url.Parse(r.AuthorizationURLs[0])
	q := au.Query()
	if au.Scheme+"://"+au.Host+au.Path != e.Base+"/authorize" || q.Get("code_challenge_method") != "S256" || q.Get("resource") != e.URL ||
		!contains(strings.Fields(q.Get("scope")), "read") || q.Get("client_id") != r.ClientID || r.ClientID == "" {
		t.Fatalf("authorization request %s (client %q)", r.AuthorizationURLs[0], r.ClientID)
	}
	if !r.StateMatches || !r.IssParameterSupported || r.Iss != e.Base || r.Issuer != e.Base {
		t.Fatalf("state matches %v; iss %q, issuer %q, advertised %v", r.StateMatches, r.Iss, r.Issuer, r.IssParameterSupported)
	}
	if shown := ua.consentText(); !strings.Contains(shown, "e2e-ts") || !strings.Contains(shown, "127.0.0.1:49153") {
		t.Errorf("consent page: %s", shown)
	}
	if len(r.Steps) != 3 {
		t.Fatalf("steps %+v", r.Steps)
	}
	for _, i := range []int{0, 2} {
		s := r.Steps[i]
		if !s.OK || !strings.Contains(string(s.Result), "alice@") || strings.Contains(string(s.Result), `"isError":true`) {
			t.Fatalf("step %d (%s): %s %s", i, s.Op, s.Error, s.Result)
		}
	}
	// The refused token, then the refresh: tokens saved twice, one 401.
	if r.TokensSaved != 2 {
		t.Fatalf("tokens saved %d times, want 2 (login, refresh)", r.TokensSaved)
	}
	unauthorized := 0
	for _, f := range r.HTTPFailures {
		if f.Status == 401 {
			unauthorized++
		}
	}
	if unauthorized != 2 { // before the login, and the expired token
		t.Fatalf("HTTP failures %+v", r.HTTPFailures)
	}
	if got := series(t, e, `mcpguard_oauth_proxy_tokens_total{result="resolved"}`); got < 2 {
		t.Fatalf("resolved proxy tokens %v", got)
	}
}
