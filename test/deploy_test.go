package e2e

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mcpguard/mcpguard/internal/config"
)

// The deployment files (compose.yaml, deploy/kubernetes) are read as an
// operator's tools would read them, and checked against the server they
// deploy: every setting they give is one the server reads and
// docs/CONFIGURATION.md documents, the Kubernetes configuration is one the
// server accepts, and the probes, ports and selectors fit together.

// yamlDocs parses every YAML document of a file into generic maps.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// dig walks a path of map keys and list indexes ("spec.template.spec.containers.0").
func dig(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func str(v any, path string) string {
	s, _ := dig(v, path).(string)
	return s
}

// settings are the names of every setting the server reads.
func settings(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	_, _ = config.FromSource(func(name string) (string, bool) {
		names[name] = true
		return "", false
	})
	if len(names) < 40 {
		t.Fatalf("only %d settings read: %v", len(names), names)
	}
	return names
}

// checkSettings fails for a name the server does not read or the
// configuration reference does not document.
func checkSettings(t *testing.T, where string, env map[string]any, known map[string]bool, doc string) {
	t.Helper()
	for name := range env {
		if !known[name] {
			t.Errorf("%s sets %s, which mcpguard does not read", where, name)
		}
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("%s sets %s, which docs/CONFIGURATION.md does not document", where, name)
		}
	}
}

func TestKubernetesManifests(t *testing.T) {
	root := repoRoot()
	dir := filepath.Join(root, "deploy", "kubernetes")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	byKind := map[string]map[string]any{} // kind/name → object
	for _, f := range files {
		for _, doc := range yamlDocs(t, f) {
			kind, name := str(doc, "kind"), str(doc, "metadata.name")
			if str(doc, "apiVersion") == "" || kind == "" || (name == "" && kind != "Kustomization") {
				t.Errorf("%s: a document without apiVersion, kind or metadata.name", filepath.Base(f))
			}
			byKind[kind+"/"+name] = doc
		}
	}
	// The kustomization lists every manifest but the secret's template.
	var listed []string
	for _, r := range dig(byKind["Kustomization/"], "resources").([]any) {
		listed = append(listed, r.(string))
	}
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && b != "secret.example.yaml" {
			want = append(want, b)
		}
	}
	slices.Sort(listed)
	if !slices.Equal(listed, want) {
		t.Errorf("kustomization resources %v, manifests %v", listed, want)
	}

	dep := byKind["Deployment/mcpguard"]
	if dep == nil {
		t.Fatal("no Deployment mcpguard")
	}
	podLabels := dig(dep, "spec.template.metadata.labels").(map[string]any)
	c := dig(dep, "spec.template.spec.containers.0")
	ports := map[string]int{}
	for _, p := range dig(c, "ports").([]any) {
		ports[str(p, "name")] = dig(p, "containerPort").(int)
	}
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/readyz"} {
		if got := str(c, probe+".httpGet.path"); got != path {
			t.Errorf("%s path %q, want %q", probe, got, path)
		}
		if _, ok := ports[str(c, probe+".httpGet.port")]; !ok {
			t.Errorf("%s port %q is not a container port", probe, str(c, probe+".httpGet.port"))
		}
	}
	if to, _ := dig(c, "readinessProbe.timeoutSeconds").(int); to < 4 {
		t.Errorf("readiness timeout %ds: /readyz takes up to 3s when a dependency hangs", to)
	}

	cm := dig(byKind["ConfigMap/mcpguard"], "data").(map[string]any)
	secret := yamlDocs(t, filepath.Join(dir, "secret.example.yaml"))[0]
	secretData := dig(secret, "stringData").(map[string]any)
	known := settings(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "CONFIGURATION.md"))
	if err != nil {
		t.Fatal(err)
	}
	checkSettings(t, "configmap.yaml", cm, known, string(doc))
	checkSettings(t, "secret.example.yaml", secretData, known, string(doc))
	if strconv.Itoa(ports["http"]) != cm["PORT"] {
		t.Errorf("container port http %d, PORT %v", ports["http"], cm["PORT"])
	}
	if _, mport, _ := net.SplitHostPort(cm["METRICS_ADDR"].(string)); strconv.Itoa(ports["metrics"]) != mport {
		t.Errorf("container port metrics %d, METRICS_ADDR %v", ports["metrics"], cm["METRICS_ADDR"])
	}
	// SIGKILL must come after the preStop pause and the drain.
	shutdown, err := time.ParseDuration(cm["SHUTDOWN_TIMEOUT"].(string))
	if err != nil {
		t.Fatal(err)
	}
	grace := time.Duration(dig(dep, "spec.template.spec.terminationGracePeriodSeconds").(int)) * time.Second
	pause := time.Duration(dig(c, "lifecycle.preStop.sleep.seconds").(int)) * time.Second
	if grace <= shutdown+pause {
		t.Errorf("terminationGracePeriodSeconds %s ≤ SHUTDOWN_TIMEOUT %s + preStop %s: in-flight calls would be killed", grace, shutdown, pause)
	}
	for _, src := range dig(c, "envFrom").([]any) {
		if n := str(src, "configMapRef.name"); n != "" && byKind["ConfigMap/"+n] == nil {
			t.Errorf("envFrom names ConfigMap %s, not in the manifests", n)
		}
		if n := str(src, "secretRef.name"); n != "" && n != str(secret, "metadata.name") {
			t.Errorf("envFrom names Secret %s; the template is %s", n, str(secret, "metadata.name"))
		}
	}

	// The Kubernetes configuration is one the server accepts (with real
	// keys for the template's placeholders and a key file for the bundle's).
	keyFile := filepath.Join(t.TempDir(), "public.pem")
	if err := os.WriteFile(keyFile, []byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for k, v := range cm {
		vars[k] = v.(string)
	}
	for k, v := range secretData {
		vars[k] = v.(string)
	}
	vars["JWT_SIGNING_KEY"] = "aGVsbG8taGVsbG8taGVsbG8taGVsbG8taGVsbG8taGk="
	vars["STORAGE_ENCRYPTION_KEY"] = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	vars["POLICY_BUNDLE_PUBLIC_KEY"] = keyFile
	vars["POLICY_DIR"] = filepath.Join(root, "policies")
	cfg, err := config.FromSource(func(name string) (string, bool) { v, ok := vars[name]; return v, ok })
	if err != nil {
		t.Fatalf("the manifests' configuration is refused: %v", err)
	}
	if !cfg.Stateless || cfg.Environment != "production" || cfg.MetricsAddr == "" {
		t.Errorf("replicas need STATELESS=true in production with metrics: %+v", cfg)
	}

	svc := byKind["Service/mcpguard"]
	for k, v := range dig(svc, "spec.selector").(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("Service selector %s=%v does not select the pods (%v)", k, v, podLabels)
		}
	}
	for _, p := range dig(svc, "spec.ports").([]any) {
		if _, ok := ports[str(p, "targetPort")]; !ok {
			t.Errorf("Service targetPort %q is not a container port", str(p, "targetPort"))
		}
	}
	hpa := byKind["HorizontalPodAutoscaler/mcpguard"]
	if str(hpa, "spec.scaleTargetRef.kind") != "Deployment" || str(hpa, "spec.scaleTargetRef.name") != "mcpguard" {
		t.Errorf("the HPA scales %v", dig(hpa, "spec.scaleTargetRef"))
	}
	if min, _ := dig(hpa, "spec.minReplicas").(int); min < 3 {
		t.Errorf("HPA minReplicas %d", min)
	}
	for k, v := range dig(byKind["PodDisruptionBudget/mcpguard"], "spec.selector.matchLabels").(map[string]any) {
		if podLabels[k] != v {
			t.Errorf("the PDB does not select the pods: %s=%v", k, v)
		}
	}
	// The bundle server serves the bundle the configuration names.
	bundles := byKind["Service/mcpguard-bundles"]
	if bundles == nil || byKind["Deployment/mcpguard-bundles"] == nil {
		t.Fatal("no bundle server")
	}
	if !strings.HasPrefix(cm["POLICY_BUNDLE_URL"].(string), "http://"+str(bundles, "metadata.name")+"/") {
		t.Errorf("POLICY_BUNDLE_URL %v does not name the bundle server", cm["POLICY_BUNDLE_URL"])
	}
}

// compose.yaml: mcpguard and Redis, a build target the Dockerfile has, and
// settings the server reads.
func TestComposeFile(t *testing.T) {
	root := repoRoot()
	docs := yamlDocs(t, filepath.Join(root, "compose.yaml"))
	if len(docs) != 1 {
		t.Fatalf("%d documents", len(docs))
	}
	svc := dig(docs[0], "services").(map[string]any)
	m, redis := svc["mcpguard"], svc["redis"]
	if m == nil || redis == nil {
		t.Fatalf("services %v: want mcpguard and redis", svc)
	}
	if dig(m, "depends_on.redis.condition") != "service_healthy" || dig(redis, "healthcheck") == nil {
		t.Error("mcpguard does not wait for a healthy Redis")
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// ${MCPGUARD_TARGET:-development}: the default and production must be stages.
	target := str(m, "build.target")
	def := regexp.MustCompile(`:-([a-z]+)\}`).FindStringSubmatch(target)
	if def == nil {
		t.Fatalf("build target %q", target)
	}
	for _, stage := range []string{def[1], "production"} {
		if !regexp.MustCompile(`(?m)^FROM .* AS ` + stage + `$`).Match(dockerfile) {
			t.Errorf("the Dockerfile has no stage %s", stage)
		}
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "CONFIGURATION.md"))
	if err != nil {
		t.Fatal(err)
	}
	env := dig(m, "environment").(map[string]any)
	checkSettings(t, "compose.yaml", env, settings(t), string(doc))
	if !strings.HasPrefix(env["REDIS_URL"].(string), "redis://redis:") {
		t.Errorf("REDIS_URL %v does not name the redis service", env["REDIS_URL"])
	}
	for _, p := range dig(m, "ports").([]any) {
		if !strings.HasPrefix(p.(string), "127.0.0.1:") {
			t.Errorf("port %v published beyond loopback", p)
		}
	}
}
