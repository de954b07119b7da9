package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// lines hands each line written to it to a channel, to find log records.
type lines struct {
	w  *io.PipeWriter
	ch chan string
}

func newLines() *lines {
	r, w := io.Pipe()
	l := &lines{w: w, ch: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			select {
			case l.ch <- sc.Text():
			default: // nobody reads any more
			}
		}
	}()
	return l
}

func (l *lines) Write(p []byte) (int, error) { return l.w.Write(p) }

// The serve path, as SIGTERM meets it: the stream open on the server ends,
// and serve returns nil (exit status 0).
func TestServeShutsDownCleanly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := newLines()
	defer logs.w.Close()
	done := make(chan error, 1)
	go func() {
		// Every listener on port 0, reported in the log; no development
		// identity provider (DEV_IDP=true in the environment would bind
		// DEV_IDP_ADDR, a fixed port).
		done <- run(ctx, []string{"serve", "--env-file=/nonexistent", "--environment=development", "--enable-auth=false",
			"--transport=sse", "--host=127.0.0.1", "--port=0", "--metrics-addr=127.0.0.1:0", "--dev-idp=false", "--log-format=json",
			"--policy-dir=" + filepath.Join("..", "..", "policies")}, io.Discard, logs)
	}()

	var addr, metrics string
	deadline := time.After(30 * time.Second)
	for addr == "" {
		select {
		case line := <-logs.ch:
			var rec struct{ Msg, Addr, Metrics string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "mcpguard listening" {
				addr, metrics = rec.Addr, rec.Metrics
			}
		case err := <-done:
			t.Fatalf("serve returned before listening: %v", err)
		case <-deadline:
			t.Fatal("serve did not report its address")
		}
	}

	res, err := http.Get("http://" + metrics + "/metrics")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("metrics listener: %v %v", res, err)
	}
	res.Body.Close()

	res, err = http.Get("http://" + addr + "/sse")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("SSE stream: %v %v", res, err)
	}
	defer res.Body.Close()
	first := make([]byte, 256)
	if n, _ := res.Body.Read(first); !strings.Contains(string(first[:n]), "endpoint") {
		t.Fatalf("no endpoint event: %q", first[:n])
	}
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, res.Body)
		ended <- err
	}()

	cancel() // what SIGTERM does
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve after a clean shutdown: %v (exit status 1)", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("serve did not return within 8s of the shutdown")
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the SSE stream outlived the server")
	}
}
