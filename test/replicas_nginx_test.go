package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/server"
	"github.com/mcpguard/mcpguard/internal/store/storetest"
)

// Three STATELESS replicas of the mcpguard binary behind Debian's nginx, one
// real Redis, one bundle server (this test's, serving bundles signed by
// `opa build` as `make bundle` makes them), callers with tokens from one
// Entra-shaped issuer: what docs/OPERATIONS.md says of scaling, run.
//
//   - a new bundle revision is enforced by every replica within the polling
//     interval plus its activation (each replica asked directly);
//   - a burst spread over the replicas by nginx is decided identically;
//   - a bad bundle (tampered after signing; signed but failing its own
//     tests) leaves every replica on the last good revision;
//   - a replica SIGKILLed mid-burst loses no call: nginx retries it on
//     another replica, and every call gets a valid answer.

// nginxEnv set to 1 (make test) turns a missing nginx into a failure.
const nginxEnv = "MCPGUARD_NGINX"

// The bundle polling interval the replicas are given (OPA_CONFIG), and what
// a replica may take beyond it to download, verify, compile and test a
// bundle on a busy machine.
const (
	pollMin       = 1 * time.Second
	pollMax       = 2 * time.Second
	activationLag = 6 * time.Second
)

func TestReplicaFleetBehindNginx(t *testing.T) {
	nginx := nginxBinary(t)
	redisAddr, _ := storetest.RedisServer(t)
	redisHost, redisPort, _ := strings.Cut(redisAddr, ":")
	iss := startIssuer(t)
	bin := buildBinary(t)

	// The bundles: r1 is policies/ as shipped; r2 adds a rule that
	// suspends carol from read_critical_data, with its test. Two bad ones
	// would let carol in again if they were taken.
	carol, mallory := devidp.ObjectIDFor("carol"), devidp.ObjectIDFor("mallory")
	key := newBundleKey(t)
	opa := opaBinary(t)
	r1 := opaBuild(t, opa, key, "r1", nil)
	r2 := opaBuild(t, opa, key, "r2", suspension(carol, carol))
	// Signed with carol suspended, then carol's id swapped for mallory's in
	// the rule and its test: consistent, passing its tests, not signed.
	tampered := retouch(t, opaBuild(t, opa, key, "r3-tampered", suspension(carol, carol)), carol, mallory)
	// Signed, but its own test says carol must be refused and it suspends
	// mallory instead.
	failing := opaBuild(t, opa, key, "r4-failing", suspension(mallory, carol))

	bs := newBundleHost(t)
	bs.set(r1)

	replicas := make([]*fleetReplica, 3)
	for i := range replicas {
		replicas[i] = startFleetReplica(t, bin, fmt.Sprintf("replica-%d", i+1), map[string]string{
			"AZURE_AUTHORITY_HOST": iss.Authority, "AZURE_TENANT_ID": tenantID, "AZURE_CLIENT_ID": clientID,
			"AZURE_REQUIRED_SCOPES": "read",
			"ROLE_SOURCE":           "static", "ROLES_FILE": filepath.Join(repoRoot(), "test", "fixtures", "roles.json"),
			"REDIS_HOST": redisHost, "REDIS_PORT": redisPort, "REDIS_PASSWORD": storetest.Password,
			"STORAGE_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
		}, bs.opaConfig(t, key.public))
	}
	for _, r := range replicas {
		r.waitReady(t, 90*time.Second)
		if rev := r.revision(t); rev != "r1" {
			t.Fatalf("%s started on revision %q, want r1", r.name, rev)
		}
	}
	ngx := startNginx(t, nginx, replicas)

	tok := func(user string, roles ...string) string {
		s, err := iss.Mint(devidp.Token{Audience: clientID, User: user, Roles: roles, Scopes: []string{"read", "write"}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	callers := map[string]string{
		"alice": tok("alice", "data_reader"),
		"carol": tok("carol", "data_reader"),
		"bob":   tok("bob", "finance"),
		"dave":  tok("dave", "finance", "executive"),
	}
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	t.Cleanup(client.CloseIdleConnections)
	readCarol := fleetCall{caller: "carol", tool: "read_critical_data"}

	// Under r1 carol reads, on every replica.
	for _, r := range replicas {
		if a := readCarol.do(client, r.base, callers); a.err != nil || !a.allowed {
			t.Fatalf("%s under r1: carol %+v", r.name, a)
		}
	}

	ok := t.Run("bundle update enforced by every replica within the polling interval", func(t *testing.T) {
		bs.set(r2)
		published := time.Now()
		bound := pollMax + activationLag
		took := map[string]time.Duration{}
		for len(took) < len(replicas) {
			if time.Since(published) > bound {
				t.Fatalf("after %v only %v enforce r2 (polling at most every %v)", bound, took, pollMax)
			}
			for _, r := range replicas {
				if _, done := took[r.name]; done {
					continue
				}
				a := readCarol.do(client, r.base, callers)
				if a.err != nil {
					t.Fatalf("%s: %v", r.name, a.err)
				}
				if !a.allowed {
					if !a.says("suspended") {
						t.Fatalf("%s refused carol, not for r2's reason: %v", r.name, a.reasons)
					}
					took[r.name] = time.Since(published)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("r2 enforced after %v (bundle polled every %v–%v)", took, pollMin, pollMax)
		// Every replica says r2, and stays on it: carol refused, alice not.
		for _, r := range replicas {
			if rev := r.revision(t); rev != "r2" {
				t.Errorf("%s: mcpguard_policy_info revision %q, want r2", r.name, rev)
			}
			if a := readCarol.do(client, r.base, callers); a.err != nil || a.allowed {
				t.Errorf("%s: carol under r2: %+v", r.name, a)
			}
			if a := (fleetCall{caller: "alice", tool: "read_critical_data"}).do(client, r.base, callers); a.err != nil || !a.allowed {
				t.Errorf("%s: alice under r2: %+v", r.name, a)
			}
		}
	})
	if !ok {
		return
	}

	// What every call of a burst must be answered, whichever replica takes it.
	mix := []fleetCall{
		{caller: "alice", tool: "read_critical_data", allow: true},
		{caller: "carol", tool: "read_critical_data", allow: false},
		{caller: "carol", tool: "get_current_user", allow: true},
		{caller: "bob", tool: "approve_budget", allow: false},
		{caller: "dave", tool: "approve_budget", allow: true},
	}

	ok = t.Run("burst through nginx decided identically by every replica", func(t *testing.T) {
		answers := burst(client, ngx.url, callers, mix, 300, 10, nil)
		perReplica := map[string]int{}
		for i, a := range answers {
			c := mix[i%len(mix)]
			if a.err != nil {
				t.Fatalf("call %d (%s %s): %v", i, c.caller, c.tool, a.err)
			}
			if a.allowed != c.allow {
				t.Fatalf("call %d: %s %s answered by %s: allowed=%v, want %v (%v)", i, c.caller, c.tool, a.upstream, a.allowed, c.allow, a.reasons)
			}
			perReplica[a.upstream]++
		}
		for _, r := range replicas {
			if perReplica[r.addr] == 0 {
				t.Errorf("nginx sent no call of the burst to %s (%s): %v", r.name, r.addr, perReplica)
			}
		}
		t.Logf("300 calls, each decided as expected; answered per replica: %v", perReplica)
	})
	if !ok {
		return
	}

	ok = t.Run("bad bundles leave every replica on the last good revision", func(t *testing.T) {
		for _, bad := range []struct {
			name, says string
			archive    []byte
		}{
			{name: "tampered after signing", archive: tampered, says: "digest mismatch"},
			{name: "signed, failing its own tests", archive: failing, says: "test_the_suspended_account_is_refused"},
		} {
			before := map[string]float64{}
			for _, r := range replicas {
				before[r.name] = r.metric(t, "mcpguard_policy_reload_failures_total")
			}
			bs.set(bad.archive)
			published := time.Now()
			for _, r := range replicas {
				// Each replica fetches it within the interval and refuses it,
				// saying why. (A poll of the previous bad bundle may still be
				// counted first: the reason tells them apart.)
				deadline := time.Now().Add(pollMax + activationLag)
				for {
					if rev := r.revision(t); rev != "r2" {
						t.Fatalf("%s: %s took it: now on revision %q, want r2", bad.name, r.name, rev)
					}
					ready := r.readiness(t)
					if strings.Contains(ready.Checks["policy"].LastChange, bad.says) {
						if ready.Checks["policy"].Revision != "r2" {
							t.Fatalf("%s: %s /readyz: %+v, want r2", bad.name, r.name, ready.Checks["policy"])
						}
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s: %s: no refusal saying %q within %v: /readyz %+v", bad.name, r.name, bad.says, pollMax+activationLag, ready.Checks["policy"])
					}
					time.Sleep(100 * time.Millisecond)
				}
				t.Logf("%s: refused by %s %v after it was published", bad.name, r.name, time.Since(published).Round(time.Millisecond))
				if got := r.metric(t, "mcpguard_policy_reload_failures_total"); got <= before[r.name] {
					t.Errorf("%s: %s: mcpguard_policy_reload_failures_total %v, was %v", bad.name, r.name, got, before[r.name])
				}
				if r.metric(t, "mcpguard_policy_last_change_failed") != 1 {
					t.Errorf("%s: %s: mcpguard_policy_last_change_failed is not 1", bad.name, r.name)
				}
				if a := readCarol.do(client, r.base, callers); a.err != nil || a.allowed || !a.says("suspended") {
					t.Errorf("%s: %s lets carol in or errs: %+v", bad.name, r.name, a)
				}
			}
		}
		// Back to r2 on the server: replicas already hold it (304, nothing
		// activated), and stop refetching the bad one.
		bs.set(r2)
	})
	if !ok {
		return
	}

	t.Run("a replica killed mid-burst loses no call", func(t *testing.T) {
		victim := replicas[1]
		const calls, killAt = 300, 100
		var killedAfter atomic.Int64
		answers := burst(client, ngx.url, callers, mix, calls, 10, func(answered int64) {
			if answered == killAt {
				victim.kill(t)
				killedAfter.Store(answered)
			}
		})
		if killedAfter.Load() == 0 {
			t.Fatal("the replica was not killed during the burst")
		}
		retried, afterKill := 0, map[string]int{}
		for i, a := range answers {
			c := mix[i%len(mix)]
			if a.err != nil {
				t.Errorf("call %d (%s %s) lost: %v", i, c.caller, c.tool, a.err)
				continue
			}
			if a.allowed != c.allow {
				t.Errorf("call %d: %s %s answered by %s: allowed=%v, want %v", i, c.caller, c.tool, a.upstream, a.allowed, c.allow)
			}
			// $upstream_addr lists every replica tried: "dead, alive".
			if strings.Contains(a.upstream, victim.addr) && strings.Contains(a.upstream, ",") {
				retried++
			}
			if a.seq > killAt {
				afterKill[a.upstream]++
			}
		}
		if retried == 0 {
			t.Errorf("no call was retried away from the killed %s: the kill was not exercised (%v)", victim.addr, afterKill)
		}
		t.Logf("%d calls, %s killed after %d answers; %d calls retried on another replica; answered after the kill: %v",
			calls, victim.name, killAt, retried, afterKill)
		if t.Failed() {
			t.Logf("nginx error log:\n%s", ngx.errorLog())
		}
	})
}

// nginxBinary finds Debian's nginx; outside make test its absence skips
// the test, loudly.
func nginxBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if bin, err := exec.LookPath(p); err == nil {
			return bin
		}
	}
	if os.Getenv(nginxEnv) == "1" {
		t.Fatalf("%s=1 but nginx is not installed (make deps installs Debian's nginx)", nginxEnv)
	}
	t.Skip("SKIPPING the three-replica test: nginx is not installed; run `make deps` or `make test`")
	return ""
}

// bundleKey is a bundle signing key pair: the private half in a PEM file
// for `opa build --signing-key`, the public half for the replicas.
type bundleKey struct{ privateFile, public string }

func newBundleKey(t *testing.T) bundleKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "bundle-signing.key.pem")
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	if err := os.WriteFile(file, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	return bundleKey{privateFile: file, public: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))}
}

// opaBinary is the opa of go.mod's tool line, the one `make bundle` runs,
// built (or found in the build cache) by `go tool -n`.
func opaBinary(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "tool", "-n", "opa")
	cmd.Dir = repoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go tool -n opa: %v", err)
	}
	bin := strings.TrimSpace(string(out))
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("go tool -n opa printed %q: %v", bin, err)
	}
	return bin
}

// opaBuild builds a signed bundle as `make bundle` does (`opa build --bundle
// --signing-key --revision`, tests included) of policies/ with extra files
// added.
func opaBuild(t *testing.T, opa string, key bundleKey, revision string, extra map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	shipped, err := filepath.Glob(filepath.Join(repoRoot(), "policies", "*"))
	if err != nil || len(shipped) == 0 {
		t.Fatalf("policies/: %v", err)
	}
	for _, p := range shipped {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range extra {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "bundle.tar.gz")
	cmd := exec.Command(opa, "build", "--bundle", ".", "--signing-key", key.privateFile, "--signing-alg", "RS256",
		"--revision", revision, "-o", out)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("opa build %s: %v\n%s", revision, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// suspension is the rule r2 rolls out: the account suspended is refused
// read_critical_data whatever its roles; its test checks that tested is.
func suspension(suspended, tested string) map[string]string {
	return map[string]string{
		"suspend.rego": fmt.Sprintf(`package mcp.authz

# Accounts suspended from the critical data whatever their roles: the
# change the replicas test rolls out as a new bundle revision.
suspended_accounts := {%q}

deny contains {"id": "suspended", "message": "this account is suspended from read_critical_data"} if {
	input.mcp.method == "tools/call"
	input.mcp.tool.name == "read_critical_data"
	input.identity.object_id in suspended_accounts
}
`, suspended),
		"suspend_test.rego": fmt.Sprintf(`package mcp.suspend_test

import data.mcpguard

reader(oid) := {
	"version": 1,
	"identity": {
		"authenticated": true, "kind": "user", "object_id": oid,
		"scopes": ["read", "write"], "app_roles": ["data_reader"], "groups": [], "claims": {},
	},
	"authorization": {
		"source": "static", "roles": ["data_reader"], "realm_roles": ["data_reader"],
		"client_roles": {}, "claims": {},
	},
	"request": {"time_ns": 0, "transport": "http"},
	"mcp": {"method": "tools/call", "tool": {"name": "read_critical_data", "arguments": {}}},
}

test_the_suspended_account_is_refused if not mcpguard.allow with input as reader(%q)

test_other_readers_still_read if mcpguard.allow with input as reader("00000000-0000-4000-8000-000000000000")
`, tested),
	}
}

// retouch replaces old with new in every Rego file of a signed bundle,
// after signing: the signature no longer covers what the bundle holds.
func retouch(t *testing.T, raw []byte, old, new string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	changed := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, ".rego") && bytes.Contains(body, []byte(old)) {
			body = bytes.ReplaceAll(body, []byte(old), []byte(new))
			changed++
		}
		h.Size = int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if changed != 2 {
		t.Fatalf("retouched %d files, want the rule and its test", changed)
	}
	return out.Bytes()
}

// bundleHost is the bundle server: one bundle at /bundles/mcpguard.tar.gz
// on loopback, with an ETag, so that a replica polling an unchanged bundle
// gets 304 and activates nothing, as from a real bundle server.
type bundleHost struct {
	*httptest.Server
	mu   sync.Mutex
	body []byte
	etag string
}

func newBundleHost(t *testing.T) *bundleHost {
	t.Helper()
	bs := &bundleHost{}
	bs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bs.mu.Lock()
		body, etag := bs.body, bs.etag
		bs.mu.Unlock()
		if r.URL.Path != "/bundles/mcpguard.tar.gz" || body == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(body)
	}))
	t.Cleanup(bs.Close)
	return bs
}

func (bs *bundleHost) set(body []byte) {
	sum := sha256.Sum256(body)
	bs.mu.Lock()
	bs.body, bs.etag = body, `"`+hex.EncodeToString(sum[:8])+`"`
	bs.mu.Unlock()
}

// opaConfig is a replica's OPA_CONFIG: the bundle, signed by the key,
// polled every pollMin to pollMax, persisted in the replica's folder.
func (bs *bundleHost) opaConfig(t *testing.T, public string) map[string]any {
	t.Helper()
	return map[string]any{
		"services": map[string]any{"bundles": map[string]any{"url": bs.URL}},
		"bundles": map[string]any{"mcpguard": map[string]any{
			"service": "bundles", "resource": "bundles/mcpguard.tar.gz", "persist": true,
			"signing": map[string]any{"keyid": "mcpguard"},
			"polling": map[string]any{"min_delay_seconds": int(pollMin / time.Second), "max_delay_seconds": int(pollMax / time.Second)},
		}},
		"keys": map[string]any{"mcpguard": map[string]any{"algorithm": "RS256", "key": public}},
	}
}

// fleetReplica is one mcpguard process.
type fleetReplica struct {
	name    string
	addr    string // 127.0.0.1:port, as nginx names it in $upstream_addr
	base    string // http://addr
	metrics string // its METRICS_ADDR, as a URL
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
	once    sync.Once
}

// startFleetReplica runs the binary, stateless, with its own OPA_CONFIG
// (opaCfg plus its persistence folder). Its listeners are on port 0: their
// addresses come from its log (waitReady).
func startFleetReplica(t *testing.T, bin, name string, vars map[string]string, opaCfg map[string]any) *fleetReplica {
	t.Helper()
	dir := t.TempDir()
	opaCfg["persistence_directory"] = filepath.Join(dir, "opa")
	cfg, err := json.Marshal(opaCfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "opa.json")
	if err := os.WriteFile(cfgFile, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	r := &fleetReplica{name: name, logs: &syncBuffer{}, exited: make(chan struct{})}
	env := map[string]string{
		"ENV_FILE": "/nonexistent", "ENVIRONMENT": "development", "DEV_IDP": "false",
		"LOG_LEVEL": "info", "LOG_FORMAT": "json",
		"HOST": "127.0.0.1", "PORT": "0", "METRICS_ADDR": "127.0.0.1:0",
		"STATELESS": "true", "OPA_CONFIG": cfgFile, "DENIAL_DETAIL": "true",
		// The test is about agreement, not latency: on a loaded 2-core
		// machine one call of a burst was once refused with -32031 (fail
		// closed), most likely an evaluation past the 100 ms default.
		"POLICY_TIMEOUT": "2s",
	}
	for k, v := range vars {
		env[k] = v
	}
	r.cmd = exec.Command(bin, "serve")
	r.cmd.Dir = dir
	r.cmd.Env = os.Environ()
	for k, v := range env {
		r.cmd.Env = append(r.cmd.Env, k+"="+v)
	}
	r.cmd.Stdout, r.cmd.Stderr = r.logs, r.logs
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.exited) }()
	t.Cleanup(func() {
		r.kill(t)
		if t.Failed() {
			t.Logf("%s log (warnings, errors, refusals with an error):\n%s", name, notable(r.logs.String()))
		}
	})
	return r
}

// notable keeps the lines of a JSON log worth reading after a failure: not
// the info lines (a denial each) unless they carry an error.
func notable(log string) string {
	var keep []string
	for _, line := range strings.Split(log, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			if strings.TrimSpace(line) != "" {
				keep = append(keep, line)
			}
			continue
		}
		if rec["level"] != "INFO" || rec["error"] != nil {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// kill ends the process with SIGKILL, at once, and reaps it.
func (r *fleetReplica) kill(t *testing.T) {
	r.once.Do(func() {
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-r.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit within 10s of SIGKILL", r.name, r.cmd.Process.Pid)
		}
	})
}

// waitReady reads the replica's addresses from its log ("mcpguard
// listening"), then waits for its /readyz (policy, JWKS, Redis) to pass.
func (r *fleetReplica) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		select {
		case <-r.exited:
			t.Fatalf("%s exited:\n%s", r.name, r.logs.String())
		default:
		}
		if r.addr == "" {
			for _, line := range strings.Split(r.logs.String(), "\n") {
				var rec struct{ Msg, Addr, Metrics string }
				if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "mcpguard listening" && rec.Metrics != "" {
					r.addr, r.base, r.metrics = rec.Addr, "http://"+rec.Addr, "http://"+rec.Metrics
				}
			}
		}
		if r.addr != "" {
			if res, err := http.Get(r.metrics + "/readyz"); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v:\n%s", r.name, within, r.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// scrape is the replica's /metrics text.
func (r *fleetReplica) scrape(t *testing.T) string {
	t.Helper()
	res, err := http.Get(r.metrics + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", r.name, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("%s /metrics: %d %v", r.name, res.StatusCode, err)
	}
	return string(b)
}

var policyInfo = regexp.MustCompile(`(?m)^mcpguard_policy_info\{revision="([^"]*)",source="bundle"\} 1$`)

// revision is the bundle revision the replica says it enforces.
func (r *fleetReplica) revision(t *testing.T) string {
	t.Helper()
	m := policyInfo.FindAllStringSubmatch(r.scrape(t), -1)
	if len(m) != 1 {
		t.Fatalf("%s: %d mcpguard_policy_info series from a bundle", r.name, len(m))
	}
	return m[0][1]
}

// metric is the value of an unlabelled series (0 when absent).
func (r *fleetReplica) metric(t *testing.T, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(r.scrape(t), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: metric line %q", r.name, line)
			}
			return n
		}
	}
	return 0
}

// fleetReadiness is /readyz's body as the metrics listener shows it.
type fleetReadiness struct {
	Status string `json:"status"`
	Checks map[string]struct {
		Status     string `json:"status"`
		Revision   string `json:"revision"`
		LastChange string `json:"last_change_error"`
	} `json:"checks"`
}

func (r *fleetReplica) readiness(t *testing.T) fleetReadiness {
	t.Helper()
	res, err := http.Get(r.metrics + "/readyz")
	if err != nil {
		t.Fatalf("%s /readyz: %v", r.name, err)
	}
	defer res.Body.Close()
	var body fleetReadiness
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("%s /readyz: %v", r.name, err)
	}
	if res.StatusCode != http.StatusOK || body.Checks["redis"].Status != "ok" || body.Checks["jwks"].Status != "ok" {
		t.Errorf("%s /readyz: %d %+v", r.name, res.StatusCode, body)
	}
	return body
}

// fleetNginx is nginx in front of the replicas.
type fleetNginx struct {
	url string
	dir string
}

// startNginx runs nginx (master and one worker) as a child process with a
// configuration of its own in a temporary folder, on a free loopback port,
// round-robin over the replicas. A POST that fails on one replica (refused,
// reset, 502, 503) is passed to the next: non_idempotent, because every MCP
// request is a POST. A port taken by another process before nginx binds it
// is tried again with another.
func startNginx(t *testing.T, bin string, replicas []*fleetReplica) *fleetNginx {
	t.Helper()
	dir := t.TempDir()
	var upstreams strings.Builder
	for _, r := range replicas {
		fmt.Fprintf(&upstreams, "\t\tserver %s max_fails=1 fail_timeout=30s;\n", r.addr)
	}
	for try := 1; ; try++ {
		port := freePort(t)
		conf := fmt.Sprintf(`# The three-replica test's nginx (test/replicas_nginx_test.go).
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 512; }
http {
	log_format replicas '$msec $status "$upstream_addr" "$upstream_status" $request_time';
	access_log %[1]s/access.log replicas;
	client_body_temp_path %[1]s/client_body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	# Workers may run as nobody: keep bodies in memory, never in files.
	client_body_buffer_size 1m;
	proxy_max_temp_file_size 0;
	upstream mcpguard {
%[2]s		keepalive 16;
	}
	server {
		listen 127.0.0.1:%[3]d;
		location / {
			proxy_pass http://mcpguard;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $http_host;
			proxy_connect_timeout 2s;
			proxy_read_timeout 15s;
			proxy_next_upstream error timeout http_502 http_503 non_idempotent;
			proxy_next_upstream_tries 3;
			proxy_next_upstream_timeout 10s;
			# Which replicas a call was sent to, in order.
			add_header X-Upstream $upstream_addr always;
		}
	}
}
`, dir, upstreams.String(), port)
		confFile := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-p", dir, "-c", confFile, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		// Its own process group: the workers are ended with the master.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			// SIGTERM: nginx's fast shutdown; then the whole group, by its id.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // a worker left behind
		}
		n := &fleetNginx{url: "http://127.0.0.1:" + strconv.Itoa(port), dir: dir}
		if err := n.waitUp(exited, 15*time.Second); err != nil {
			stop()
			log := n.errorLog() + out.String()
			if strings.Contains(log, "Address already in use") && try < 5 {
				t.Logf("nginx: port %d taken; trying another", port)
				continue
			}
			t.Fatalf("nginx: %v\n%s", err, log)
		}
		t.Cleanup(func() {
			stop()
			if t.Failed() {
				t.Logf("nginx error log:\n%s", n.errorLog())
			}
		})
		return n
	}
}

// waitUp waits for nginx to have written its pid file and to answer
// /healthz from a replica.
func (n *fleetNginx) waitUp(exited <-chan struct{}, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		select {
		case <-exited:
			return errors.New("nginx exited")
		default:
		}
		if _, err := os.Stat(filepath.Join(n.dir, "nginx.pid")); err == nil {
			if res, err := http.Get(n.url + "/healthz"); err == nil {
				res.Body.Close()
				if res.StatusCode == http.StatusOK && res.Header.Get("X-Upstream") != "" {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not serving within %v", within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *fleetNginx) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	return string(b)
}

// fleetCall is a tools/call by a caller, and whether it must be allowed.
type fleetCall struct {
	caller, tool string
	allow        bool
}

var toolArgs = map[string]map[string]any{
	"read_critical_data": {"query": "q"},
	"approve_budget":     {"department": "it", "amount": 1},
	"get_current_user":   {},
}

// fleetAnswer is what a call got: a decision, or err when the answer was
// not a valid MCP answer (a transport error, a status other than 200, a
// JSON-RPC error other than a denial, a tool error).
type fleetAnswer struct {
	allowed  bool
	reasons  []string
	upstream string // nginx's $upstream_addr; empty when asked directly
	seq      int64  // the order in which the burst's answers came
	err      error
}

func (a fleetAnswer) says(s string) bool {
	for _, r := range a.reasons {
		if strings.Contains(r, s) {
			return true
		}
	}
	return false
}

var callID atomic.Int64

// do sends the call to base/mcp as a stateless client does: one POST, no
// session.
func (c fleetCall) do(client *http.Client, base string, tokens map[string]string) fleetAnswer {
	id := callID.Add(1)
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": "tools/call",
		"params": map[string]any{"name": c.tool, "arguments": toolArgs[c.tool]}})
	if err != nil {
		return fleetAnswer{err: err}
	}
	req, err := http.NewRequest(http.MethodPost, base+"/mcp", bytes.NewReader(body))
	if err != nil {
		return fleetAnswer{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	req.Header.Set("Authorization", "Bearer "+tokens[c.caller])
	res, err := client.Do(req)
	if err != nil {
		return fleetAnswer{err: err}
	}
	defer res.Body.Close()
	a := fleetAnswer{upstream: res.Header.Get("X-Upstream")}
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		a.err = err
		return a
	}
	if res.StatusCode != http.StatusOK {
		a.err = fmt.Errorf("HTTP %d from %q: %.200s", res.StatusCode, a.upstream, raw)
		return a
	}
	var rpc struct {
		ID     int64 `json:"id"`
		Result *struct {
			IsError bool `json:"isError"`
		} `json:"result"`
		Error *struct {
			Code int               `json:"code"`
			Data server.DenialData `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &rpc); err != nil || rpc.ID != id {
		a.err = fmt.Errorf("not the answer to call %d: %v: %.200s", id, err, raw)
		return a
	}
	switch {
	case rpc.Error != nil && rpc.Error.Code == server.CodeAccessDenied && rpc.Error.Data.DecisionID != "":
		a.reasons = rpc.Error.Data.Reasons
	case rpc.Error == nil && rpc.Result != nil && !rpc.Result.IsError:
		a.allowed = true
	default:
		a.err = fmt.Errorf("neither a result nor a denial: %.200s", raw)
	}
	return a
}

// burst sends n calls, mix[i%len(mix)] for the i-th, from workers
// concurrent clients through base, and returns each call's answer.
// answered, when set, is told the running count after each answer.
func burst(client *http.Client, base string, tokens map[string]string, mix []fleetCall, n, workers int, answered func(int64)) []fleetAnswer {
	answers := make([]fleetAnswer, n)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				a := mix[i%len(mix)].do(client, base, tokens)
				a.seq = done.Add(1)
				answers[i] = a
				if answered != nil {
					answered(a.seq)
				}
			}
		}()
	}
	wg.Wait()
	return answers
}
