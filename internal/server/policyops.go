package server

import (
	"log/slog"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/policy"
)

// engineOptions are the policy engine's options of the configuration: the
// evaluation bound, and OPA's management plane (bundles, decision logs,
// status) when OPA_CONFIG, POLICY_BUNDLE_URL or DECISION_LOGS ask for it.
// Watching POLICY_DIR is started by the serve command (Engine.Watch), not
// here: a server built for a command or a test watches nothing.
func engineOptions(cfg *config.Config, logger *slog.Logger) ([]policy.Option, error) {
	opts := []policy.Option{policy.WithTimeout(cfg.PolicyTimeout), policy.WithLogger(logger)}
	if !cfg.DecisionReuse {
		opts = append(opts, policy.WithoutDecisionReuse())
	}
	p := cfg.PolicyOps
	raw, err := policy.OPASettings{
		ConfigFile:          p.OPAConfig,
		BundleURL:           p.BundleURL,
		BundlePublicKey:     p.BundlePublicKey,
		PersistDir:          p.PersistDir,
		ConsoleDecisionLogs: p.DecisionLogs == "console",
	}.Config()
	if err != nil {
		return nil, err
	}
	if raw != nil {
		opts = append(opts, policy.WithManagement(policy.Management{Config: raw}))
	}
	return opts, nil
}
