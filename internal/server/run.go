package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/gctune"
	"github.com/mcpguard/mcpguard/internal/oauthproxy"
	"github.com/mcpguard/mcpguard/internal/policy"
)

// NewLogger is the server's logger as LOG_LEVEL and LOG_FORMAT ask, writing to w.
func NewLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	switch cfg.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Run is `mcpguard serve` once its configuration is read: the embedded dev
// identity provider (DEV_IDP), the server New builds with opts, the policy
// following its source (POLICY_WATCH, SIGHUP), the collector tuned
// (GC_HEADROOM), then stdio or HTTP until ctx ends and a graceful shutdown
// (see Server.Serve). It lives here, not in cmd/mcpguard, so that the load
// harness's guarded server (test/load/guardlist) serves through the very
// same path with tools of its own.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	logger := opts.Logger

	if cfg.Dev.Enabled {
		shutdown, err := startDevIDP(cfg, logger)
		if err != nil {
			return err
		}
		defer shutdown()
	}

	srv, err := New(ctx, cfg, opts)
	if err != nil {
		return err
	}
	defer closeServer(srv, logger)
	stopPolicyOps, err := startPolicyOps(ctx, srv.Engine(), cfg, logger)
	if err != nil {
		return err
	}
	defer stopPolicyOps()
	// The policy is compiled and the tools registered: the live heap the
	// collector's headroom is set from.
	gctune.Start(ctx, cfg.GCHeadroom)
	if cfg.Transport == config.TransportStdio {
		logger.Info("serving MCP on stdio", "policy_dir", cfg.PolicyDir, "auth", cfg.EnableAuth)
		if err := srv.RunStdio(ctx); err != nil && (ctx.Err() == nil || !errors.Is(err, context.Canceled)) {
			return err
		}
		return nil
	}
	ln, err := net.Listen("tcp", cfg.Addr())
	if err != nil {
		return err
	}
	var mln net.Listener
	metricsAddr := "off"
	if cfg.MetricsAddr != "" {
		if mln, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			_ = ln.Close()
			return fmt.Errorf("METRICS_ADDR: %w", err)
		}
		metricsAddr = mln.Addr().String()
	}
	logger.Info("mcpguard listening", "addr", ln.Addr().String(), "endpoint", cfg.ResourceURL(), "transport", cfg.Transport,
		"stateless", cfg.Stateless, "auth", cfg.EnableAuth, "role_source", cfg.RoleSource, "policy_dir", cfg.PolicyDir, "dev_idp", cfg.Dev.Enabled,
		"oauth_proxy", cfg.OAuthProxy.Enabled, "metrics", metricsAddr, "traces", tracesTo(cfg))
	if err := srv.Serve(ctx, ln, mln); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// tracesTo says where spans go: the OTLP endpoint (it holds no credential:
// config refuses one), or off.
func tracesTo(cfg *config.Config) string {
	if cfg.Tracing.Endpoint == "" {
		return "off"
	}
	return cfg.Tracing.Endpoint
}

// closeServer sends the traces still batched and closes what the server
// opened, within a bound of its own: the shutdown may have spent
// SHUTDOWN_TIMEOUT already.
func closeServer(srv *Server, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		logger.Warn("closing the server", "error", err)
	}
}

// startDevIDP serves the embedded Entra-shaped issuer on its loopback address.
func startDevIDP(cfg *config.Config, logger *slog.Logger) (func(), error) {
	key, err := devidp.LoadOrCreateKey(cfg.Dev.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("DEV_IDP_KEY_FILE: %w", err)
	}
	iss, err := devidp.New(cfg.Azure.AuthorityHost, cfg.Azure.TenantID, key)
	if err != nil {
		return nil, err
	}
	if cfg.OAuthProxy.Enabled {
		// The OAuth proxy signs users in here as it would at Entra: as the
		// API application, with its secret, back to its callback; the users
		// are the development roles file's.
		iss.RegisterClient(devidp.Client{ID: cfg.Azure.ClientID, Secret: cfg.Azure.ClientSecret,
			RedirectURIs: []string{cfg.Azure.BaseURL + oauthproxy.PathCallback}, AppIDURI: cfg.Azure.AppIDURI})
		for _, name := range []string{"alice", "bob"} {
			iss.AddUser(devidp.User{Name: name})
		}
	}
	ln, err := net.Listen("tcp", cfg.Dev.Addr)
	if err != nil {
		return nil, fmt.Errorf("DEV_IDP_ADDR: %w", err)
	}
	hs := &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	logger.Warn("development identity provider running: never use in production",
		"issuer", iss.IssuerURL(cfg.Azure.TenantID), "tenant", cfg.Azure.TenantID, "audience", cfg.Azure.ClientID,
		"get_a_token", "go run ./cmd/mcpguard token --dev --user alice --roles data_reader")
	return func() { _ = hs.Close() }, nil
}

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
