package policy

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// rolesKey is data.mcp.roles, the roles registry: the lint reads it, the
// decision need not.
const rolesKey = "roles"

// RoleRegistry lists the role names that exist, so that a misspelt one in a
// catalog row or a rule is found before it silently allows nobody. Realm are
// the names input.authorization.roles holds (Keycloak realm roles, Entra app
// roles, a roles file's realm_roles); Clients the client roles per client id
// (input.authorization.client_roles). As data.mcp.roles:
//
//	{"mcp": {"roles": {"realm": ["data_reader", "finance"], "clients": {"api": ["writer"]}}}}
type RoleRegistry struct {
	// Source names the registry in findings: data.mcp.roles, a file.
	Source  string              `json:"-"`
	Realm   []string            `json:"realm"`
	Clients map[string][]string `json:"clients,omitempty"`
}

// Normalize sorts the names and drops repeats, so that a generated registry
// is the same whatever order its source lists them in.
func (r *RoleRegistry) Normalize() {
	norm := func(s []string) []string {
		s = slices.Clone(s)
		sort.Strings(s)
		return slices.Compact(s)
	}
	r.Realm = norm(r.Realm)
	if r.Realm == nil {
		r.Realm = []string{}
	}
	for c, roles := range r.Clients {
		r.Clients[c] = norm(roles)
	}
}

func (r *RoleRegistry) has(client, role string) bool {
	if client == "" {
		return slices.Contains(r.Realm, role)
	}
	return slices.Contains(r.Clients[client], role)
}

// namedRole is a role a catalog row or a rule names.
type namedRole struct {
	client, role string
	// what names the place in a message; path (data) or file and line (Rego)
	// locate it.
	what string
	path []string
	file string
	line int
}

func (n namedRole) String() string {
	if n.client == "" {
		return fmt.Sprintf("role %q", n.role)
	}
	return fmt.Sprintf("role %q of client %q", n.role, n.client)
}

// roles checks every role a catalog row or a rule names against data.mcp.roles
// (when the policy has one) and the registries given, and data.mcp.roles
// against those registries.
func (l *linter) roles(external []*RoleRegistry) {
	own := l.dataRegistry()
	var regs []*RoleRegistry
	if own != nil {
		regs = append(regs, own)
	}
	regs = append(regs, external...)
	if len(regs) == 0 {
		return
	}
	for _, n := range append(l.rowRoles(), l.regoRoles()...) {
		for _, r := range regs {
			if r.has(n.client, n.role) {
				continue
			}
			f := Finding{Check: CheckUnknownRole, File: n.file, Line: n.line,
				Message: fmt.Sprintf("%s names %s, which %s does not list", n.what, n, r.Source)}
			if n.path != nil {
				l.addAt(n.path, f)
			} else {
				l.add(f)
			}
		}
	}
	if own == nil {
		return
	}
	for _, r := range external {
		for i, role := range own.Realm {
			if !r.has("", role) {
				l.addAt([]string{"mcp", rolesKey, "realm", fmt.Sprint(i)}, Finding{Check: CheckRolesRegistry,
					Message: fmt.Sprintf("data.mcp.roles lists role %q, which %s does not", role, r.Source)})
			}
		}
		for _, c := range sortedKeys(own.Clients) {
			for i, role := range own.Clients[c] {
				if !r.has(c, role) {
					l.addAt([]string{"mcp", rolesKey, "clients", c, fmt.Sprint(i)}, Finding{Check: CheckRolesRegistry,
						Message: fmt.Sprintf("data.mcp.roles lists role %q of client %q, which %s does not", role, c, r.Source)})
				}
			}
		}
	}
}

// dataRegistry reads data.mcp.roles. A malformed one is a finding, and no
// role is checked against it.
func (l *linter) dataRegistry() *RoleRegistry {
	mcp, _ := l.data["mcp"].(map[string]any)
	v, ok := mcp[rolesKey]
	if !ok {
		return nil
	}
	base := []string{"mcp", rolesKey}
	bad := func(path []string, format string, args ...any) {
		l.addAt(path, Finding{Check: CheckRolesRegistry, Message: fmt.Sprintf(format, args...) +
			`: data.mcp.roles is {"realm": [role, …], "clients": {client: [role, …]}}`})
	}
	obj, ok := v.(map[string]any)
	if !ok {
		bad(base, "data.mcp.roles is not an object")
		return nil
	}
	reg := &RoleRegistry{Source: "data.mcp.roles", Clients: map[string][]string{}}
	good := true
	names := func(path []string, x any) []string {
		list, ok := x.([]any)
		if !ok {
			bad(path, "data.mcp.%s is not a list of role names", joinPath(path[1:]))
			good = false
			return nil
		}
		var out []string
		for i, e := range list {
			s, ok := e.(string)
			if !ok {
				bad(append(slices.Clone(path), fmt.Sprint(i)), "data.mcp.%s[%d] is not a string", joinPath(path[1:]), i)
				good = false
				continue
			}
			out = append(out, s)
		}
		return out
	}
	for _, k := range sortedKeys(obj) {
		p := append(slices.Clone(base), k)
		switch k {
		case "realm":
			reg.Realm = names(p, obj[k])
		case "clients":
			clients, ok := obj[k].(map[string]any)
			if !ok {
				bad(p, "data.mcp.roles.clients is not an object")
				good = false
				continue
			}
			for _, c := range sortedKeys(clients) {
				reg.Clients[c] = names(append(slices.Clone(p), c), clients[c])
			}
		default:
			bad(p, "data.mcp.roles has unknown key %q", k)
			good = false
		}
	}
	if !good {
		return nil
	}
	return reg
}

func joinPath(p []string) string { return strings.Join(p, ".") }

// rowRoles are the roles the catalog's rows require.
func (l *linter) rowRoles() []namedRole {
	var out []namedRole
	cat := l.catalog()
	for _, section := range sortedKeys(cat) {
		for _, key := range sortedKeys(cat[section]) {
			row, ok := cat[section][key].(map[string]any)
			if !ok {
				continue // catalog_errors names it
			}
			at := func(field string, rest ...string) namedRole {
				return namedRole{what: fmt.Sprintf("catalog.%s[%q].%s", section, key, field),
					path: append(append(rowPath(section, key), field), rest...)}
			}
			if s, ok := row["require_role"].(string); ok {
				n := at("require_role")
				n.role = s
				out = append(out, n)
			}
			for _, field := range []string{"require_any_role", "require_all_roles"} {
				list, _ := row[field].([]any)
				for i, x := range list {
					if s, ok := x.(string); ok {
						n := at(field, fmt.Sprint(i))
						n.role = s
						out = append(out, n)
					}
				}
			}
			if rr, ok := row["require_resource_role"].(map[string]any); ok {
				c, cok := rr["client"].(string)
				r, rok := rr["role"].(string)
				if cok && rok {
					n := at("require_resource_role", "role")
					n.client, n.role = c, r
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// The decorator functions of mcp.lib whose arguments are role names.
var roleFunctions = map[string]bool{"require_role": true, "require_any_role": true, "require_all_roles": true, "require_resource_role": true}

// regoRoles are the role names the rules the server evaluates test with a
// constant: "cfo" in input.authorization.roles, "writer" in
// input.authorization.client_roles.api, lib.require_role("cfo") and the
// other decorators. (A role compared with == is not found.)
func (l *linter) regoRoles() []namedRole {
	var out []namedRole
	for r := range l.reached {
		// The compiler moves a ref argument into a local variable first:
		// __local1__ = input.authorization.roles; internal.member_2("cfo", __local1__).
		bound := map[ast.Var]*ast.Term{}
		ast.WalkExprs(r, func(e *ast.Expr) bool {
			if e.IsEquality() && !e.Negated {
				a, b := e.Operand(0), e.Operand(1)
				if v, ok := a.Value.(ast.Var); ok {
					bound[v] = b
				} else if v, ok := b.Value.(ast.Var); ok {
					bound[v] = a
				}
			}
			return false
		})
		resolve := func(t *ast.Term) *ast.Term {
			for range 8 { // bounded: var chains are short
				v, ok := t.Value.(ast.Var)
				if !ok || bound[v] == nil {
					break
				}
				t = bound[v]
			}
			return t
		}
		call := func(op ast.Ref, args []*ast.Term, loc *ast.Location) {
			add := func(client string, t *ast.Term) {
				if s, ok := resolve(t).Value.(ast.String); ok && loc != nil {
					out = append(out, namedRole{client: client, role: string(s), what: "rule " + strings.TrimPrefix(r.Path().String(), "data."), file: loc.File, line: loc.Row})
				}
			}
			if op.Equal(ast.Member.Ref()) && len(args) == 2 {
				if client, ok := roleRef(resolve(args[1])); ok {
					add(client, args[0])
				}
				return
			}
			name := lastName(op)
			if !op[0].Equal(ast.DefaultRootDocument) || !roleFunctions[name] || len(args) == 0 {
				return
			}
			switch name {
			case "require_role":
				add("", args[0])
			case "require_any_role", "require_all_roles":
				switch coll := resolve(args[0]).Value.(type) {
				case *ast.Array:
					coll.Foreach(func(t *ast.Term) { add("", t) })
				case ast.Set:
					coll.Foreach(func(t *ast.Term) { add("", t) })
				}
			case "require_resource_role":
				if len(args) >= 2 {
					if c, ok := resolve(args[0]).Value.(ast.String); ok {
						add(string(c), args[1])
					}
				}
			}
		}
		ast.WalkExprs(r, func(e *ast.Expr) bool {
			if e.IsCall() {
				call(e.Operator(), e.Operands(), e.Location)
			}
			return false
		})
		ast.WalkTerms(r, func(t *ast.Term) bool {
			if c, ok := t.Value.(ast.Call); ok && len(c) > 0 {
				if op, ok := c[0].Value.(ast.Ref); ok {
					call(op, c[1:], t.Location)
				}
			}
			return false
		})
	}
	return out
}

// roleRef tells whether t is input.authorization.roles (or realm_roles), or
// input.authorization.client_roles[client] for a constant client.
func roleRef(t *ast.Term) (client string, ok bool) {
	ref, isRef := t.Value.(ast.Ref)
	if !isRef || len(ref) < 3 || !ref[0].Equal(ast.InputRootDocument) || !ref[1].Equal(ast.StringTerm("authorization")) {
		return "", false
	}
	switch {
	case len(ref) == 3 && (ref[2].Equal(ast.StringTerm("roles")) || ref[2].Equal(ast.StringTerm("realm_roles"))):
		return "", true
	case len(ref) == 4 && ref[2].Equal(ast.StringTerm("client_roles")):
		if c, ok := ref[3].Value.(ast.String); ok && c != "" {
			return string(c), true
		}
	}
	return "", false
}
