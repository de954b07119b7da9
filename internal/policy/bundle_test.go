package policy_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// signer is a bundle signing key pair, as `opa build --signing-key` and the
// bundle plugin's keys take them.
type signer struct{ private, public string }

func newSigner(t *testing.T) signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return signer{
		private: string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})),
		public:  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
	}
}

// buildBundle makes a bundle of a policy folder with OPA's bundle package,
// as `opa build` does: the folder's files, the revision in the manifest,
// signed by s unless s is empty.
func buildBundle(t *testing.T, files map[string]string, revision string, s signer) []byte {
	t.Helper()
	dir := writePolicy(t, files)
	b, err := bundle.NewCustomReader(bundle.NewDirectoryLoader(dir)).WithRegoVersion(ast.RegoV1).Read()
	if err != nil {
		t.Fatal(err)
	}
	b.Manifest.Revision = revision
	if s.private != "" {
		if err := b.GenerateSignature(bundle.NewSigningConfig(s.private, "RS256", ""), "mcpguard", false); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tamper changes a signed bundle's data after signing, in the archive
// itself: the signature no longer covers what the bundle holds.
func tamper(t *testing.T, raw []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	changed := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, "data.json") {
			body = bytes.Replace(body, []byte(`"gen":2`), []byte(`"gen":99`), 1)
			changed = true
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
	if !changed {
		t.Fatal("no data.json in the bundle")
	}
	return out.Bytes()
}

// bundleServer serves one bundle at /bundles/mcpguard.tar.gz on loopback;
// set changes it, down makes every request fail.
type bundleServer struct {
	*httptest.Server
	mu   sync.Mutex
	body []byte
	down bool
	// statuses are the status reports OPA's status plugin POSTed.
	statuses []map[string]any
}

func newBundleServer(t *testing.T) *bundleServer {
	t.Helper()
	bs := &bundleServer{}
	bs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bs.mu.Lock()
		defer bs.mu.Unlock()
		if r.Method == http.MethodPost && r.URL.Path == "/status" {
			var report map[string]any
			if err := json.NewDecoder(r.Body).Decode(&report); err == nil {
				bs.statuses = append(bs.statuses, report)
			}
			return
		}
		if bs.down || r.URL.Path != "/bundles/mcpguard.tar.gz" || bs.body == nil {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(bs.body)
	}))
	t.Cleanup(bs.Close)
	return bs
}

// reported tells whether a status report gave the bundle this revision.
func (bs *bundleServer) reported(revision string) bool {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	for _, r := range bs.statuses {
		bundles, _ := r["bundles"].(map[string]any)
		if b, _ := bundles["mcpguard"].(map[string]any); b["active_revision"] == revision {
			return true
		}
	}
	return false
}

func (bs *bundleServer) set(body []byte) {
	bs.mu.Lock()
	bs.body = body
	bs.mu.Unlock()
}

func (bs *bundleServer) setDown(down bool) {
	bs.mu.Lock()
	bs.down = down
	bs.mu.Unlock()
}

// bundleConfig is an OPA configuration: the bundle from bs, signed by the
// key, persisted in dir; downloaded on demand (trigger: manual): at start,
// then on each Reload, as SIGHUP does.
func bundleConfig(t *testing.T, bs *bundleServer, s signer, dir string) []byte {
	t.Helper()
	cfg, err := json.Marshal(map[string]any{
		"services": map[string]any{"bundles": map[string]any{"url": bs.URL}},
		"bundles": map[string]any{"mcpguard": map[string]any{
			"service": "bundles", "resource": "bundles/mcpguard.tar.gz", "persist": true,
			"signing": map[string]any{"keyid": "mcpguard"},
			"trigger": "manual",
		}},
		"keys":                  map[string]any{"mcpguard": map[string]any{"algorithm": "RS256", "key": s.public}},
		"status":                map[string]any{"service": "bundles"},
		"persistence_directory": dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func startBundles(t *testing.T, cfg []byte, wait time.Duration) (*policy.Engine, error) {
	t.Helper()
	e, err := policy.New(context.Background(), "does-not-exist", policy.WithManagement(policy.Management{Config: cfg, Wait: wait}))
	if err == nil {
		t.Cleanup(func() { e.Close(context.Background()) })
	}
	return e, err
}

// A signed bundle from a bundle server is verified, activated and becomes the
// policy; its revision names it.
func TestSignedBundleIsVerifiedAndActivated(t *testing.T) {
	s := newSigner(t)
	bs := newBundleServer(t)
	bs.set(buildBundle(t, generation(1), "rev-1", s))
	e, err := startBundles(t, bundleConfig(t, bs, s, t.TempDir()), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st := e.Status()
	if !st.Ready || st.Source != "bundle" || st.Revision != "rev-1" || st.Reloads != 1 || st.Failures != 0 {
		t.Fatalf("status: %+v", st)
	}
	if got := probe(t, e); got != "generation 1" {
		t.Fatalf("in force: %q", got)
	}
	if d, err := e.Decide(context.Background(), call("t")); err != nil || !d.Allow {
		t.Fatalf("the bundle's policy does not decide: %+v %v", d, err)
	}

	// OPA's status plugin reports the bundle to the status service.
	deadline := time.Now().Add(10 * time.Second)
	for !bs.reported("rev-1") {
		if time.Now().After(deadline) {
			t.Fatalf("no status report names rev-1: %v", bs.statuses)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A new revision is taken on the next download.
	bs.set(buildBundle(t, generation(2), "rev-2", s))
	if err := e.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := e.Status(); st.Revision != "rev-2" || probe(t, e) != "generation 2" || st.Reloads != 2 {
		t.Fatalf("after rev-2: %+v, probe %q", st, probe(t, e))
	}
}

// A tampered bundle, an unsigned one, and a signed one that fails its own
// tests are each refused: the last good bundle keeps deciding, each refusal
// is counted with its reason, and none is persisted: a replica restarted
// with the bundle server down starts with the last good bundle.
func TestBadBundlesAreRefusedAndNotPersisted(t *testing.T) {
	s := newSigner(t)
	bs := newBundleServer(t)
	good := buildBundle(t, generation(1), "rev-1", s)
	bs.set(good)
	persist := t.TempDir()
	cfg := bundleConfig(t, bs, s, persist)
	e, err := startBundles(t, cfg, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	mixed := generation(2)
	mixed["data.json"] = `{"gen": 3}`
	for i, c := range []struct {
		name string
		body []byte
		want string
	}{
		{"tampered", tamper(t, buildBundle(t, generation(2), "rev-2", s)), "digest mismatch"},
		{"unsigned", buildBundle(t, generation(2), "rev-2", signer{}), "bundle missing .signatures.json file"},
		{"signed by another key", buildBundle(t, generation(2), "rev-2", newSigner(t)), "verification"},
		{"failing its tests", buildBundle(t, mixed, "rev-2", s), "authz_test.rego:5: mcp.authz_test.test_rego_and_data_agree: FAIL"},
	} {
		bs.set(c.body)
		_ = e.Reload(context.Background())
		st := e.Status()
		if st.Revision != "rev-1" || probe(t, e) != "generation 1" {
			t.Fatalf("%s: swapped in: %+v", c.name, st)
		}
		t.Logf("%s: %v", c.name, st.LastError)
		if st.Failures != uint64(i+1) || st.LastError == nil || !strings.Contains(st.LastError.Error(), c.want) {
			t.Errorf("%s: status %+v, want a refusal saying %q", c.name, st, c.want)
		}
	}

	// The server goes down; the process restarts: the last good bundle
	// comes from the persistence directory.
	bs.setDown(true)
	e.Close(context.Background())
	e2, err := startBundles(t, cfg, 30*time.Second)
	if err != nil {
		t.Fatalf("a replica with the bundle server down did not start from the persisted bundle: %v", err)
	}
	if st := e2.Status(); st.Revision != "rev-1" || probe(t, e2) != "generation 1" || !st.Ready {
		t.Fatalf("restarted from disk: %+v, probe %q", st, probe(t, e2))
	}
	if _, err := os.Stat(filepath.Join(persist, "bundles", "mcpguard", "bundle.tar.gz")); err != nil {
		t.Fatalf("no persisted bundle: %v", err)
	}
}

// Without a persisted bundle, a replica whose bundle server is down does
// not start: no policy, no service (fail closed).
func TestNoBundleNoStart(t *testing.T) {
	s := newSigner(t)
	bs := newBundleServer(t)
	bs.setDown(true)
	_, err := startBundles(t, bundleConfig(t, bs, s, t.TempDir()), 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "no policy bundle was activated within 2s") {
		t.Fatalf("started without a policy: %v", err)
	}
}

// shippedFiles are the served files of policies/ (tests included), as a
// bundle of them holds.
func shippedFiles(t *testing.T) map[string]string {
	t.Helper()
	paths, err := filepath.Glob("../../policies/*")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = string(b)
	}
	return files
}

// The lint of a server whose policy is a bundle reads the bundle in force,
// not a folder; OPA's own records (data.system.bundles) are not the team's
// data. The shipped policy, as a bundle, has no finding.
func TestLintOfTheBundleInForce(t *testing.T) {
	s := newSigner(t)
	bs := newBundleServer(t)
	bs.set(buildBundle(t, shippedFiles(t), "rev-shipped", s))
	e, err := startBundles(t, bundleConfig(t, bs, s, t.TempDir()), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	findings, err := e.Lint(context.Background(), policy.LintOptions{})
	if err != nil || len(findings) != 0 {
		t.Fatalf("lint of the shipped bundle: %v %+v", err, findings)
	}
}

// What mcpguard does not run is refused at start, not ignored.
func TestManagementRefusesDiscoveryAndPlugins(t *testing.T) {
	for _, cfg := range []string{
		`{"services": {"s": {"url": "http://127.0.0.1:9"}}, "discovery": {"service": "s", "resource": "d"}}`,
		`{"plugins": {"mine": {}}}`,
	} {
		if _, err := startBundles(t, []byte(cfg), time.Second); err == nil {
			t.Errorf("%s: accepted", cfg)
		}
	}
}
