// Package storetest runs Debian's redis-server on a loopback port for tests
// and benchmarks.
package storetest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Password is the test server's password.
const Password = "test-pass"

// tries bounds the ports tried when another process takes the chosen one.
const tries = 5

// RedisServer starts redis-server on a free loopback port, without
// persistence, and stops it when the test ends. Outside make test a missing
// binary skips the test; with MCPGUARD_REDIS=1 (set by make test) it fails.
//
// redis-server cannot be handed a listener, and its port 0 means no TCP at
// all, so the port is the kernel's pick for a listener closed at once, and
// another process may take it before redis-server binds it. redis-server then
// says so and exits, and another port is tried (at most 5). It is ready when
// it says so itself, not when something answers on the port: that could be
// whoever took it.
func RedisServer(t testing.TB) (addr string, stop func()) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("MCPGUARD_REDIS") == "1" {
			t.Fatal("redis-server not installed (make test installs it)")
		}
		t.Skip("SKIPPED: redis-server not installed; run `make test`, which installs it")
	}
	for try := 1; ; try++ {
		port, err := pickPort()
		if err != nil {
			t.Fatal(err)
		}
		addr, stop, err := startRedis(bin, port)
		if err == nil {
			t.Cleanup(stop)
			return addr, stop
		}
		if !errors.Is(err, errPortInUse) || try == tries {
			t.Fatalf("redis-server (try %d of %d): %v", try, tries, err)
		}
		t.Logf("redis-server: %v; trying another port", err)
	}
}

var errPortInUse = errors.New("port taken by another process")

// pickPort is a loopback port free a moment ago.
func pickPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startRedis starts one redis-server on port and waits for its "Ready to
// accept connections", or its exit.
func startRedis(bin string, port int) (addr string, stop func(), err error) {
	addr = "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--requirepass", Password)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	ready := make(chan struct{})
	exited := make(chan struct{})
	var inUse bool
	var tail []string
	go func() {
		// Read to the end (Redis must never block on a full pipe), then reap.
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case !said && strings.Contains(line, "Ready to accept connections"):
				said = true
				close(ready)
			case strings.Contains(line, "Address already in use"):
				inUse = true
			}
			if !said {
				tail = append(tail, line)
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
	}
	bound := time.NewTimer(30 * time.Second)
	defer bound.Stop()
	select {
	case <-ready:
		return addr, stop, nil
	case <-exited:
		// inUse and tail were written before exited closed.
		if inUse {
			return "", nil, fmt.Errorf("%s: %w", addr, errPortInUse)
		}
		return "", nil, fmt.Errorf("exited before it was ready on %s:\n%s", addr, strings.Join(tail, "\n"))
	case <-bound.C:
		stop()
		return "", nil, fmt.Errorf("not ready on %s within 30s", addr)
	}
}
