package policy_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/policy/policytest"
)

// loggedLines decides a call allowed and a call denied on the shipped policy
// with console decision logs, and returns the two log lines.
func loggedLines(t *testing.T) (allowed, denied string) {
	t.Helper()
	var console syncBuffer
	e := logsEngine(t, `{"decision_logs": {"console": true}}`, &console)
	ctx := context.Background()
	a, err := e.Decide(ctx, loggedCall("read_critical_data", "data_reader"))
	if err != nil || !a.Allow {
		t.Fatal(a, err)
	}
	d, err := e.Decide(ctx, loggedCall("approve_budget", "data_reader"))
	if err != nil || d.Allow {
		t.Fatal(d, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e.Close(cctx)
	for _, line := range strings.Split(console.String(), "\n") {
		switch {
		case strings.Contains(line, `"decision_id":"`+a.ID+`"`):
			allowed = line
		case strings.Contains(line, `"decision_id":"`+d.ID+`"`):
			denied = line
		}
	}
	if allowed == "" || denied == "" {
		t.Fatalf("lines not found in:\n%s", console.String())
	}
	return allowed, denied
}

// A logged decision replayed on the policy that made it decides the same; on
// a policy that changed since, the difference is named.
func TestReplayShowsWhatAChangedPolicyDecides(t *testing.T) {
	allowedLine, deniedLine := loggedLines(t)
	ctx := context.Background()
	same, err := policy.New(ctx, "../../policies")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{allowedLine, deniedLine} {
		l, err := policy.ParseLogged([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		r, err := same.Replay(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Differences) != 0 || r.Revision != r.LoggedRevision || r.LoggedRevision == "" {
			t.Errorf("replayed on the same policy: %+v", r)
		}
		// The mask's work is said: the replay saw masked values.
		if !slices.Contains(r.MaskedPaths, "/input/mcp/tool/arguments") {
			t.Errorf("masked paths: %v", r.MaskedPaths)
		}
	}

	// approve_budget is now open to data readers; read_critical_data closed.
	raw, err := os.ReadFile("../../policies/data.json")
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(raw), `"approve_budget": {"require_all_roles": ["finance", "executive"]}`, `"approve_budget": {"require_role": "data_reader"}`, 1)
	changed = strings.Replace(changed, `"read_critical_data": {"require_role": "data_reader"}`, `"read_critical_data": {"require_role": "auditor"}`, 1)
	if changed == string(raw) {
		t.Fatal("data.json did not change")
	}
	dir := policytest.Copy(t, "../../policies", map[string]string{"data.json": changed})
	now, err := policy.New(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := policy.ParseLogged([]byte(deniedLine))
	r, err := now.Replay(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Differences) == 0 || r.Differences[0] != "allow: logged false, now true" || r.Revision == r.LoggedRevision {
		t.Fatalf("the denied call, replayed: %+v", r)
	}
	l, _ = policy.ParseLogged([]byte(allowedLine))
	r, err = now.Replay(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Differences) < 2 || r.Differences[0] != "allow: logged true, now false" || !strings.HasPrefix(r.Differences[1], "reason now given: ") {
		t.Fatalf("the allowed call, replayed: %+v", r)
	}
	out, _ := json.Marshal(r)
	if !strings.Contains(string(out), `"logged":{"allow":true`) {
		t.Fatalf("JSON: %s", out)
	}

	// The same, against the changed policy as a bundle file.
	bundleFile := filepath.Join(t.TempDir(), "bundle.tar.gz")
	files := map[string]string{}
	for _, name := range []string{"authz.rego", "lib.rego", "mcpguard.rego", "system_log.rego"} {
		b, err := os.ReadFile(filepath.Join("../../policies", name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	files["data.json"] = changed
	if err := os.WriteFile(bundleFile, buildBundle(t, files, "rev-9", signer{}), 0o600); err != nil {
		t.Fatal(err)
	}
	fromBundle, err := policy.OpenBundle(ctx, bundleFile)
	if err != nil {
		t.Fatal(err)
	}
	l, _ = policy.ParseLogged([]byte(deniedLine))
	r, err = fromBundle.Replay(ctx, l)
	if err != nil || r.Revision != "rev-9" || len(r.Differences) == 0 || r.Differences[0] != "allow: logged false, now true" {
		t.Fatalf("replayed on a bundle file: %+v %v", r, err)
	}
}

// What is not a decision of mcpguard's is refused, not guessed.
func TestParseLoggedRefusesOtherLines(t *testing.T) {
	for _, line := range []string{
		``,
		`not json`,
		`{"level":"info","msg":"Starting decision logger."}`,
		`{"decision_id":"x","path":"example/allow","input":{}}`,
		`{"decision_id":"x","path":"mcpguard/decision"}`,
		`[{"decision_id":"x","path":"mcpguard/decision","input":{}},{"decision_id":"y","path":"mcpguard/decision","input":{}}]`,
	} {
		if l, err := policy.ParseLogged([]byte(line)); err == nil {
			t.Errorf("%q read as %+v", line, l)
		}
	}
	if _, err := policy.ParseLogged([]byte(`[{"decision_id":"x","path":"mcpguard/decision","input":{"version":1}}]`)); err != nil {
		t.Errorf("an upload of one event: %v", err)
	}
}

// A document that is JSON but not an object (a log line's input can be
// anything) is an error, not a crash.
func TestDecideDocumentRefusesNonObjects(t *testing.T) {
	e := shipped(t)
	for _, doc := range []string{`[]`, `"x"`, `1`, `null`} {
		if d, err := e.DecideDocument(context.Background(), []byte(doc)); err == nil || d.Allow {
			t.Errorf("%s: %+v %v", doc, d, err)
		}
	}
}
