package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// A flag that names no setting is an error naming it, not a typo silently
// ignored (--polcy-dir left POLICY_DIR at its default); the settings, and
// ENV_FILE, are flags.
func TestLoadRefusesUnknownFlags(t *testing.T) {
	base := []string{"--env-file=" + filepath.Join(t.TempDir(), "absent.env"), "--environment=development", "--enable-auth=false"}
	cfg, _, err := Load(append(base, "--policy-dir=rules", "--port", "9000", "--denial-detail"))
	if err != nil || cfg.PolicyDir != "rules" || cfg.Port != 9000 || !cfg.DenialDetail {
		t.Fatalf("known flags: %v %+v", err, cfg)
	}
	_, _, err = Load(append(base, "--polcy-dir=rules", "--no-such-setting"))
	if !errors.Is(err, ErrUnknownFlag) {
		t.Fatalf("err = %v, want ErrUnknownFlag", err)
	}
	for _, want := range []string{"--polcy-dir", "--no-such-setting"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q not named in %v", want, err)
		}
	}
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Errorf("want the two problems alone, got %v", err)
	}
}
