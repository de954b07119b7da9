package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/server"
)

// TestStdioBadTokenDenied: a stdio caller whose STDIO_ACCESS_TOKEN does not
// verify is anonymous, and every request it makes is answered with the
// policy's denial (CodeAccessDenied) by a server that keeps running, and
// exits cleanly when its input ends. A crash, an internal error or silence
// are not a denial: TestStdioTransport's "bad token" case only sees that
// connecting fails, which a crashed server also does.
func TestStdioBadTokenDenied(t *testing.T) {
	iss := startIssuer(t)
	bin := buildBinary(t)
	base := devidp.Token{Audience: clientID, User: "alice", Roles: []string{"data_reader"}, Scopes: []string{"read"}}
	expiredTok := base
	expiredTok.IssuedAt, expiredTok.Lifetime = time.Now().Add(-3*time.Hour), time.Hour
	expired, err := iss.Mint(expiredTok)
	if err != nil {
		t.Fatal(err)
	}
	key, err := devidp.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := devidp.New(iss.Authority, tenantID, key)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := stranger.Mint(base)
	if err != nil {
		t.Fatal(err)
	}

	for name, token := range map[string]string{"garbage": "garbage", "expired": expired, "another issuer's key": foreign} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve")
			cmd.Dir = repoRoot()
			cmd.Env = append(os.Environ(), "TRANSPORT=stdio", "LOG_LEVEL=warn", "ENV_FILE=/nonexistent", "DENIAL_DETAIL=true", noListeners,
				"AZURE_AUTHORITY_HOST="+iss.Authority, "AZURE_TENANT_ID="+tenantID, "AZURE_CLIENT_ID="+clientID,
				"AZURE_REQUIRED_SCOPES=read", "ROLE_SOURCE=token", "STDIO_ACCESS_TOKEN="+token)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan []byte)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stdout)
				sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
				for sc.Scan() {
					lines <- append([]byte(nil), sc.Bytes()...)
				}
			}()
			fail := func(format string, args ...any) {
				t.Helper()
				_ = stdin.Close()
				cancel()
				_ = cmd.Wait()
				t.Fatalf("%s\nserver log:\n%s", fmt.Sprintf(format, args...), stderr.String())
			}
			// Two requests: the server must answer the second after denying the first.
			for id, req := range []string{
				`"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"stdio-bad-token","version":"1"}}`,
				`"method":"ping"`,
			} {
				if _, err := io.WriteString(stdin, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,%s}`+"\n", id+1, req)); err != nil {
					fail("request %d not sent (server gone?): %v", id+1, err)
				}
				var line []byte
				select {
				case l, ok := <-lines:
					if !ok {
						fail("request %d: the server closed its output instead of answering", id+1)
					}
					line = l
				case <-ctx.Done():
					fail("request %d: no answer", id+1)
				}
				var res struct {
					ID    int `json:"id"`
					Error *struct {
						Code    int64  `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if err := json.Unmarshal(line, &res); err != nil || res.ID != id+1 {
					fail("request %d: answer %s (%v)", id+1, line, err)
				}
				if res.Error == nil || res.Error.Code != server.CodeAccessDenied {
					fail("request %d: answer %s, want the policy's denial (code %d)", id+1, line, server.CodeAccessDenied)
				}
			}
			// End of input ends the server, cleanly.
			_ = stdin.Close()
			for range lines {
			}
			if err := cmd.Wait(); err != nil || strings.Contains(stderr.String(), "panic") {
				t.Fatalf("server exit: %v\nserver log:\n%s", err, stderr.String())
			}
		})
	}
}
