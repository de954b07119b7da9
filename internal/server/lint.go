package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/tools"
)

// registered is what this server registers, as the policy lint reads it.
func (c *catalog) registered() *policy.Registered {
	r := &policy.Registered{}
	for _, t := range c.tools {
		r.Tools = append(r.Tools, policy.RegisteredTool{Name: t.Name, Annotations: c.toolAnnotations[t.Name]})
	}
	for _, x := range c.resources {
		r.Resources = append(r.Resources, x.URI)
	}
	for _, x := range c.templates {
		r.Templates = append(r.Templates, x.URITemplate)
	}
	for _, x := range c.prompts {
		r.Prompts = append(r.Prompts, x.Name)
	}
	return r
}

// Registered is what register (tools.Register when nil) adds to a server,
// read as the server reads it at start, without any configuration: for
// `mcpguard policy lint`.
func Registered(ctx context.Context, register func(*mcp.Server)) (*policy.Registered, error) {
	if register == nil {
		register = tools.Register
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "mcpguard-lint", Version: Version}, nil)
	register(s)
	c, err := readCatalog(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("reading the registered tools: %w", err)
	}
	return c.registered(), nil
}

// RolesFileRegistry lists the roles a roles file (ROLES_FILE, the static
// role source) can grant: every realm_roles and client_roles entry.
func RolesFileRegistry(path string) (*policy.RoleRegistry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("roles file: %w", err)
	}
	r, err := rolesFileRegistry(data, "roles file "+path)
	if err != nil {
		return nil, fmt.Errorf("roles file %s: %w", path, err)
	}
	return r, nil
}

func rolesFileRegistry(data []byte, source string) (*policy.RoleRegistry, error) {
	// The role source reads the file the same strict way.
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f exchange.RolesFile
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	r := &policy.RoleRegistry{Source: source, Clients: map[string][]string{}}
	for _, grants := range []map[string]exchange.Grant{f.Users, f.AppRoles, f.Groups, f.Apps} {
		for _, g := range grants {
			r.Realm = append(r.Realm, g.RealmRoles...)
			for c, roles := range g.ClientRoles {
				r.Clients[c] = append(r.Clients[c], roles...)
			}
		}
	}
	r.Normalize()
	return r, nil
}

// realmExport is the part of a Keycloak realm export (Realm settings →
// Partial export, or kc.sh export) that names roles.
type realmExport struct {
	Realm string `json:"realm"`
	Roles struct {
		Realm  []struct{ Name string } `json:"realm"`
		Client map[string][]struct {
			Name string
		} `json:"client"`
	} `json:"roles"`
}

// RealmExportRegistry lists the realm roles and client roles (by client id)
// a Keycloak realm export defines. It reads the file only: no network.
func RealmExportRegistry(path string) (*policy.RoleRegistry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("realm export: %w", err)
	}
	var x realmExport
	if err := json.Unmarshal(data, &x); err != nil {
		return nil, fmt.Errorf("realm export %s: %w", path, err)
	}
	if x.Realm == "" {
		return nil, fmt.Errorf("realm export %s: no \"realm\" name: not a Keycloak realm export", path)
	}
	r := &policy.RoleRegistry{Source: "realm export " + path, Clients: map[string][]string{}}
	for _, role := range x.Roles.Realm {
		r.Realm = append(r.Realm, role.Name)
	}
	for c, roles := range x.Roles.Client {
		for _, role := range roles {
			r.Clients[c] = append(r.Clients[c], role.Name)
		}
	}
	r.Normalize()
	return r, nil
}

// lintOptions are what the start-up lint checks the policy against: the
// registered items, and the roles file when the static role source serves
// the roles (a role it grants nobody allows nobody).
func (s *Server) lintOptions() (policy.LintOptions, error) {
	opts := policy.LintOptions{Registered: s.catalog.registered()}
	if _, ok := s.roles.(*exchange.StaticRoles); !ok || s.cfg.RoleSource != config.RoleSourceStatic {
		return opts, nil
	}
	var (
		r   *policy.RoleRegistry
		err error
	)
	if s.cfg.RolesFile == "" {
		r, err = rolesFileRegistry(devidp.RolesJSON, "the development roles file")
	} else {
		r, err = RolesFileRegistry(s.cfg.RolesFile)
	}
	if err != nil {
		return opts, err
	}
	opts.Roles = []*policy.RoleRegistry{r}
	return opts, nil
}

// LintError refuses a start under POLICY_STRICT=true: the policy lint found
// something.
type LintError struct {
	Dir      string
	Findings []policy.Finding
}

func (e *LintError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "POLICY_STRICT=true: the policy in %s has %d lint finding(s) (mcpguard policy lint --policy-dir %s):", e.Dir, len(e.Findings), e.Dir)
	for _, f := range e.Findings {
		b.WriteString("\n  ")
		b.WriteString(f.String())
	}
	return b.String()
}

// strictLint runs the lint before the server serves: a finding, or a lint
// that cannot run, refuses the start.
func (s *Server) strictLint(ctx context.Context) error {
	opts, err := s.lintOptions()
	if err != nil {
		return fmt.Errorf("POLICY_STRICT=true: policy lint: %w", err)
	}
	findings, err := s.engine.Lint(ctx, opts)
	if err != nil {
		return fmt.Errorf("POLICY_STRICT=true: policy lint: %w", err)
	}
	if len(findings) > 0 {
		return &LintError{Dir: s.cfg.PolicyDir, Findings: findings}
	}
	return nil
}

// lint logs the policy lint's findings (POLICY_STRICT=false).
func (s *Server) lint(ctx context.Context) {
	opts, err := s.lintOptions()
	if err != nil {
		s.logger.Warn("policy lint: roles file", "error", err)
	}
	findings, err := s.engine.Lint(ctx, opts)
	if err != nil {
		s.logger.Warn("policy lint failed", "error", err)
		return
	}
	for _, f := range findings {
		s.logger.Warn("policy lint: "+f.Message, "check", f.Check, "severity", f.Severity, "file", f.File, "line", f.Line)
	}
}
