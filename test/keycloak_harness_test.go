package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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
)

// The real Keycloak the integration tests run against: the Quarkus
// distribution from Maven Central on the Temurin 25 JDK, in dev mode on
// loopback ports, with test/keycloak/realm.json imported and the Entra side
// (an Entra-shaped issuer of this package) set up through the Admin REST API,
// as docs/KEYCLOAK_SETUP.md tells an operator to. One instance serves the
// whole test run; TestMain stops it.
//
// Ports: Keycloak is started with port 0 for both listeners and says which
// ports it bound in its start line, read from its output; no port is picked
// here and handed over (another process could take it in between). A restart
// must come back on the same HTTP port (mcpguard's configuration names it),
// so only there can the port be taken; a restart that finds it in use is
// retried a few times, then fails saying so.

const (
	kcRealm        = "mcpguard"
	kcClientID     = "mcpguard"
	kcClientSecret = "mcpguard-test-secret"
	kcIDPAlias     = "entra"
	kcAdmin        = "admin"
	kcAdminPass    = "admin-test-pass"
)

type keycloak struct {
	home     string
	url      string // http://127.0.0.1:port
	mgmt     string
	issuer   *devidp.Issuer
	cmd      *exec.Cmd
	lifeline io.WriteCloser // closing it (or this process dying) stops Keycloak: see run.sh
	exited   chan struct{}
	httpPort int // bound by Keycloak at its first start, and kept for restarts
	log      *os.File
}

var (
	kcOnce     sync.Once
	kcInstance *keycloak
	kcErr      error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if kcInstance != nil {
		kcInstance.stop()
		_ = os.Remove(kcInstance.log.Name())
	}
	os.Exit(code)
}

// startKeycloak returns the shared Keycloak, starting it on first use. Without
// MCPGUARD_KEYCLOAK=1 the test is skipped (loudly); with it, a Keycloak that
// cannot be started fails the test.
func startKeycloak(t *testing.T) *keycloak {
	t.Helper()
	if os.Getenv("MCPGUARD_KEYCLOAK") != "1" {
		t.Skip("SKIPPED: needs a real Keycloak; set MCPGUARD_KEYCLOAK=1 (make test does)")
	}
	kcOnce.Do(func() { kcInstance, kcErr = launchKeycloak() })
	if kcErr != nil {
		t.Fatalf("Keycloak: %v", kcErr)
	}
	return kcInstance
}

// startLine watches Keycloak's output (copying it to the log) for the line
// that names the ports it bound — "Listening on: http://127.0.0.1:P1.
// Management interface listening on http://127.0.0.1:P2." — and for a
// listener that could not bind because its port is in use.
type startLine struct {
	log   io.Writer
	rest  []byte
	ports chan [2]int // HTTP, management; sent once
	sent  bool
	inUse atomic.Bool
}

var (
	listeningRE = regexp.MustCompile(`Listening on: http://127\.0\.0\.1:(\d+)\b`)
	mgmtRE      = regexp.MustCompile(`Management interface listening on http://127\.0\.0\.1:(\d+)\b`)
)

func newStartLine(log io.Writer) *startLine {
	return &startLine{log: log, ports: make(chan [2]int, 1)}
}

// Write is called by one goroutine at a time (os/exec copies stdout and
// stderr, the same writer, through one pipe).
func (w *startLine) Write(p []byte) (int, error) {
	if _, err := w.log.Write(p); err != nil {
		return 0, err
	}
	w.rest = append(w.rest, p...)
	for {
		i := bytes.IndexByte(w.rest, '\n')
		if i < 0 {
			break
		}
		w.line(string(w.rest[:i]))
		w.rest = w.rest[i+1:]
	}
	return len(p), nil
}

func (w *startLine) line(l string) {
	if strings.Contains(l, "Address already in use") || strings.Contains(l, "seems to be in use") {
		w.inUse.Store(true)
	}
	h, m := listeningRE.FindStringSubmatch(l), mgmtRE.FindStringSubmatch(l)
	if w.sent || h == nil || m == nil {
		return
	}
	hp, _ := strconv.Atoi(h[1])
	mp, _ := strconv.Atoi(m[1])
	w.sent = true
	w.ports <- [2]int{hp, mp}
}

// errPortInUse: Keycloak exited because its HTTP port was taken.
var errPortInUse = errors.New("Keycloak's port is in use by another process")

// temurin25 finds the Temurin 25 JDK installed beside the default Java.
func temurin25() (string, error) {
	if h := os.Getenv("KEYCLOAK_JAVA_HOME"); h != "" {
		return h, nil
	}
	matches, _ := filepath.Glob("/usr/lib/jvm/temurin-25*")
	for _, m := range matches {
		if _, err := os.Stat(filepath.Join(m, "bin", "java")); err == nil {
			return m, nil
		}
	}
	return "", fmt.Errorf("no Temurin 25 JDK under /usr/lib/jvm (set KEYCLOAK_JAVA_HOME)")
}

func launchKeycloak() (*keycloak, error) {
	out, err := exec.Command(filepath.Join(repoRoot(), "test", "keycloak", "fetch.sh")).Output()
	if err != nil {
		return nil, fmt.Errorf("fetch.sh: %w", err)
	}
	kc := &keycloak{home: strings.TrimSpace(string(out))}
	javaHome, err := temurin25()
	if err != nil {
		return nil, err
	}
	// A fresh database each run: the realm is imported, the rest set up below.
	_ = os.RemoveAll(filepath.Join(kc.home, "data"))
	imp := filepath.Join(kc.home, "data", "import")
	if err := os.MkdirAll(imp, 0o755); err != nil {
		return nil, err
	}
	realm, err := os.ReadFile(filepath.Join(repoRoot(), "test", "keycloak", "realm.json"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(imp, "realm.json"), realm, 0o644); err != nil {
		return nil, err
	}
	if kc.log, err = os.CreateTemp("", "keycloak-*.log"); err != nil {
		return nil, err
	}
	if err := kc.run(javaHome, true); err != nil {
		return nil, err
	}

	// The Entra side: an Entra-shaped issuer on loopback for the whole run.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	key, err := devidp.NewKey()
	if err != nil {
		return nil, err
	}
	if kc.issuer, err = devidp.New("http://"+ln.Addr().String(), tenantID, key); err != nil {
		return nil, err
	}
	go func() { _ = http.Serve(ln, kc.issuer.Handler()) }()
	if err := kc.setupEntra(); err != nil {
		kc.stop()
		return nil, fmt.Errorf("setting up the Entra identity provider: %w", err)
	}
	return kc, nil
}

// run starts kc.sh on kc.httpPort (0 at the first start: Keycloak picks) and
// a management port Keycloak picks, learns both from its start line, and
// waits until it is ready.
func (kc *keycloak) run(javaHome string, importRealm bool) error {
	args := []string{"start-dev",
		"--http-host=127.0.0.1", "--http-port=" + strconv.Itoa(kc.httpPort),
		"--http-management-port=0", "--health-enabled=true",
		"--features=token-exchange,admin-fine-grained-authz:v1",
	}
	if importRealm {
		args = append(args, "--import-realm")
	}
	// run.sh ties Keycloak's life to our stdin pipe: a test binary killed by
	// a timeout leaves no JVM behind.
	cmd := exec.Command(filepath.Join(repoRoot(), "test", "keycloak", "run.sh"), append([]string{kc.home}, args...)...)
	cmd.Env = append(os.Environ(), "JAVA_HOME="+javaHome,
		"KC_BOOTSTRAP_ADMIN_USERNAME="+kcAdmin, "KC_BOOTSTRAP_ADMIN_PASSWORD="+kcAdminPass)
	watch := newStartLine(kc.log)
	cmd.Stdout, cmd.Stderr = watch, watch
	// The output is copied through a pipe: once Keycloak has exited, Wait
	// does not wait long for anything else still holding it.
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	lifeline, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	kc.cmd, kc.lifeline, kc.exited = cmd, lifeline, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(kc.exited)
	exitedEarly := func() error {
		_ = kc.lifeline.Close()
		kc.cmd = nil
		if watch.inUse.Load() {
			return fmt.Errorf("%w (port %d); log tail:\n%s", errPortInUse, kc.httpPort, logTail(kc.log.Name()))
		}
		return fmt.Errorf("Keycloak exited during start; log tail:\n%s", logTail(kc.log.Name()))
	}
	bound := time.NewTimer(5 * time.Minute)
	defer bound.Stop()
	select {
	case p := <-watch.ports:
		if kc.httpPort != 0 && p[0] != kc.httpPort {
			kc.stop()
			return fmt.Errorf("Keycloak restarted on port %d, not %d", p[0], kc.httpPort)
		}
		kc.httpPort = p[0]
		kc.url = "http://127.0.0.1:" + strconv.Itoa(p[0])
		kc.mgmt = "http://127.0.0.1:" + strconv.Itoa(p[1])
	case <-kc.exited:
		return exitedEarly()
	case <-bound.C:
		kc.stop()
		return fmt.Errorf("no start line in 5 minutes; log tail:\n%s", logTail(kc.log.Name()))
	}
	// Started; ready (the realm imported, the health checks up) follows.
	probe := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		res, err := probe.Get(kc.mgmt + "/health/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-kc.exited:
			return exitedEarly()
		case <-bound.C:
			kc.stop()
			return fmt.Errorf("not ready in 5 minutes; log tail:\n%s", logTail(kc.log.Name()))
		case <-tick.C:
		}
	}
}

func logTail(name string) string {
	b, _ := os.ReadFile(name)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

func (kc *keycloak) stop() {
	if kc.cmd == nil {
		return
	}
	_ = kc.lifeline.Close() // run.sh sends SIGTERM, then SIGKILL after 30 s
	select {
	case <-kc.exited:
	case <-time.After(45 * time.Second):
		_ = syscall.Kill(-kc.cmd.Process.Pid, syscall.SIGKILL)
		<-kc.exited
	}
	kc.cmd = nil
}

// restart stops Keycloak and starts it again on the same HTTP port (the
// one mcpguard is configured with) and data. Between the stop and the start
// another process may hold that port (an outgoing connection given it as its
// local port, say): nothing here can tell when it lets go, so a start that
// finds the port in use is tried again, a bounded number of times.
func (kc *keycloak) restart(t *testing.T) {
	t.Helper()
	kc.stop()
	javaHome, err := temurin25()
	if err != nil {
		t.Fatal(err)
	}
	const attempts = 5
	for i := 1; ; i++ {
		err := kc.run(javaHome, false)
		if err == nil {
			return
		}
		if !errors.Is(err, errPortInUse) || i == attempts {
			t.Fatalf("restart (attempt %d of %d): %v", i, attempts, err)
		}
		t.Logf("restart: port %d in use, trying again in 2s (attempt %d of %d)", kc.httpPort, i, attempts)
		time.Sleep(2 * time.Second) // the port's holder is another process: no event to wait on
	}
}

// admin calls the Admin REST API; out, when not nil, receives the JSON answer.
func (kc *keycloak) admin(method, path string, body, out any) (int, error) {
	form := url.Values{"grant_type": {"password"}, "client_id": {"admin-cli"}, "username": {kcAdmin}, "password": {kcAdminPass}}
	res, err := http.PostForm(kc.url+"/realms/master/protocol/openid-connect/token", form)
	if err != nil {
		return 0, err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, kc.url+"/admin"+path, rd)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		return res.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
	if out != nil && len(b) > 0 {
		return res.StatusCode, json.Unmarshal(b, out)
	}
	return res.StatusCode, nil
}

func (kc *keycloak) clientUUID(clientID string) (string, error) {
	var list []struct {
		ID string `json:"id"`
	}
	if _, err := kc.admin("GET", "/realms/"+kcRealm+"/clients?clientId="+url.QueryEscape(clientID), nil, &list); err != nil {
		return "", err
	}
	if len(list) != 1 {
		return "", fmt.Errorf("client %s not found", clientID)
	}
	return list[0].ID, nil
}

// appRoleMappers are the identity-provider mappers of the tests: an Entra app
// role value → a realm role, or client.role for a client role.
var appRoleMappers = map[string]string{
	"data_reader": "data_reader", "finance": "finance", "executive": "executive",
	"admin": "admin", "supervisor": "supervisor", "api.writer": "api.writer",
}

// setupEntra registers the Entra-shaped issuer as an OIDC identity provider,
// maps app roles to roles, and lets the mcpguard client exchange its tokens.
func (kc *keycloak) setupEntra() error {
	r := "/realms/" + kcRealm
	idp := map[string]any{
		"alias": kcIDPAlias, "providerId": "oidc", "enabled": true, "trustEmail": false, "storeToken": false,
		"config": map[string]string{
			"issuer":                kc.issuer.IssuerURL(tenantID),
			"jwksUrl":               kc.issuer.Authority + "/" + tenantID + "/discovery/v2.0/keys",
			"useJwksUrl":            "true",
			"validateSignature":     "true",
			"disableUserInfo":       "true",
			"disableTypeClaimCheck": "true",
			"syncMode":              "FORCE",
			"clientId":              clientID,
			"clientSecret":          "unused",
			"clientAuthMethod":      "client_secret_post",
			"authorizationUrl":      kc.issuer.Authority + "/" + tenantID + "/oauth2/v2.0/authorize",
			"tokenUrl":              kc.issuer.Authority + "/" + tenantID + "/oauth2/v2.0/token",
			// RFC 7523 grant: Entra access tokens live an hour and carry no jti.
			"jwtAuthorizationGrantEnabled":                       "true",
			"jwtAuthorizationGrantMaxAllowedAssertionExpiration": "5400",
			"jwtAuthorizationGrantAssertionReuseAllowed":         "true",
		},
	}
	if _, err := kc.admin("POST", r+"/identity-provider/instances", idp, nil); err != nil {
		return err
	}
	for value, role := range appRoleMappers {
		if err := kc.setMapper(value, role); err != nil {
			return err
		}
	}
	if err := kc.bindSubject(); err != nil {
		return fmt.Errorf("subject binding: %w", err)
	}
	var perm struct {
		ScopePermissions map[string]string `json:"scopePermissions"`
	}
	if _, err := kc.admin("PUT", r+"/identity-provider/instances/"+kcIDPAlias+"/management/permissions", map[string]any{"enabled": true}, &perm); err != nil {
		return err
	}
	permID := perm.ScopePermissions["token-exchange"]
	rm, err := kc.clientUUID("realm-management")
	if err != nil {
		return err
	}
	mg, err := kc.clientUUID(kcClientID)
	if err != nil {
		return err
	}
	authz := r + "/clients/" + rm + "/authz/resource-server"
	var policy struct {
		ID string `json:"id"`
	}
	if _, err := kc.admin("POST", authz+"/policy/client", map[string]any{"name": "mcpguard-may-exchange", "logic": "POSITIVE", "clients": []string{mg}}, &policy); err != nil {
		return err
	}
	var p map[string]any
	if _, err := kc.admin("GET", authz+"/permission/scope/"+permID, nil, &p); err != nil {
		return err
	}
	var resources []struct {
		ID string `json:"_id"`
	}
	var scopes []struct {
		ID string `json:"id"`
	}
	if _, err := kc.admin("GET", authz+"/permission/"+permID+"/resources", nil, &resources); err != nil {
		return err
	}
	if _, err := kc.admin("GET", authz+"/permission/"+permID+"/scopes", nil, &scopes); err != nil {
		return err
	}
	var rids, sids []string
	for _, x := range resources {
		rids = append(rids, x.ID)
	}
	for _, x := range scopes {
		sids = append(sids, x.ID)
	}
	p["resources"], p["scopes"], p["policies"] = rids, sids, []string{policy.ID}
	_, err = kc.admin("PUT", authz+"/permission/scope/"+permID, p, nil)
	return err
}

// bindSubject has Keycloak carry the caller's Entra object id into its
// tokens, for KEYCLOAK_SUBJECT_CLAIM=entra_oid: the user attribute entra_oid,
// declared in the realm's user profile as visible and editable by
// administrators only (users cannot change it), is imported from the Entra
// token's oid at every exchange; the client mcpguard maps it into the access
// token (its protocol mapper is in realm.json).
func (kc *keycloak) bindSubject() error {
	r := "/realms/" + kcRealm
	var profile map[string]any
	if _, err := kc.admin("GET", r+"/users/profile", nil, &profile); err != nil {
		return err
	}
	attrs, _ := profile["attributes"].([]any)
	profile["attributes"] = append(attrs, map[string]any{
		"name": "entra_oid", "displayName": "Entra object id", "multivalued": false,
		"permissions": map[string]any{"view": []string{"admin"}, "edit": []string{"admin"}},
	})
	if _, err := kc.admin("PUT", r+"/users/profile", profile, nil); err != nil {
		return err
	}
	_, err := kc.admin("POST", r+"/identity-provider/instances/"+kcIDPAlias+"/mappers", map[string]any{
		"name": "entra-oid", "identityProviderAlias": kcIDPAlias, "identityProviderMapper": "oidc-user-attribute-idp-mapper",
		"config": map[string]string{"claim": "oid", "user.attribute": "entra_oid", "syncMode": "INHERIT"},
	}, nil)
	return err
}

// setMapper maps the Entra app role value to a Keycloak role.
func (kc *keycloak) setMapper(value, role string) error {
	_, err := kc.admin("POST", "/realms/"+kcRealm+"/identity-provider/instances/"+kcIDPAlias+"/mappers", map[string]any{
		"name": "app-role-" + value, "identityProviderAlias": kcIDPAlias, "identityProviderMapper": "oidc-role-idp-mapper",
		"config": map[string]string{"claim": "roles", "claim.value": value, "role": role, "syncMode": "INHERIT"},
	}, nil)
	return err
}

// remapMapper points the mapper of an app role value at another claim value
// (so that, with sync mode FORCE, the role is taken away at the next exchange
// of a caller whose token lacks it).
func (kc *keycloak) remapMapper(value, claimValue string) error {
	var list []map[string]any
	base := "/realms/" + kcRealm + "/identity-provider/instances/" + kcIDPAlias + "/mappers"
	if _, err := kc.admin("GET", base, nil, &list); err != nil {
		return err
	}
	for _, m := range list {
		if m["name"] == "app-role-"+value {
			m["config"].(map[string]any)["claim.value"] = claimValue
			_, err := kc.admin("PUT", base+"/"+m["id"].(string), m, nil)
			return err
		}
	}
	return fmt.Errorf("no mapper for %s", value)
}

// exchangeEvents counts the token exchanges Keycloak recorded.
func (kc *keycloak) exchangeEvents() (int, error) {
	var events []any
	_, err := kc.admin("GET", "/realms/"+kcRealm+"/events?type=TOKEN_EXCHANGE&max=1000", nil, &events)
	return len(events), err
}

// serverVars configures mcpguard for this Keycloak.
func (kc *keycloak) serverVars(grant string) map[string]string {
	return map[string]string{
		"ROLE_SOURCE": "keycloak", "KEYCLOAK_SERVER_URL": kc.url, "KEYCLOAK_REALM": kcRealm,
		"KEYCLOAK_CLIENT_ID": kcClientID, "KEYCLOAK_CLIENT_SECRET": kcClientSecret,
		"KEYCLOAK_IDP_ALIAS": kcIDPAlias, "KEYCLOAK_GRANT": grant,
	}
}
