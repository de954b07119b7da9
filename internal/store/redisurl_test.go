package store

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// REDIS_URL names a standalone server, a Cluster (addr=) or Sentinels
// (master_name=); the deployment's shape and credentials land where
// go-redis's UniversalClient looks for them, and the package's timeouts win.
func TestRedisURLShapes(t *testing.T) {
	for _, c := range []struct {
		name, url, password string
		want                redis.UniversalOptions
	}{
		{"standalone", "rediss://u:p@redis.example:6380/2", "", redis.UniversalOptions{Addrs: []string{"redis.example:6380"}, Username: "u", Password: "p", DB: 2}},
		{"standalone, REDIS_PASSWORD", "redis://redis.example", "pw", redis.UniversalOptions{Addrs: []string{"redis.example:6379"}, Password: "pw"}},
		{"cluster", "redis://:p@a:7000?addr=b:7001&addr=c:7002", "", redis.UniversalOptions{Addrs: []string{"a:7000", "b:7001", "c:7002"}, Password: "p", IsClusterMode: true}},
		{"sentinel", "redis://su:sp@s1:26379?master_name=mymaster&addr=s2:26379", "masterpw",
			redis.UniversalOptions{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster", SentinelUsername: "su", SentinelPassword: "sp", Password: "masterpw"}},
	} {
		uo, err := universalOptions(RedisOptions{URL: c.url, Password: c.password})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := redis.UniversalOptions{Addrs: uo.Addrs, Username: uo.Username, Password: uo.Password, DB: uo.DB, MasterName: uo.MasterName,
			SentinelUsername: uo.SentinelUsername, SentinelPassword: uo.SentinelPassword, IsClusterMode: uo.IsClusterMode}
		if strings.Join(got.Addrs, ",") != strings.Join(c.want.Addrs, ",") || got.Username != c.want.Username || got.Password != c.want.Password ||
			got.DB != c.want.DB || got.MasterName != c.want.MasterName || got.SentinelUsername != c.want.SentinelUsername ||
			got.SentinelPassword != c.want.SentinelPassword || got.IsClusterMode != c.want.IsClusterMode {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
		if uo.DialTimeout != 500*time.Millisecond || uo.ReadTimeout != 500*time.Millisecond || uo.MaxRetries != 1 {
			t.Errorf("%s: the package's timeouts were not kept: %+v", c.name, uo)
		}
		if strings.HasPrefix(c.url, "rediss://") != (uo.TLSConfig != nil) {
			t.Errorf("%s: TLS %v", c.name, uo.TLSConfig)
		}
	}
	for _, bad := range []string{"http://redis.example", "redis://:secret-pw@a:1?addr=b", "redis://:secret-pw@a:1?master_name=m&bogus=1", "redis://:secret-pw@[::1"} {
		_, err := universalOptions(RedisOptions{URL: bad})
		if err == nil {
			t.Errorf("%s accepted", bad)
		} else if strings.Contains(err.Error(), "secret-pw") {
			t.Errorf("the error repeats the password: %v", err)
		}
	}
}

// A real Sentinel (Debian's redis-server in sentinel mode) in front of a real
// master: a REDIS_URL naming the Sentinel reaches the master it monitors.
func TestRedisURLSentinel(t *testing.T) {
	master, _ := storetest.RedisServer(t)
	_, mport, _ := net.SplitHostPort(master)
	sentinel := startSentinel(t, mport)
	r, err := NewRedis(RedisOptions{URL: "redis://" + sentinel + "?master_name=mymaster", Password: storetest.Password, Prefix: "t:", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	if err := r.Ping(ctx); err != nil {
		t.Fatalf("ping through the Sentinel: %v", err)
	}
	if err := r.Set(ctx, "k", []byte("v"), time.Minute); err != nil {
		t.Fatal(err)
	}
	direct := redis.NewClient(&redis.Options{Addr: master, Password: storetest.Password})
	defer direct.Close()
	if v, err := direct.Get(ctx, "t:k").Result(); err != nil || v != "v" {
		t.Fatalf("the master holds %q (%v): the write went elsewhere", v, err)
	}
}

// startSentinel runs redis-server in sentinel mode on a free loopback port,
// monitoring the master on 127.0.0.1:mport, until the test ends.
func startSentinel(t *testing.T, mport string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := filepath.Join(t.TempDir(), "sentinel.conf")
	// Sentinel rewrites its configuration file: it must be writable.
	body := "port " + strconv.Itoa(port) + "\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 " + mport + " 1\n" +
		"sentinel auth-pass mymaster " + storetest.Password + "\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			if !said && strings.Contains(sc.Text(), "+monitor master mymaster") {
				said = true
				close(ready)
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatal("redis-server --sentinel exited before it monitored the master")
	case <-time.After(30 * time.Second):
		t.Fatal("the Sentinel did not monitor the master within 30s")
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}
