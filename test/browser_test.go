package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// A headless Chromium (Debian's chromium package, installed by `make deps`)
// driven over the Chrome DevTools Protocol: a websocket carrying JSON
// commands. The handful this test needs (navigate, evaluate) are sent by
// hand on golang.org/x/net/websocket, already a dependency, rather than
// through chromedp, whose generated protocol bindings would be the largest
// dependency in go.mod for one test.

const browserEnv = "MCPGUARD_CHROMIUM"

// browser is one headless Chromium and the DevTools connection to its page.
type browser struct {
	ws      *websocket.Conn
	mu      sync.Mutex
	nextID  int
	pending map[int]chan cdpReply
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startBrowser starts Chromium on loopback with a profile of its own. Without
// chromium the test is skipped, loudly; with MCPGUARD_CHROMIUM=1 (make test)
// it fails.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv(browserEnv) == "1" {
			t.Fatalf("%s=1 but chromium is not installed (make deps installs Debian's chromium)", browserEnv)
		}
		t.Skip("SKIPPING the browser test: chromium is not installed; run `make deps` or `make test`")
	}
	dir := t.TempDir()
	args := []string{
		"--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--disable-default-apps", "--metrics-recording-only", "--password-store=basic",
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=http://127.0.0.1",
		"--user-data-dir=" + dir, "about:blank",
	}
	if os.Geteuid() == 0 {
		// Chromium refuses to run its sandbox as root (a container's user).
		args = append([]string{"--no-sandbox"}, args...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.WaitDelay = 5 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	// "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
	found := make(chan string, 1)
	var tail []string
	var tailMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`DevTools listening on (ws://127\.0\.0\.1:\d+)/`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
			tailMu.Lock()
			if len(tail) < 40 {
				tail = append(tail, sc.Text())
			}
			tailMu.Unlock()
		}
	}()
	var wsBase string
	select {
	case wsBase = <-found:
	case <-time.After(30 * time.Second):
		tailMu.Lock()
		defer tailMu.Unlock()
		t.Fatalf("chromium did not open DevTools within 30s:\n%s", strings.Join(tail, "\n"))
	}
	page, err := pageTarget("http" + strings.TrimPrefix(wsBase, "ws"))
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.Dial(page, "", "http://127.0.0.1")
	if err != nil {
		t.Fatalf("DevTools websocket %s: %v", page, err)
	}
	b := &browser{ws: ws, pending: map[int]chan cdpReply{}}
	t.Cleanup(func() { _ = ws.Close() })
	go b.read()
	return b
}

// pageTarget is the DevTools websocket of the browser's first page.
func pageTarget(httpBase string) (string, error) {
	var targets []struct {
		Type string `json:"type"`
		WS   string `json:"webSocketDebuggerUrl"`
	}
	for range 50 {
		res, err := http.Get(httpBase + "/json/list")
		if err == nil {
			err = json.NewDecoder(res.Body).Decode(&targets)
			res.Body.Close()
		}
		if err == nil {
			for _, tg := range targets {
				if tg.Type == "page" && tg.WS != "" {
					return tg.WS, nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", errors.New("chromium shows no page target")
}

// read delivers replies to their callers; events are dropped.
func (b *browser) read() {
	for {
		var raw []byte
		if err := websocket.Message.Receive(b.ws, &raw); err != nil {
			b.mu.Lock()
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		var msg struct {
			ID int `json:"id"`
			cdpReply
		}
		if json.Unmarshal(raw, &msg) != nil || msg.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.pending[msg.ID]
		delete(b.pending, msg.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- msg.cdpReply
		}
	}
}

// call sends one DevTools command and waits for its reply.
func (b *browser) call(ctx context.Context, method string, params, out any) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpReply, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return err
	}
	if err := websocket.Message.Send(b.ws, string(msg)); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: the DevTools connection closed", method)
		}
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// eval runs JavaScript in the page and decodes its (JSON) value into out.
func (b *browser) eval(ctx context.Context, expr string, out any) error {
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		Exception *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := b.call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r); err != nil {
		return err
	}
	if r.Exception != nil {
		return fmt.Errorf("javascript: %s", r.Exception.Text)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// pageState is what the browser shows: where it is, and what can be pressed.
type pageState struct {
	Href    string   `json:"href"`
	Ready   string   `json:"ready"`
	Consent bool     `json:"consent"`
	Users   []string `json:"users"`
	Text    string   `json:"text"`
}

const readPage = `(() => ({
  href: location.href,
  ready: document.readyState,
  consent: !!document.querySelector('form button[name=decision][value=approve]'),
  users: Array.from(document.querySelectorAll('form button[name=user]')).map(b => b.value),
  text: document.body ? document.body.innerText : ''
}))()`

// authorize opens authURL and plays the user until done is closed (the
// client's redirect URI was reached): it picks user on the issuer's sign-in
// page and presses Approve on the consent page, whose text it returns.
func (b *browser) authorize(ctx context.Context, authURL, user string, done <-chan struct{}) (string, error) {
	if err := b.call(ctx, "Page.navigate", map[string]any{"url": authURL}, nil); err != nil {
		return "", err
	}
	var consent, pressedOn string
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return consent, nil
		case <-ctx.Done():
			var p pageState
			_ = b.eval(context.Background(), readPage, &p)
			return consent, fmt.Errorf("the browser did not reach the client (at %s: %.300s): %w", p.Href, p.Text, ctx.Err())
		case <-tick.C:
		}
		var p pageState
		if err := b.eval(ctx, readPage, &p); err != nil || p.Ready != "complete" || p.Href == pressedOn {
			continue // navigating
		}
		switch {
		case p.Consent:
			consent = p.Text
			pressedOn = p.Href
			if err := b.eval(ctx, `document.querySelector('form button[name=decision][value=approve]').click()`, nil); err != nil {
				return consent, err
			}
		case contains(p.Users, user):
			pressedOn = p.Href
			js, _ := json.Marshal(user)
			if err := b.eval(ctx, `document.querySelector('form button[name=user][value=`+string(js)+`]').click()`, nil); err != nil {
				return consent, err
			}
		}
	}
}
