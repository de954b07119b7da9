package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Every command answers -h, -help and --help with its usage on standard
// output and exit status 0, and does nothing else.
func TestHelpEverywhere(t *testing.T) {
	isolate(t)
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"-help"}, {"help"},
		{"serve", "--help"}, {"serve", "-h"}, {"--port", "8000", "--help"},
		{"token", "--help"}, {"keys", "--help"}, {"version", "--help"},
		{"policy", "--help"}, {"policy", "help"}, {"help", "policy"},
		{"policy", "test", "--help"}, {"policy", "test", "-h"},
		{"policy", "eval", "--help"}, {"policy", "input", "--help"}, {"policy", "catalog", "--help"},
		{"help", "policy", "test"}, {"help", "serve"},
	} {
		out, errOut, code := runCLI(t, args...)
		if code != 0 || !strings.HasPrefix(out, "usage: mcpguard") || errOut != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want the usage and 0", args, code, out, errOut)
		}
	}
}

// mcpguard --help used to be read as serve's flags: with settings under
// which the server starts, it served until stopped. Now it prints the usage
// and returns at once.
func TestHelpNeverServes(t *testing.T) {
	isolate(t)
	for k, v := range map[string]string{
		"ENVIRONMENT": "development", "ENABLE_AUTH": "false", "TRANSPORT": "http",
		"HOST": "127.0.0.1", "PORT": "0", "METRICS_ADDR": "off", "POLICY_DIR": shippedPolicies,
	} {
		t.Setenv(k, v)
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--port", "0", "--help"}, {"serve", "--help"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var out, errb strings.Builder
		start := time.Now()
		err := run(ctx, args, &out, &errb)
		cancel()
		if err != nil || !strings.HasPrefix(out.String(), "usage: mcpguard") || time.Since(start) > 2*time.Second {
			t.Errorf("%q: %v after %s, stdout %q, stderr %q: want the usage at once", args, err, time.Since(start), out.String(), errb.String())
		}
		if strings.Contains(errb.String(), "listening") {
			t.Errorf("%q started the server: %s", args, errb.String())
		}
	}
}

// A command line a command cannot read is exit status 2 with its usage:
// unknown flags, stray arguments, the old spellings of the policy folder.
func TestBadCommandLines(t *testing.T) {
	isolate(t)
	for _, args := range [][]string{
		{"bogus"},
		{"serve", "extra"},
		{"--polcy-dir", "policies"}, // a typo of a setting: once silently ignored
		{"serve", "--no-such-setting=1"},
		{"token"}, {"token", "--dev", "extra"}, {"token", "--dev", "--bogus"},
		{"keys"}, {"keys", "make"}, {"version", "now"},
		{"policy"}, {"policy", "bogus"},
		{"policy", "test", "policies"}, // the old positional folder
		{"policy", "test", "--dir", "policies"},
		{"policy", "test", "--bogus"},
		{"policy", "eval"},                                           // no --input
		{"policy", "eval", "--dir", "policies", "--input", "x.json"}, // the old spelling
		{"policy", "eval", "--input", "x.json", "extra"},
		{"policy", "eval", "--input", "x.json", "--explain", "everything"},
		{"policy", "catalog", "extra"}, {"policy", "catalog", "--bogus"},
		{"policy", "input"}, // which request?
		{"policy", "input", "--tool", "a", "--resource", "b"},
		{"policy", "input", "--method", "tools/list", "--tool", "a"},
		{"policy", "input", "--tool", "a", "--params", "{}"},
		{"policy", "input", "--anonymous", "--user", "bob", "--tool", "a"},
		{"policy", "input", "--anonymous", "--token-file", "t", "--tool", "a"},
		{"policy", "input", "--tool", "a", "--time", "yesterday"},
		{"policy", "input", "--tool", "a", "--visible"},
		{"policy", "input", "--tool", "a", "--arguments", "{not json"},
	} {
		out, errOut, code := runCLI(t, args...)
		if code != 2 {
			t.Errorf("%q: exit %d (stdout %q, stderr %q), want 2", args, code, out, errOut)
		}
	}
}
