// Package config reads mcpguard's configuration once, from flags, the
// environment and a .env file (in that order of precedence), validates all of
// it at once and hands typed structs to the rest of the program.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mcpguard/mcpguard/internal/oauthproxy"
	"github.com/mcpguard/mcpguard/internal/store"
)

// Transports the server can speak.
const (
	TransportHTTP  = "http"
	TransportSSE   = "sse"
	TransportStdio = "stdio"
)

// Role sources: where the caller's roles come from.
const (
	RoleSourceKeycloak = "keycloak"
	RoleSourceStatic   = "static"
	RoleSourceToken    = "token"
)

// DefaultAuthorityHost is Entra ID's public-cloud authority.
const DefaultAuthorityHost = "https://login.microsoftonline.com"

// DevTenantID and DevClientID identify the embedded development identity
// provider's tenant and API application. They are fixed so that tokens minted
// by `mcpguard token --dev` in another process match the running server.
const (
	DevTenantID = "00000000-0000-4000-8000-00000000d3e0"
	DevClientID = "00000000-0000-4000-8000-0000000c11e7"
	// DevClientSecret is the API application's secret at the dev identity
	// provider: the default AZURE_CLIENT_SECRET with DEV_IDP=true, so that
	// the OAuth proxy's upstream leg runs with no cloud account.
	DevClientSecret = "mcpguard-dev-client-secret"
)

// Config is the whole, validated configuration.
type Config struct {
	ServerName  string
	Environment string
	Debug       bool
	Host        string
	Port        int
	Transport   string
	Stateless   bool
	LogLevel    string
	LogFormat   string

	// MaxRequestBytes bounds an HTTP request body.
	MaxRequestBytes int64
	// AllowedOrigins are browser origins allowed besides same-origin requests.
	AllowedOrigins []string
	// HTTP bounds what a connection may hold of the HTTP listener.
	HTTP HTTP
	// MetricsAddr is the listen address of /metrics; empty: not served.
	MetricsAddr string
	// Pprof serves Go's profiles (net/http/pprof) on the metrics listener.
	Pprof bool
	// GCHeadroom is the least the heap may grow by between collections
	// (internal/gctune); 0 leaves GOGC alone.
	GCHeadroom uint64
	// Tracing sends a span per MCP request to an OpenTelemetry collector.
	Tracing Tracing

	EnableAuth bool
	// StdioAccessToken authenticates the stdio transport's one caller.
	StdioAccessToken string
	Azure            Azure
	Dev              Dev

	PolicyDir     string
	PolicyTimeout time.Duration
	// PolicyStrict refuses to start when the policy lint finds anything
	// (`mcpguard policy lint`): a rule or data file the server never reads,
	// a veto that always fires, a tool no rule allows, an unknown role.
	PolicyStrict bool
	// PolicyOps says how the policy in force changes while the server
	// runs: folder reloads, OPA bundles, decision logs.
	PolicyOps PolicyOps
	// ListCacheTTL is deprecated and ignored (read so that a setting left
	// in place still starts): the engine reuses a caller's list while the
	// policy is in force, when the policy shows it may (docs/POLICIES.md).
	ListCacheTTL time.Duration
	// DecisionReuse lets the policy engine reuse a decision (a call's, a
	// list's) that its analysis shows depends on the caller alone.
	DecisionReuse bool
	// ListPageSize is how many items one page of a filtered list holds.
	ListPageSize int
	// DenialDetail shows authenticated callers the policy's reasons for a
	// denial; otherwise they get a generic message and the decision id.
	// Logs keep the reasons either way.
	DenialDetail bool
	// Sessions bounds the MCP sessions and event streams a user may hold.
	Sessions Sessions

	RoleSource string
	RolesFile  string

	EnableKeycloak bool
	Keycloak       Keycloak

	JWTSigningKey        string
	StorageEncryptionKey string
	Redis                Redis

	// OAuthProxy is the authorization server façade interactive clients log
	// in through (OAUTH_PROXY).
	OAuthProxy OAuthProxy
}

// OAuthProxy configures the OAuth 2.1 authorization server that mcpguard
// puts in front of Entra ID for clients that log users in (dynamic
// registration or client ID metadata documents, consent, PKCE), since Entra
// offers neither and refuses the resource parameter MCP clients send.
type OAuthProxy struct {
	Enabled bool
	// RedirectHosts are the hosts an https redirect URI may name (a host
	// name in lower case, or host:port); loopback redirect URIs are always
	// allowed, any other is refused.
	RedirectHosts []string
	// AccessTokenTTL is the lifetime of the access tokens the façade issues.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL: a refresh token unused this long expires.
	RefreshTokenTTL time.Duration
	// SessionTTL bounds one sign-in: its refresh tokens last at most this
	// long from the login, however often they are used.
	SessionTTL time.Duration
	// RateLimit is how many registrations and authorization requests one
	// client address may make a minute; 0: no limit.
	RateLimit int
}

// HTTP bounds the connections of the HTTP transports, so that a client that
// sends slowly or not at all cannot hold them; streams are not bounded.
type HTTP struct {
	// ReadHeaderTimeout bounds the reading of a request's headers.
	ReadHeaderTimeout time.Duration
	// BodyTimeout bounds the reading of a request's body; it is lifted once
	// the body is read, so that an answer may stream for as long as it needs.
	BodyTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no next request.
	IdleTimeout time.Duration
	// MaxConnections caps the connections open at once; more wait to be accepted.
	MaxConnections int
	// ShutdownTimeout is how long requests in flight may finish at shutdown.
	ShutdownTimeout time.Duration
}

// PolicyOps configures OPA's management plane and the reloads of POLICY_DIR.
type PolicyOps struct {
	// Watch reloads POLICY_DIR when its files change (POLICY_WATCH).
	Watch bool
	// OPAConfig is an OPA configuration file: services, bundles and their
	// signing keys, decision_logs, status (OPA_CONFIG).
	OPAConfig string
	// BundleURL is the shortcut for one signed, persisted bundle
	// (POLICY_BUNDLE_URL); BundlePublicKey is the PEM file of the key that
	// verifies it (POLICY_BUNDLE_PUBLIC_KEY); PersistDir is where the last
	// good bundle is kept (POLICY_PERSIST_DIR).
	BundleURL       string
	BundlePublicKey string
	PersistDir      string
	// DecisionLogs is "console" to print every decision on OPA's console
	// decision log, or "off" (DECISION_LOGS); OPA_CONFIG's decision_logs
	// section configures remote services.
	DecisionLogs string
}

// Tracing configures the OpenTelemetry traces: off unless Endpoint is set.
type Tracing struct {
	// Endpoint is the OTLP collector's URL (OTEL_EXPORTER_OTLP_ENDPOINT).
	Endpoint string
	// Protocol is http/protobuf or grpc (OTEL_EXPORTER_OTLP_PROTOCOL).
	Protocol string
	// SampleRatio is the share of requests traced, from 0 to 1
	// (OTEL_TRACES_SAMPLER_ARG); a caller's own sampling flag is not obeyed.
	SampleRatio float64
}

// Azure is the Entra ID resource-server configuration.
type Azure struct {
	ClientID       string
	ClientSecret   string
	TenantID       string
	AllowedTenants []string
	// AppRoleTenants are tenants, besides a home AZURE_TENANT_ID, whose app
	// roles the token and static role sources trust.
	AppRoleTenants []string
	AuthorityHost  string
	AppIDURI       string
	BaseURL        string
	RequiredScopes []string
	AcceptV1       bool
	ClockSkew      time.Duration
}

// Dev configures the embedded Entra-shaped identity provider used by `make run`.
type Dev struct {
	Enabled bool
	Addr    string
	KeyFile string
}

// Sessions bounds what one user (tenant and object id) may keep open, so
// that no caller, with roles or without, can fill the server's memory.
type Sessions struct {
	// IdleTimeout closes a Streamable HTTP session that receives no request for this long.
	IdleTimeout time.Duration
	// MaxPerUser caps one user's live Streamable HTTP sessions.
	MaxPerUser int
	// MaxStreamsPerUser caps one user's open event streams: legacy SSE
	// sessions and Streamable HTTP GET streams.
	MaxStreamsPerUser int
}

// Keycloak configures the role source that exchanges Entra tokens at Keycloak.
type Keycloak struct {
	ServerURL    string
	Realm        string
	ClientID     string
	ClientSecret string
	IDPAlias     string
	Grant        string
	Audience     string
	Scope        string
	// ClientAuth is how the client authenticates: basic or post.
	ClientAuth string
	// SubjectClaim names the Keycloak token claim that must carry the
	// caller's Entra object id; empty: not checked.
	SubjectClaim string
}

// Redis locates the shared store.
type Redis struct {
	URL      string
	Host     string
	Port     int
	Password string
}

// Source is a lookup of configuration values by their variable name.
type Source func(name string) (string, bool)

// Load builds the configuration from command-line args (--port=8000 or
// --port 8000 set PORT), the process environment and the .env file in the
// working directory (or ENV_FILE). Args that are not flags are returned.
// STDIO_ACCESS_TOKEN is read from the environment only; a flag or .env entry
// for it is an error.
func Load(args []string) (*Config, []string, error) {
	flags, rest, err := parseFlags(args)
	if err != nil {
		return nil, nil, err
	}
	envFile := ".env"
	if v, ok := flags["ENV_FILE"]; ok {
		envFile = v
	} else if v, ok := os.LookupEnv("ENV_FILE"); ok {
		envFile = v
	}
	dotenv, err := ReadDotEnv(envFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	// A token in a flag is visible to every user of the machine (ps), and one
	// in a file is a token stored in plain text: the process environment only.
	var misplaced []error
	if _, ok := flags[stdioTokenVar]; ok {
		misplaced = append(misplaced, fmt.Errorf("%s: must come from the process environment, not a flag (flags are visible in ps)", stdioTokenVar))
	}
	if _, ok := dotenv[stdioTokenVar]; ok {
		misplaced = append(misplaced, fmt.Errorf("%s: must come from the process environment, not %s (a token must not be stored in a file)", stdioTokenVar, envFile))
	}
	// read records every setting FromSource asks for: a flag it never asks
	// for is a typo (--polcy-dir) that would otherwise be ignored.
	read := map[string]bool{"ENV_FILE": true}
	src := func(name string) (string, bool) {
		read[name] = true
		if name == stdioTokenVar {
			return os.LookupEnv(name)
		}
		if v, ok := flags[name]; ok {
			return v, true
		}
		if v, ok := os.LookupEnv(name); ok {
			return v, true
		}
		v, ok := dotenv[name]
		return v, ok
	}
	cfg, err := FromSource(src)
	var unknown []string
	for name := range flags {
		if !read[name] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range unknown {
		misplaced = append(misplaced, fmt.Errorf("--%s: %w (flags are the settings of docs/CONFIGURATION.md, e.g. --policy-dir for POLICY_DIR)",
			strings.ToLower(strings.ReplaceAll(name, "_", "-")), ErrUnknownFlag))
	}
	if len(misplaced) > 0 {
		var ce *Error
		if errors.As(err, &ce) {
			ce.Problems = append(misplaced, ce.Problems...)
			return nil, rest, ce
		}
		return nil, rest, &Error{Problems: misplaced}
	}
	return cfg, rest, err
}

// stdioTokenVar is read from the process environment only.
const stdioTokenVar = "STDIO_ACCESS_TOKEN"

// ErrUnknownFlag is the problem of a flag that names no setting.
var ErrUnknownFlag = errors.New("unknown flag: no such setting")

// parseFlags turns --some-name=value into SOME_NAME=value.
func parseFlags(args []string) (map[string]string, []string, error) {
	flags := map[string]string{}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") || a == "--" {
			rest = append(rest, a)
			continue
		}
		name, value, hasValue := strings.Cut(a[2:], "=")
		if !hasValue {
			if i+1 >= len(args) || strings.HasPrefix(args[i+1], "--") {
				value = "true" // a bare boolean flag
			} else {
				i++
				value = args[i]
			}
		}
		flags[strings.ToUpper(strings.ReplaceAll(name, "-", "_"))] = value
	}
	return flags, rest, nil
}

// ReadDotEnv reads KEY=VALUE lines; # starts a comment; values may be quoted.
func ReadDotEnv(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected KEY=VALUE", path, n+1)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		} else if i := strings.Index(v, " #"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		out[k] = v
	}
	return out, nil
}

// reader collects every problem so that they are reported together.
type reader struct {
	src  Source
	errs []error
}

func (r *reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

func (r *reader) str(name, def string) string {
	if v, ok := r.src(name); ok {
		return strings.TrimSpace(v)
	}
	return def
}

func (r *reader) boolean(name string, def bool) bool {
	v, ok := r.src(name)
	if !ok || strings.TrimSpace(v) == "" {
		return def
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		r.fail(name, "%q is not a boolean (true or false)", v)
		return def
	}
	return b
}

func (r *reader) integer(name string, def, min, max int64) int64 {
	v, ok := r.src(name)
	if !ok || strings.TrimSpace(v) == "" {
		return def
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < min || n > max {
		r.fail(name, "%q is not a whole number from %d to %d", v, min, max)
		return def
	}
	return n
}

func (r *reader) duration(name string, def time.Duration) time.Duration {
	v, ok := r.src(name)
	if !ok || strings.TrimSpace(v) == "" {
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d < 0 {
		r.fail(name, "%q is not a duration such as 250ms or 30s", v)
		return def
	}
	return d
}

func (r *reader) oneOf(name, def string, allowed ...string) string {
	v := strings.ToLower(r.str(name, def))
	if !slices.Contains(allowed, v) {
		r.fail(name, "%q is not one of %s", v, strings.Join(allowed, ", "))
		return def
	}
	return v
}

func (r *reader) list(name, def string) []string {
	var out []string
	for _, s := range strings.FieldsFunc(r.str(name, def), func(c rune) bool { return c == ',' || c == ' ' }) {
		out = append(out, s)
	}
	return out
}

// FromSource builds and validates a Config from a lookup function.
func FromSource(src Source) (*Config, error) {
	r := &reader{src: src}
	c := &Config{
		ServerName:       r.str("SERVER_NAME", "mcpguard"),
		Environment:      r.oneOf("ENVIRONMENT", "production", "development", "staging", "production"),
		Debug:            r.boolean("DEBUG", false),
		Host:             r.str("HOST", "0.0.0.0"),
		Port:             int(r.integer("PORT", 8000, 0, 65535)),
		Transport:        r.oneOf("TRANSPORT", TransportHTTP, TransportHTTP, TransportSSE, TransportStdio),
		Stateless:        r.boolean("STATELESS", false),
		LogLevel:         r.oneOf("LOG_LEVEL", "info", "debug", "info", "warn", "warning", "error"),
		LogFormat:        r.oneOf("LOG_FORMAT", "json", "json", "text"),
		MaxRequestBytes:  r.integer("MAX_REQUEST_BYTES", 1<<20, 1024, 1<<30),
		AllowedOrigins:   r.list("ALLOWED_ORIGINS", ""),
		EnableAuth:       r.boolean("ENABLE_AUTH", true),
		StdioAccessToken: r.str(stdioTokenVar, ""),
		PolicyDir:        r.str("POLICY_DIR", "policies"),
		PolicyTimeout:    r.duration("POLICY_TIMEOUT", 100*time.Millisecond),
		ListCacheTTL:     r.duration("LIST_CACHE_TTL", 0),
		DecisionReuse:    r.boolean("DECISION_REUSE", true),
		RolesFile:        r.str("ROLES_FILE", ""),

		JWTSigningKey:        r.str("JWT_SIGNING_KEY", ""),
		StorageEncryptionKey: r.str("STORAGE_ENCRYPTION_KEY", ""),
		EnableKeycloak:       r.boolean("ENABLE_KEYCLOAK", false),
	}
	if c.Debug && c.LogLevel == "info" {
		c.LogLevel = "debug"
	}
	c.ListPageSize = int(r.integer("LIST_PAGE_SIZE", 1000, 1, 1<<20))
	// Reasons name roles and rules: an oracle for a prober. Shown by default
	// only where the caller is the developer.
	c.DenialDetail = r.boolean("DENIAL_DETAIL", c.Environment == "development")
	// A policy that silently does not mean what it says fails open somewhere
	// (a veto in the wrong package never refuses): in production, refuse to
	// start on it rather than serve it.
	c.PolicyStrict = r.boolean("POLICY_STRICT", c.Environment == "production")
	c.PolicyOps = PolicyOps{
		Watch:           r.boolean("POLICY_WATCH", true),
		OPAConfig:       r.str("OPA_CONFIG", ""),
		BundleURL:       r.str("POLICY_BUNDLE_URL", ""),
		BundlePublicKey: r.str("POLICY_BUNDLE_PUBLIC_KEY", ""),
		PersistDir:      r.str("POLICY_PERSIST_DIR", ""),
		DecisionLogs:    r.oneOf("DECISION_LOGS", "off", "off", "console"),
	}
	c.HTTP = HTTP{
		ReadHeaderTimeout: r.duration("HTTP_READ_HEADER_TIMEOUT", 10*time.Second),
		BodyTimeout:       r.duration("HTTP_BODY_TIMEOUT", 30*time.Second),
		IdleTimeout:       r.duration("HTTP_IDLE_TIMEOUT", 60*time.Second),
		MaxConnections:    int(r.integer("HTTP_MAX_CONNECTIONS", 1024, 1, 1<<20)),
		ShutdownTimeout:   r.duration("SHUTDOWN_TIMEOUT", 10*time.Second),
	}
	// Metrics get a listener of their own, on loopback unless told otherwise:
	// they need no token, so they must not sit beside the MCP endpoint.
	c.MetricsAddr = r.str("METRICS_ADDR", "127.0.0.1:9464")
	if strings.EqualFold(c.MetricsAddr, "off") {
		c.MetricsAddr = ""
	}
	c.Pprof = r.boolean("PPROF", false)
	c.GCHeadroom = uint64(r.integer("GC_HEADROOM_MB", 32, 0, 1<<16)) << 20
	c.Tracing = Tracing{
		Endpoint: r.str("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
		Protocol: r.oneOf("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "http/protobuf", "grpc"),
	}
	if v := r.str("OTEL_TRACES_SAMPLER_ARG", "1"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			r.fail("OTEL_TRACES_SAMPLER_ARG", "%q is not a ratio from 0 to 1", v)
		}
		c.Tracing.SampleRatio = f
	} else {
		c.Tracing.SampleRatio = 1
	}
	c.Dev = Dev{
		Enabled: r.boolean("DEV_IDP", false),
		Addr:    r.str("DEV_IDP_ADDR", "127.0.0.1:8001"),
		KeyFile: r.str("DEV_IDP_KEY_FILE", ".mcpguard/dev-idp-key.pem"),
	}
	defTenant, defClient, defSecret := "", "", ""
	defAuthority := DefaultAuthorityHost
	if c.Dev.Enabled {
		defTenant, defClient, defSecret = DevTenantID, DevClientID, DevClientSecret
		defAuthority = "http://" + c.Dev.Addr
	}
	c.Azure = Azure{
		ClientID:       r.str("AZURE_CLIENT_ID", defClient),
		ClientSecret:   r.str("AZURE_CLIENT_SECRET", defSecret),
		TenantID:       r.str("AZURE_TENANT_ID", defTenant),
		AllowedTenants: r.list("AZURE_ALLOWED_TENANTS", ""),
		AppRoleTenants: r.list("AZURE_APP_ROLE_TENANTS", ""),
		AuthorityHost:  strings.TrimRight(r.str("AZURE_AUTHORITY_HOST", defAuthority), "/"),
		AppIDURI:       r.str("AZURE_APP_ID_URI", ""),
		BaseURL:        strings.TrimRight(r.str("AZURE_BASE_URL", ""), "/"),
		RequiredScopes: r.list("AZURE_REQUIRED_SCOPES", "read,write"),
		AcceptV1:       r.boolean("AZURE_ACCEPT_V1_TOKENS", false),
		ClockSkew:      r.duration("AZURE_CLOCK_SKEW", 2*time.Minute),
	}
	// Scopes are matched against scp, which holds short names: accept
	// api://…/read as read.
	for i, sc := range c.Azure.RequiredScopes {
		if strings.Contains(sc, "://") {
			c.Azure.RequiredScopes[i] = sc[strings.LastIndex(sc, "/")+1:]
		}
	}
	if c.Azure.AppIDURI == "" && c.Azure.ClientID != "" {
		c.Azure.AppIDURI = "api://" + c.Azure.ClientID
	}
	if c.Azure.BaseURL == "" {
		host := c.Host
		if host == "0.0.0.0" || host == "" || host == "::" {
			host = "localhost"
		}
		c.Azure.BaseURL = "http://" + net.JoinHostPort(host, strconv.Itoa(c.Port))
	}

	defSource := RoleSourceToken
	if c.EnableKeycloak {
		defSource = RoleSourceKeycloak
	} else if c.Dev.Enabled {
		defSource = RoleSourceStatic
	}
	c.RoleSource = r.oneOf("ROLE_SOURCE", defSource, RoleSourceKeycloak, RoleSourceStatic, RoleSourceToken)

	c.Keycloak = Keycloak{
		ServerURL:    strings.TrimRight(r.str("KEYCLOAK_SERVER_URL", ""), "/"),
		Realm:        r.str("KEYCLOAK_REALM", ""),
		ClientID:     r.str("KEYCLOAK_CLIENT_ID", ""),
		ClientSecret: r.str("KEYCLOAK_CLIENT_SECRET", ""),
		IDPAlias:     r.str("KEYCLOAK_IDP_ALIAS", "entra"),
		Grant:        r.oneOf("KEYCLOAK_GRANT", "token-exchange", "token-exchange", "jwt-bearer"),
		Audience:     r.str("KEYCLOAK_AUDIENCE", ""),
		Scope:        r.str("KEYCLOAK_SCOPE", ""),
		ClientAuth:   r.oneOf("KEYCLOAK_CLIENT_AUTH", "basic", "basic", "post"),
		SubjectClaim: r.str("KEYCLOAK_SUBJECT_CLAIM", ""),
	}
	c.Redis = Redis{
		URL:      r.str("REDIS_URL", ""),
		Host:     r.str("REDIS_HOST", ""),
		Port:     int(r.integer("REDIS_PORT", 6379, 1, 65535)),
		Password: r.str("REDIS_PASSWORD", ""),
	}
	c.Sessions = Sessions{
		IdleTimeout:       r.duration("SESSION_IDLE_TIMEOUT", 30*time.Minute),
		MaxPerUser:        int(r.integer("MAX_SESSIONS_PER_USER", 32, 1, 1<<20)),
		MaxStreamsPerUser: int(r.integer("MAX_STREAMS_PER_USER", 32, 1, 1<<20)),
	}
	c.OAuthProxy = OAuthProxy{
		Enabled:         r.boolean("OAUTH_PROXY", false),
		RedirectHosts:   r.list("OAUTH_REDIRECT_HOSTS", ""),
		AccessTokenTTL:  r.duration("OAUTH_ACCESS_TOKEN_TTL", 10*time.Minute),
		RefreshTokenTTL: r.duration("OAUTH_REFRESH_TOKEN_TTL", 14*24*time.Hour),
		SessionTTL:      r.duration("OAUTH_SESSION_TTL", 30*24*time.Hour),
		RateLimit:       int(r.integer("OAUTH_RATE_LIMIT", 60, 0, 100000)),
	}
	for i, h := range c.OAuthProxy.RedirectHosts {
		c.OAuthProxy.RedirectHosts[i] = strings.ToLower(h)
	}
	c.validate(r)
	c.validateOAuthProxy(r)
	if len(r.errs) > 0 {
		return nil, &Error{Problems: r.errs}
	}
	return c, nil
}

func (c *Config) validate(r *reader) {
	if c.EnableAuth {
		if c.Azure.ClientID == "" {
			r.fail("AZURE_CLIENT_ID", "required when ENABLE_AUTH=true (the API application's client id)")
		}
		if c.Azure.TenantID == "" {
			r.fail("AZURE_TENANT_ID", "required when ENABLE_AUTH=true (a tenant id, or organizations/common with AZURE_ALLOWED_TENANTS)")
		}
		switch strings.ToLower(c.Azure.TenantID) {
		case "common", "organizations", "consumers":
			if len(c.Azure.AllowedTenants) == 0 {
				r.fail("AZURE_ALLOWED_TENANTS", "required when AZURE_TENANT_ID=%s: list the tenant ids allowed to call", c.Azure.TenantID)
			}
		}
		if err := checkAuthority(c.Azure.AuthorityHost); err != nil {
			r.fail("AZURE_AUTHORITY_HOST", "%v", err)
		}
		accepted := append([]string{c.Azure.TenantID}, c.Azure.AllowedTenants...)
		for _, t := range c.Azure.AppRoleTenants {
			if !slices.ContainsFunc(accepted, func(a string) bool { return strings.EqualFold(a, t) }) {
				r.fail("AZURE_APP_ROLE_TENANTS", "%q is not an accepted tenant (AZURE_TENANT_ID or AZURE_ALLOWED_TENANTS)", t)
			}
		}
	}
	if u, err := url.Parse(c.Azure.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.fail("AZURE_BASE_URL", "%q is not an http(s) URL", c.Azure.BaseURL)
	} else if c.Environment == "production" && c.Transport != TransportStdio && u.Scheme != "https" {
		// Over stdio nothing is served at this URL.
		r.fail("AZURE_BASE_URL", "must be https in production")
	}
	if c.Dev.Enabled && c.Environment == "production" {
		r.fail("DEV_IDP", "the development identity provider cannot run with ENVIRONMENT=production")
	}
	if c.Dev.Enabled && c.Azure.AuthorityHost != "http://"+c.Dev.Addr {
		r.fail("AZURE_AUTHORITY_HOST", "must be left unset with DEV_IDP=true (the dev identity provider is the authority)")
	}
	if c.Dev.Enabled {
		if host, _, err := net.SplitHostPort(c.Dev.Addr); err != nil || !isLoopback(host) {
			r.fail("DEV_IDP_ADDR", "%q must be a loopback host:port", c.Dev.Addr)
		}
	}
	if c.PolicyDir == "" {
		r.fail("POLICY_DIR", "must name the folder of Rego policies")
	}
	checkPolicyOps(r, &c.PolicyOps)
	for _, t := range []struct {
		name string
		d    time.Duration
	}{
		{"HTTP_READ_HEADER_TIMEOUT", c.HTTP.ReadHeaderTimeout}, {"HTTP_BODY_TIMEOUT", c.HTTP.BodyTimeout}, {"HTTP_IDLE_TIMEOUT", c.HTTP.IdleTimeout},
	} {
		if t.d <= 0 {
			r.fail(t.name, "must be positive: without it a client that sends nothing holds its connection forever")
		}
	}
	if c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			r.fail("METRICS_ADDR", "%q is not a host:port (or off)", c.MetricsAddr)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			r.fail("METRICS_ADDR", "%q: the port must be a number from 0 to 65535", c.MetricsAddr)
		}
	}
	if c.Pprof && (c.MetricsAddr == "" || c.Transport == TransportStdio) {
		r.fail("PPROF", "profiles are served on the metrics listener: set METRICS_ADDR (and an HTTP transport)")
	}
	if c.HTTP.ShutdownTimeout < 0 {
		r.fail("SHUTDOWN_TIMEOUT", "must not be negative")
	}
	if e := c.Tracing.Endpoint; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			r.fail("OTEL_EXPORTER_OTLP_ENDPOINT", "must be an http(s) URL of the OTLP collector without credentials, such as http://otel-collector:4318")
		}
	}
	if c.PolicyTimeout <= 0 {
		r.fail("POLICY_TIMEOUT", "must be positive")
	}
	if c.Sessions.IdleTimeout <= 0 {
		r.fail("SESSION_IDLE_TIMEOUT", "must be positive: a session that never expires is held until the process exits")
	}
	if c.RoleSource == RoleSourceStatic && c.RolesFile == "" && !c.Dev.Enabled {
		r.fail("ROLES_FILE", "required when ROLE_SOURCE=static")
	}
	if c.RoleSource == RoleSourceKeycloak {
		for _, kv := range [][2]string{
			{"KEYCLOAK_SERVER_URL", c.Keycloak.ServerURL}, {"KEYCLOAK_REALM", c.Keycloak.Realm},
			{"KEYCLOAK_CLIENT_ID", c.Keycloak.ClientID}, {"KEYCLOAK_CLIENT_SECRET", c.Keycloak.ClientSecret},
		} {
			if kv[1] == "" {
				r.fail(kv[0], "required when ROLE_SOURCE=keycloak")
			}
		}
	}
	if (c.Redis.URL != "" || c.Redis.Host != "") && c.StorageEncryptionKey == "" {
		r.fail("STORAGE_ENCRYPTION_KEY", "required when Redis is configured: nothing is stored in Redis unencrypted")
	}
	if c.StorageEncryptionKey != "" {
		if _, err := store.ParseKeys(c.StorageEncryptionKey); err != nil {
			r.fail("STORAGE_ENCRYPTION_KEY", "%v (generate one with `mcpguard keys generate`)", err)
		}
	}
	if c.RoleSource == RoleSourceKeycloak && c.Keycloak.ServerURL != "" {
		if err := checkAuthority(c.Keycloak.ServerURL); err != nil {
			r.fail("KEYCLOAK_SERVER_URL", "%v", err)
		}
	}
	if c.Environment == "production" && c.Transport != TransportStdio && !c.EnableAuth {
		r.fail("ENABLE_AUTH", "cannot be false in production over %s", c.Transport)
	}
}

// validateOAuthProxy checks the façade's settings. Its tokens and what it
// keeps (upstream Entra tokens among them) must survive a restart and be
// shared by replicas, so outside development the keys are required; in
// development the server makes up keys for the process's life.
func (c *Config) validateOAuthProxy(r *reader) {
	p := c.OAuthProxy
	for _, h := range p.RedirectHosts {
		if err := checkRedirectHost(h); err != nil {
			r.fail("OAUTH_REDIRECT_HOSTS", "%v", err)
		}
	}
	if p.AccessTokenTTL < 5*time.Second || p.AccessTokenTTL > 24*time.Hour {
		r.fail("OAUTH_ACCESS_TOKEN_TTL", "%s is not from 5s to 24h", p.AccessTokenTTL)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"OAUTH_REFRESH_TOKEN_TTL", p.RefreshTokenTTL}, {"OAUTH_SESSION_TTL", p.SessionTTL}} {
		if d.v < time.Minute || d.v > 365*24*time.Hour {
			r.fail(d.name, "%s is not from 1m to 8760h (a year)", d.v)
		} else if d.v <= p.AccessTokenTTL {
			r.fail(d.name, "must be longer than OAUTH_ACCESS_TOKEN_TTL (%s)", p.AccessTokenTTL)
		}
	}
	if !p.Enabled {
		return
	}
	if !c.EnableAuth {
		r.fail("OAUTH_PROXY", "requires ENABLE_AUTH=true: its tokens stand for Entra tokens the server verifies")
	}
	if c.Transport == TransportStdio {
		r.fail("OAUTH_PROXY", "is served over HTTP: not with TRANSPORT=stdio")
	}
	if len(c.Azure.RequiredScopes) == 0 {
		r.fail("AZURE_REQUIRED_SCOPES", "needs at least one scope with OAUTH_PROXY=true: the proxy asks Entra for them, and clients ask the proxy")
	}
	if c.Azure.ClientSecret == "" {
		r.fail("AZURE_CLIENT_SECRET", "required when OAUTH_PROXY=true: the proxy signs users in at Entra as the API application (AZURE_SETUP.md §10; DEV_IDP=true has one)")
	}
	if c.JWTSigningKey != "" {
		if err := oauthproxy.ValidateSigningKey(c.JWTSigningKey); err != nil {
			r.fail("JWT_SIGNING_KEY", "%v", err)
		}
	}
	// The base URL is the proxy's issuer: browsers are sent to it and it
	// sets cookies, so it must be https except on loopback.
	if u, err := url.Parse(c.Azure.BaseURL); err == nil && u.Scheme == "http" && !isLoopback(u.Hostname()) {
		r.fail("AZURE_BASE_URL", "must be https with OAUTH_PROXY=true (plain http only on loopback): it is the authorization server's issuer")
	}
	if c.Environment == "development" {
		return
	}
	if c.JWTSigningKey == "" {
		r.fail("JWT_SIGNING_KEY", "required when OAUTH_PROXY=true outside development: it signs the proxy's tokens, the same on every replica (`mcpguard keys generate`)")
	}
	if c.StorageEncryptionKey == "" {
		r.fail("STORAGE_ENCRYPTION_KEY", "required when OAUTH_PROXY=true outside development: it seals the upstream tokens and login state the proxy stores (`mcpguard keys generate`)")
	}
}

// checkRedirectHost accepts a host name or host:port, nothing more: a
// scheme, path, user or wildcard would make the allow-list mean something
// other than what it says.
func checkRedirectHost(h string) error {
	u, err := url.Parse("https://" + h)
	if err != nil || u.Host != h || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" ||
		u.Hostname() == "" || strings.ContainsAny(h, "*%") {
		return fmt.Errorf("%q is not a host name or host:port (e.g. vscode.dev)", h)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: the port must be a number from 1 to 65535", h)
		}
	}
	return nil
}

// checkAuthority allows https anywhere and plain http only on loopback hosts.
func checkAuthority(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not a URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q: plain http is allowed only for loopback hosts", s)
	}
	return fmt.Errorf("%q: scheme must be https", s)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Error lists every configuration problem, one line each.
type Error struct{ Problems []error }

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap exposes each problem to errors.Is and errors.As.
func (e *Error) Unwrap() []error { return e.Problems }

// Addr is the listen address of the HTTP transports.
func (c *Config) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// ResourceURL is the MCP endpoint's public URL, the protected resource's identifier.
func (c *Config) ResourceURL() string { return c.Azure.BaseURL + "/mcp" }

// checkPolicyOps validates the settings of the policy's management plane:
// one source of bundles, files that can be read, a bundle only with the key
// that verifies it.
func checkPolicyOps(r *reader, p *PolicyOps) {
	readable := func(name, path string) {
		if f, err := os.Open(path); err != nil {
			r.fail(name, "%v", err)
		} else {
			_ = f.Close()
		}
	}
	if p.OPAConfig != "" {
		readable("OPA_CONFIG", p.OPAConfig)
		if p.BundleURL != "" {
			r.fail("POLICY_BUNDLE_URL", "cannot be used with OPA_CONFIG: name the bundle in the OPA configuration")
		}
		if p.PersistDir != "" {
			r.fail("POLICY_PERSIST_DIR", "cannot be used with OPA_CONFIG: set persistence_directory in the OPA configuration")
		}
	}
	if p.BundleURL != "" {
		if u, err := url.Parse(p.BundleURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			r.fail("POLICY_BUNDLE_URL", "%q is not an http(s) URL", p.BundleURL)
		}
		if p.BundlePublicKey == "" {
			r.fail("POLICY_BUNDLE_PUBLIC_KEY", "required with POLICY_BUNDLE_URL: bundles are verified, never taken unsigned")
		}
	}
	if p.BundlePublicKey != "" {
		if p.BundleURL == "" {
			r.fail("POLICY_BUNDLE_PUBLIC_KEY", "is the key of POLICY_BUNDLE_URL, which is not set (with OPA_CONFIG, put keys in the configuration)")
		} else {
			readable("POLICY_BUNDLE_PUBLIC_KEY", p.BundlePublicKey)
		}
	}
	if p.PersistDir != "" && p.BundleURL == "" && p.OPAConfig == "" {
		r.fail("POLICY_PERSIST_DIR", "is where POLICY_BUNDLE_URL's bundle is kept, which is not set")
	}
}
