package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/policy"
)

// startPolicyOps makes the served policy follow its source while the server
// runs: POLICY_DIR is watched (POLICY_WATCH), and SIGHUP reloads it (with
// bundles: downloads them now). Each change is checked and swapped in by the
// engine, or refused with the last good policy left in force. stop ends both
// and closes the engine, which hands the decision logs still queued to OPA's
// plugin, within SHUTDOWN_TIMEOUT.
func startPolicyOps(ctx context.Context, eng *policy.Engine, cfg *config.Config, logger *slog.Logger) (stop func(), err error) {
	if cfg.PolicyOps.Watch {
		if err := eng.Watch(); err != nil {
			return nil, fmt.Errorf("POLICY_WATCH: %w (set POLICY_WATCH=false and reload with SIGHUP)", err)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				// A refusal is logged, with its file and line, and
				// counted by the engine.
				if err := eng.Reload(ctx); err == nil {
					logger.Info("SIGHUP: policy reloaded", "revision", eng.Status().Revision)
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		cctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
		defer cancel()
		eng.Close(cctx)
	}, nil
}
