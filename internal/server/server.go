// Package server wires mcpguard together: it serves MCP over Streamable HTTP,
// legacy SSE or stdio, authenticates each HTTP request (authn), resolves the
// caller's roles (exchange), puts every MCP request before the policy engine
// (policy) and hands allowed ones to the handlers in tools/.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/mcpguard/mcpguard/internal/authn"
	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/oauthproxy"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/store"
	"github.com/mcpguard/mcpguard/tools"
)

// Version is the server's version, set at build time.
var Version = "dev"

// Server is one mcpguard instance.
type Server struct {
	cfg       *config.Config
	logger    *slog.Logger
	engine    *policy.Engine
	verifier  *authn.Verifier // nil when ENABLE_AUTH=false
	roles     exchange.Source
	mcp       *mcp.Server
	catalog   *catalog
	metrics   *metrics
	transport string

	// readiness answers /readyz; redisPing, when Redis is configured, is
	// the client its check pings.
	readiness *readiness
	redisPing *store.Redis
	// tracer opens a span per MCP request; nil when tracing is off.
	// traces is the pipeline this server built, flushed by Close.
	tracer trace.Tracer
	traces *sdktrace.TracerProvider

	// proxy is the OAuth façade interactive clients log in through; nil
	// unless OAUTH_PROXY=true.
	proxy authorizationServer

	anonymous *principal
	linted    chan struct{}
	// stdioToken authenticates the stdio transport's one caller.
	stdioToken string
	// now is the clock of the expiry decisions made here (a caller's roles,
	// the list cache); nil is time.Now. Tests set a clock they move.
	now func() time.Time
	// inputSeen, when set, is shown each input document before the engine
	// evaluates query on it: tests compare it with docs/POLICIES.md.
	inputSeen func(query string, in *policy.Input)
}

// observe hands in to inputSeen, if a test set it.
func (s *Server) observe(query string, in *policy.Input) {
	if s.inputSeen != nil {
		s.inputSeen(query, in)
	}
}

// clock reads the server's clock.
func (s *Server) clock() time.Time {
	if s.now == nil {
		return time.Now()
	}
	return s.now()
}

// Options are the parts New does not build from the configuration itself.
type Options struct {
	Logger *slog.Logger
	// Register adds the tools, resources and prompts; tools.Register by default.
	Register func(*mcp.Server)
	// Roles overrides the role source chosen by the configuration.
	Roles exchange.Source
	// OAuthProxy, when set, adjusts the OAuth proxy's configuration before
	// the proxy is built (OAUTH_PROXY=true): tests let it fetch client
	// metadata documents from a loopback server they trust.
	OAuthProxy func(*oauthproxy.Config)
	// Tracer, when set, receives the spans instead of the OTLP exporter
	// OTEL_EXPORTER_OTLP_ENDPOINT names (tests record them).
	Tracer trace.TracerProvider
}

// New builds a server from a validated configuration. A policy that does not
// compile, an unreadable roles file or a bad Entra setting is an error here.
func New(ctx context.Context, cfg *config.Config, opts Options) (_ *Server, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Register == nil {
		opts.Register = tools.Register
	}
	s := &Server{cfg: cfg, logger: opts.Logger, transport: cfg.Transport, stdioToken: cfg.StdioAccessToken}

	eopts, err := engineOptions(cfg, opts.Logger)
	if err != nil {
		return nil, err
	}
	engine, err := policy.New(ctx, cfg.PolicyDir, eopts...)
	if err != nil {
		return nil, err
	}
	s.engine = engine
	// A start that fails from here on stops what the engine started (its
	// decision-log goroutine, OPA's plugins).
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			engine.Close(cctx)
		}
	}()
	if cfg.ListCacheTTL > 0 {
		s.logger.Warn("LIST_CACHE_TTL is deprecated and ignored: lists are reused by the policy engine while the policy is in force, when the policy shows they depend on the caller alone")
	}

	if cfg.EnableAuth {
		aud := []string{cfg.Azure.ClientID}
		if cfg.Azure.AppIDURI != "" && cfg.Azure.AppIDURI != cfg.Azure.ClientID {
			aud = append(aud, cfg.Azure.AppIDURI)
		}
		s.verifier, err = authn.NewVerifier(authn.Config{
			AuthorityHost:  cfg.Azure.AuthorityHost,
			TenantID:       cfg.Azure.TenantID,
			AllowedTenants: cfg.Azure.AllowedTenants,
			Audiences:      aud,
			RequiredScopes: cfg.Azure.RequiredScopes,
			AcceptV1:       cfg.Azure.AcceptV1,
			ClockSkew:      cfg.Azure.ClockSkew,
		})
		if err != nil {
			return nil, err
		}
	}
	if cfg.OAuthProxy.Enabled {
		st, err := proxyStore(cfg, opts.Logger)
		if err != nil {
			return nil, err
		}
		if s.proxy, err = newAuthorizationServer(ctx, cfg, st, proxySigningKey(cfg, opts.Logger), opts); err != nil {
			return nil, err
		}
	}

	s.metrics = newMetrics()
	s.roles = opts.Roles
	if s.roles == nil {
		if s.roles, err = roleSource(cfg, opts.Logger, s.metrics.exchanged); err != nil {
			return nil, err
		}
	}

	if c, ok := s.proxy.(interface{ Collector() prometheus.Collector }); ok {
		s.metrics.registry.MustRegister(c.Collector())
	}
	if kc, ok := s.roles.(*exchange.Keycloak); ok {
		s.metrics.watchKeycloak(kc)
	}
	if s.verifier != nil {
		s.metrics.watchVerifier(s.verifier)
	}
	s.metrics.registry.MustRegister(newPolicyCollector(s.engine))
	if cfg.Redis.URL != "" || cfg.Redis.Host != "" {
		if s.redisPing, err = store.NewRedis(redisOptions(cfg, "")); err != nil {
			return nil, err
		}
	}
	s.readiness = newReadiness(s.engine, s.readinessChecks(), opts.Logger)
	// From here on a failed start closes what it opened: the Redis client
	// of the readiness check, the trace exporter.
	fail := func(err error) (*Server, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.Close(cctx)
		return nil, err
	}
	if err := s.startTracing(ctx, opts.Tracer); err != nil {
		return fail(err)
	}

	s.mcp = mcp.NewServer(&mcp.Implementation{Name: cfg.ServerName, Version: Version}, s.serverOptions())
	opts.Register(s.mcp)
	if s.catalog, err = readCatalog(ctx, s.mcp); err != nil {
		return fail(fmt.Errorf("reading the registered tools: %w", err))
	}
	s.metrics.registerTools(s.catalog.toolNames())
	s.mcp.AddReceivingMiddleware(s.authorizer())
	s.anonymous = s.newPrincipal(ctx, authn.Anonymous, "")

	// The lint partially evaluates the policy once per registered item: with
	// a large catalog that takes a while, so it reports in the background,
	// unless POLICY_STRICT=true makes its findings refuse the start.
	s.linted = make(chan struct{})
	if cfg.PolicyStrict {
		err := s.strictLint(ctx)
		close(s.linted)
		if err != nil {
			return fail(err)
		}
		return s, nil
	}
	go func() {
		defer close(s.linted)
		s.lint(context.WithoutCancel(ctx))
	}()
	return s, nil
}

func (s *Server) serverOptions() *mcp.ServerOptions {
	return &mcp.ServerOptions{
		Logger: quieter(s.logger),
		// Lists are paged after filtering (see list): the SDK hands over all.
		PageSize: wholeList,
		// Lists are filtered per caller: never let them be cached as public.
		SetCacheable: func(_ context.Context, _ mcp.Request, c *mcp.Cacheable) {
			c.CacheScope = "private"
			c.TTLMs = 0
		},
	}
}

// wholeList is a page size no catalog reaches.
const wholeList = 1 << 30

// roleCache is where exchanged roles are kept: in memory, or in Redis with
// memory standing in while Redis is down; sealed with STORAGE_ENCRYPTION_KEY
// whenever a key is set (always, with Redis).
func roleCache(cfg *config.Config, logger *slog.Logger) (store.Store, error) {
	var st store.Store = store.NewMemory(0)
	if cfg.Redis.URL != "" || cfg.Redis.Host != "" {
		r, err := store.NewRedis(redisOptions(cfg, "mcpguard:"))
		if err != nil {
			return nil, err
		}
		st = store.NewFallback(r, st, logger)
	}
	if cfg.StorageEncryptionKey == "" {
		return st, nil
	}
	keys, err := store.ParseKeys(cfg.StorageEncryptionKey)
	if err != nil {
		return nil, fmt.Errorf("STORAGE_ENCRYPTION_KEY: %w", err)
	}
	return store.NewEncrypted(st, keys)
}

// redisOptions locate the configured Redis: REDIS_URL, or REDIS_HOST (one
// host, or several: a Cluster) with REDIS_PORT; keys get prefix.
func redisOptions(cfg *config.Config, prefix string) store.RedisOptions {
	var addrs []string
	if cfg.Redis.Host != "" {
		for _, h := range strings.Split(cfg.Redis.Host, ",") {
			addrs = append(addrs, net.JoinHostPort(strings.TrimSpace(h), strconv.Itoa(cfg.Redis.Port)))
		}
	}
	return store.RedisOptions{URL: cfg.Redis.URL, Addrs: addrs, Password: cfg.Redis.Password, Prefix: prefix}
}

// quieter passes the SDK's records on at warning level and above only: its
// per-session info lines are noise beside the server's own, unless debugging.
func quieter(l *slog.Logger) *slog.Logger {
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return l
	}
	return slog.New(minLevel{l.Handler(), slog.LevelWarn})
}

type minLevel struct {
	slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.Handler.Enabled(ctx, l)
}

// roleSource builds the configured role source; onExchange, when set, is
// told of each request to Keycloak (metrics).
func roleSource(cfg *config.Config, logger *slog.Logger, onExchange func(time.Duration, error)) (exchange.Source, error) {
	tenants := exchange.NewAppRoleTenants(cfg.Azure.TenantID, cfg.Azure.AppRoleTenants)
	switch cfg.RoleSource {
	case config.RoleSourceToken:
		return exchange.TokenRoles{Tenants: tenants}, nil
	case config.RoleSourceStatic:
		if cfg.RolesFile == "" && cfg.Dev.Enabled {
			return exchange.ParseStaticRoles(devidp.RolesJSON, tenants)
		}
		return exchange.LoadStaticRoles(cfg.RolesFile, tenants)
	case config.RoleSourceKeycloak:
		cache, err := roleCache(cfg, logger)
		if err != nil {
			return nil, err
		}
		return exchange.NewKeycloak(exchange.KeycloakConfig{
			ServerURL: cfg.Keycloak.ServerURL, Realm: cfg.Keycloak.Realm,
			ClientID: cfg.Keycloak.ClientID, ClientSecret: cfg.Keycloak.ClientSecret,
			IDPAlias: cfg.Keycloak.IDPAlias, Grant: cfg.Keycloak.Grant,
			Audience: cfg.Keycloak.Audience, Scope: cfg.Keycloak.Scope, ClientAuth: cfg.Keycloak.ClientAuth,
			SubjectClaim: cfg.Keycloak.SubjectClaim, OnExchange: onExchange,
		}, cache, logger)
	}
	return nil, fmt.Errorf("ROLE_SOURCE=%q is unknown", cfg.RoleSource)
}

// Linted is closed when the start-up policy lint has finished.
func (s *Server) Linted() <-chan struct{} { return s.linted }

// Engine is the policy engine.
func (s *Server) Engine() *policy.Engine { return s.engine }

// defaultPrincipal is the caller of a request that carries no token: the
// stdio user (authenticated by STDIO_ACCESS_TOKEN when set) or anonymous.
func (s *Server) defaultPrincipal() *principal {
	if s.stdioToken != "" && s.verifier != nil && s.transport == config.TransportStdio {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		id, err := s.verifier.Verify(ctx, s.stdioToken)
		if err != nil {
			s.logger.Warn("STDIO_ACCESS_TOKEN rejected; the caller is anonymous", "error", err)
			return s.anonymous
		}
		return s.resolve(ctx, id, s.stdioToken)
	}
	return s.anonymous
}

// Close releases what New opened for the server's life: it closes the
// policy engine (its queued decision logs handed to OPA's plugin, its
// plugins stopped; it still decides), sends the spans still batched (within
// ctx) and closes the readiness check's Redis client.
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	// The engine hands its queued decision logs on; it keeps deciding.
	s.engine.Close(ctx)
	if s.traces != nil {
		if err := s.traces.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("sending the last traces: %w", err))
		}
	}
	if s.redisPing != nil {
		errs = append(errs, s.redisPing.Close())
	}
	return errors.Join(errs...)
}

// RunStdio serves MCP on standard input and output until ctx ends.
func (s *Server) RunStdio(ctx context.Context) error {
	return s.mcp.Run(ctx, &mcp.StdioTransport{})
}
