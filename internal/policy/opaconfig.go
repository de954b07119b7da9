package policy

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/open-policy-agent/opa/v1/util"
)

// OPASettings are the server's settings of OPA's management plane. Either
// ConfigFile names a whole OPA configuration, or BundleURL is the shortcut
// for the common case: one signed bundle, polled, persisted.
type OPASettings struct {
	// ConfigFile is an OPA configuration file (OPA_CONFIG).
	ConfigFile string
	// BundleURL is the URL of a signed bundle (POLICY_BUNDLE_URL).
	BundleURL string
	// BundlePublicKey is a PEM file holding the public key that verifies
	// the bundle's signature (POLICY_BUNDLE_PUBLIC_KEY).
	BundlePublicKey string
	// PersistDir is where OPA keeps the last activated bundle
	// (POLICY_PERSIST_DIR); OPA's default (.opa in the working folder)
	// when empty.
	PersistDir string
	// ConsoleDecisionLogs prints every decision on OPA's console logger
	// (DECISION_LOGS=console), on top of what the configuration says.
	ConsoleDecisionLogs bool
}

// shortcutBundle is the name of the bundle of POLICY_BUNDLE_URL, and of its
// service and key.
const shortcutBundle = "mcpguard"

// Config returns the OPA configuration the settings make, as JSON; nil when
// they ask for no management plane (a folder, no decision logs).
func (s OPASettings) Config() ([]byte, error) {
	cfg := map[string]any{}
	switch {
	case s.ConfigFile != "":
		raw, err := os.ReadFile(s.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("OPA_CONFIG: %w", err)
		}
		// OPA reads YAML or JSON; so does this.
		if err := util.Unmarshal(raw, &cfg); err != nil {
			return nil, fmt.Errorf("OPA_CONFIG %s: %w", s.ConfigFile, err)
		}
		if cfg == nil {
			cfg = map[string]any{}
		}
	case s.BundleURL != "":
		if err := s.bundleShortcut(cfg); err != nil {
			return nil, err
		}
	case !s.ConsoleDecisionLogs:
		return nil, nil
	}
	if s.ConsoleDecisionLogs {
		dl, _ := cfg["decision_logs"].(map[string]any)
		if dl == nil {
			dl = map[string]any{}
		}
		dl["console"] = true
		cfg["decision_logs"] = dl
	}
	return json.Marshal(cfg)
}

// bundleShortcut fills cfg with one service, one bundle that must be signed
// by the key, polled and persisted.
func (s OPASettings) bundleShortcut(cfg map[string]any) error {
	u, err := url.Parse(s.BundleURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("POLICY_BUNDLE_URL %q: want an http(s) URL", s.BundleURL)
	}
	if s.BundlePublicKey == "" {
		return errors.New("POLICY_BUNDLE_URL needs POLICY_BUNDLE_PUBLIC_KEY: bundles are verified, never taken unsigned")
	}
	pemBytes, err := os.ReadFile(s.BundlePublicKey)
	if err != nil {
		return fmt.Errorf("POLICY_BUNDLE_PUBLIC_KEY: %w", err)
	}
	alg, err := keyAlgorithm(pemBytes)
	if err != nil {
		return fmt.Errorf("POLICY_BUNDLE_PUBLIC_KEY %s: %w", s.BundlePublicKey, err)
	}
	resource := u.EscapedPath()
	if u.RawQuery != "" {
		resource += "?" + u.RawQuery
	}
	base := url.URL{Scheme: u.Scheme, Host: u.Host, User: u.User}
	cfg["services"] = map[string]any{shortcutBundle: map[string]any{"url": base.String()}}
	cfg["keys"] = map[string]any{shortcutBundle: map[string]any{"algorithm": alg, "key": string(pemBytes)}}
	cfg["bundles"] = map[string]any{shortcutBundle: map[string]any{
		"service":  shortcutBundle,
		"resource": strings.TrimPrefix(resource, "/"),
		"persist":  true,
		"signing":  map[string]any{"keyid": shortcutBundle},
	}}
	if s.PersistDir != "" {
		cfg["persistence_directory"] = s.PersistDir
	}
	return nil
}

// keyAlgorithm is the JWS algorithm OPA verifies a bundle signed by the
// PEM public key's private half with, as `opa build --signing-alg` names it.
func keyAlgorithm(pemBytes []byte) (string, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return "", errors.New("no PEM block")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("not a PEM public key (PKIX): %w", err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		return "RS256", nil
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return "ES256", nil
		case 384:
			return "ES384", nil
		case 521:
			return "ES512", nil
		}
	}
	return "", fmt.Errorf("a %T key: want RSA or ECDSA (P-256, P-384, P-521)", key)
}
