package e2e

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// makeRunSettings reads the settings the Makefile's run target gives the
// server, so that this test runs what `make run` runs.
func makeRunSettings(t *testing.T) []string {
	t.Helper()
	mk, err := os.ReadFile(filepath.Join(repoRoot(), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^run:.*\n\t(.*)\$\(GO\) run ./cmd/mcpguard serve`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("no run target serving cmd/mcpguard in the Makefile")
	}
	return strings.Fields(string(m[1]))
}

// freePort is a loopback port free a moment ago (the binary must be told
// its ports; another process may take one first, a rare failure).
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// `make run` shows it: the binary with the run target's settings (dev
// identity provider, OAuth proxy) and nothing else lets an interactive
// client log in, with no cloud account: the user picks alice on the dev
// identity provider's sign-in page, and alice's roles apply.
func TestMakeRunLogsInInteractiveClients(t *testing.T) {
	settings := makeRunSettings(t)
	if !contains(settings, "OAUTH_PROXY=true") || !contains(settings, "DEV_IDP=true") {
		t.Fatalf("make run does not serve the OAuth proxy with the dev identity provider: %v", settings)
	}
	bin := buildBinary(t)
	port, idp := freePort(t), freePort(t)
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "serve")
	cmd.Dir = repoRoot()
	cmd.Env = append(os.Environ(), settings...)
	cmd.Env = append(cmd.Env, "PORT="+strconv.Itoa(port), "DEV_IDP_ADDR=127.0.0.1:"+strconv.Itoa(idp),
		"DEV_IDP_KEY_FILE="+filepath.Join(t.TempDir(), "key.pem"), "METRICS_ADDR=off", "ENV_FILE=/nonexistent", "LOG_LEVEL=warn")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	ready := false
	for range 100 {
		if res, err := http.Get(base + "/healthz"); err == nil {
			res.Body.Close()
			ready = res.StatusCode == http.StatusOK
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ready {
		t.Fatalf("the server did not answer within 10s:\n%s", logs.String())
	}

	ua := newUserAgent(t, "alice") // no auto sign-in: the sign-in page is answered
	l := newGoLogin(t, ua.authorize)
	cs := l.connect(t, base+"/mcp")
	if out := readCritical(t, cs); !strings.Contains(out, "alice@") {
		t.Fatalf("the tool ran for %s", out)
	}
	// alice's roles from the development roles file: no budget approvals.
	_, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "approve_budget", Arguments: map[string]any{"department": "it", "amount": 1}})
	denial(t, err)
	var signIn bool
	for _, v := range ua.visits {
		signIn = signIn || strings.Contains(v, "POST http://127.0.0.1:"+strconv.Itoa(idp)+"/")
	}
	if !signIn {
		t.Fatalf("the user never signed in at the dev identity provider: %v", ua.visits)
	}
}
