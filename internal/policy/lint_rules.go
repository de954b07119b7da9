package policy

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sort"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// teamPackage is where the server reads the team's rules: the rules named in
// decisionRules count only there.
const teamPackage = "data.mcp.authz"

// vetoQuery is the set whose every message refuses a request.
const vetoQuery = teamPackage + ".deny"

// decisionRules are the rule names the decision reads from teamPackage
// (besides those the decision module refers to: see extensionPoints). The
// same name anywhere else is a rule its author meant for the decision and
// the server never evaluates: Rego raises no error for it.
var decisionRules = []string{"allow", "deny", "tool_allowed", "resource_allowed", "template_allowed", "prompt_allowed"}

// extensionPoints are decisionRules and every name the rules of the root
// packages (the decision module) read from teamPackage: data.mcp.authz.X.
func (l *linter) extensionPoints(roots map[string]bool) []string {
	out := slices.Clone(decisionRules)
	team := ast.MustParseRef(teamPackage)
	for _, m := range l.compiler.Modules {
		if !roots[m.Package.Path.String()] || m.Package.Path.Equal(team) {
			continue
		}
		ast.WalkRefs(m, func(ref ast.Ref) bool {
			if len(ref) > len(team) && ref.HasPrefix(team) {
				if s, ok := ref[len(team)].Value.(ast.String); ok && !slices.Contains(out, string(s)) {
					out = append(out, string(s))
				}
			}
			return false
		})
	}
	return out
}

// lintRoots are the queries the server evaluates; every rule they reach,
// directly or through other rules, is read. OPA's decision-log plugin reads
// the mask and drop rules.
func lintRoots() []string {
	return []string{AllowQuery, DecisionQuery, VisibleQuery, CatalogErrorsQuery, MaskQuery, DropQuery}
}

// reachedRules walks the compiler's dependency graph from the server's
// queries. Rules that reach others through a variable (data.x[name]) reach
// every rule they might select.
func reachedRules(c *ast.Compiler) map[*ast.Rule]bool {
	seen := map[*ast.Rule]bool{}
	var stack []*ast.Rule
	push := func(r *ast.Rule) {
		for ; r != nil; r = r.Else {
			if !seen[r] {
				seen[r] = true
				stack = append(stack, r)
			}
		}
	}
	for _, q := range lintRoots() {
		for _, r := range c.GetRules(ast.MustParseRef(q)) {
			push(r)
		}
	}
	for len(stack) > 0 {
		r := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for d := range c.Graph.Dependencies(r) {
			if dr, ok := d.(*ast.Rule); ok {
				push(dr)
			}
		}
	}
	return seen
}

// rootPackages are the packages of the rules the queries name: the
// decision's own rules there are read by definition.
func (l *linter) rootPackages() map[string]bool {
	out := map[string]bool{}
	for _, q := range lintRoots() {
		for _, r := range l.compiler.GetRules(ast.MustParseRef(q)) {
			if r.Module != nil {
				out[r.Module.Package.Path.String()] = true
			}
		}
	}
	return out
}

// sortedModules are the compiled modules by file name, in order.
func (l *linter) sortedModules() iter.Seq2[string, *ast.Module] {
	return func(yield func(string, *ast.Module) bool) {
		for _, n := range sortedKeys(l.compiler.Modules) {
			if !yield(n, l.compiler.Modules[n]) {
				return
			}
		}
	}
}

// locate is a location's file and line; file when it has none.
func locate(loc *ast.Location, file string) (string, int) {
	if loc == nil {
		return file, 0
	}
	if loc.File != "" {
		file = loc.File
	}
	return file, loc.Row
}

// unreadRules finds modules of which the server evaluates no rule, and
// decision rules (deny, allow, …) written outside data.mcp.authz.
func (l *linter) unreadRules() {
	roots := l.rootPackages()
	points := l.extensionPoints(roots)
	for name, m := range l.sortedModules() {
		pkg := m.Package.Path.String()
		var rules []*ast.Rule
		ast.WalkRules(m, func(r *ast.Rule) bool {
			rules = append(rules, r)
			return false
		})
		if len(rules) == 0 {
			continue
		}
		anyRead := slices.ContainsFunc(rules, func(r *ast.Rule) bool { return l.reached[r] })
		misplaced := 0
		for _, r := range rules {
			path := r.Path()
			name := lastName(path)
			if l.reached[r] || roots[pkg] || !slices.Contains(points, name) || path.String() == teamPackage+"."+name {
				continue
			}
			misplaced++
			file, line := locate(r.Location, name)
			l.add(Finding{Check: CheckUnreadRule, File: file, Line: line,
				Message: fmt.Sprintf("rule %s is %s, which the server never evaluates: it reads %s.%s (package mcp.authz)",
					name, path, teamPackage, name)})
		}
		if !anyRead && misplaced == 0 {
			file, line := locate(m.Package.Location, name)
			l.add(Finding{Check: CheckUnreadModule, File: file, Line: line,
				Message: fmt.Sprintf("no rule in this file (package %s) is ever evaluated by the server: nothing its queries (%s) use refers to them",
					strings.TrimPrefix(pkg, "data."), strings.Join(lintRoots(), ", "))})
		}
	}
}

// lastName is the last string of a rule's path: its name.
func lastName(path ast.Ref) string {
	if len(path) == 0 {
		return ""
	}
	if s, ok := path[len(path)-1].Value.(ast.String); ok {
		return string(s)
	}
	return ""
}

// readPaths are the data paths the reached rules refer to, each cut at its
// first term that is not a constant string (data.mcp.catalog[section] reads
// all of data.mcp.catalog).
func (l *linter) readPaths() [][]string {
	var out [][]string
	for r := range l.reached {
		ast.WalkRefs(r, func(ref ast.Ref) bool {
			if !ref[0].Equal(ast.DefaultRootDocument) {
				return false
			}
			var p []string
			for _, t := range ref[1:] {
				s, ok := t.Value.(ast.String)
				if !ok {
					break
				}
				p = append(p, string(s))
			}
			out = append(out, p)
			return false
		})
	}
	return out
}

// unreadData finds data documents no reached rule reads: a data file in a
// sub-folder (it loads under the folder's name), a top-level key other than
// mcp, a key under data.mcp the policy never reads. data.mcp.roles is the
// lint's own.
func (l *linter) unreadData() {
	reads := l.readPaths()
	isRead := func(p []string) bool {
		return slices.ContainsFunc(reads, func(r []string) bool { return isPrefix(r, p) || isPrefix(p, r) })
	}
	var mcpReads []string
	for _, r := range reads {
		if len(r) >= 2 && r[0] == "mcp" && !slices.Contains(mcpReads, "data.mcp."+r[1]) {
			mcpReads = append(mcpReads, "data.mcp."+r[1])
		}
	}
	sort.Strings(mcpReads)
	for _, k := range sortedKeys(l.data) {
		if k == "mcp" {
			obj, ok := l.data[k].(map[string]any)
			if !ok {
				continue // data.mcp.catalog reads fail, and the catalog checks say so
			}
			for _, k2 := range sortedKeys(obj) {
				p := []string{"mcp", k2}
				if k2 == rolesKey || isRead(p) {
					continue
				}
				l.addAt(p, Finding{Check: CheckUnreadData,
					Message: fmt.Sprintf("data.mcp.%s is never read by the policy (it reads %s): a misspelt key?", k2, strings.Join(mcpReads, ", "))})
			}
			continue
		}
		p := []string{k}
		if isRead(p) {
			continue
		}
		msg := fmt.Sprintf("data.%s is never read by the policy", k)
		if at, ok := l.pos.lookup(p); ok && at.folder {
			msg = fmt.Sprintf("this file loads under data.%s, the path of its folder, which the policy never reads: data for the policy goes in the policy folder itself, as {\"mcp\": …}", k)
		}
		l.addAt(p, Finding{Check: CheckUnreadData, Message: msg})
	}
}

func isPrefix(p, of []string) bool {
	return len(p) <= len(of) && slices.Equal(p, of[:len(p)])
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// vetoMessage binds a veto rule's message in the lint's query.
var vetoMessage = ast.VarTerm("__lint_veto_message__")

// vetoes partially evaluates each deny rule of data.mcp.authz alone, the
// whole input unknown and the data known: a rule with a remaining query that
// has no condition holds for every request; one with no remaining query
// holds for none. Non-deterministic builtins (time.now_ns) stay conditions,
// so a working-hours rule is neither.
func (l *linter) vetoes(ctx context.Context) {
	for _, r := range l.compiler.GetRulesExact(ast.MustParseRef(vetoQuery)) {
		body := r.Body.Copy()
		head := r.Head.Key
		if head == nil {
			head = r.Head.Value
		}
		if head != nil {
			body.Append(ast.Equality.Expr(vetoMessage, head.Copy()))
		}
		pq, err := rego.New(
			rego.ParsedQuery(body),
			rego.Compiler(l.compiler),
			rego.Store(l.store),
			rego.Unknowns([]string{"input"}),
			rego.StrictBuiltinErrors(true),
		).Partial(ctx)
		var at Finding
		at.File, at.Line = locate(r.Location, "")
		switch {
		case err != nil:
			// Independent of input, so every evaluation that reaches it
			// fails, and a failed evaluation denies.
			at.Check, at.Message = CheckVetoAlways, fmt.Sprintf("deny rule fails on every request, which refuses it: %v", err)
			l.add(at)
		case len(pq.Queries) == 0:
			at.Check, at.Severity = CheckVetoNever, SeverityWarning
			at.Message = "deny rule can never fire: no input satisfies it with the policy's data (a misspelt data path or name?)"
			l.add(at)
		case slices.ContainsFunc(pq.Queries, unconditional):
			at.Check, at.Message = CheckVetoAlways, "deny rule holds for every request: it refuses everything, whoever asks"
			l.add(at)
		}
	}
}

// unconditional reports whether a remaining query holds whatever the input:
// it only binds variables to constants.
func unconditional(q ast.Body) bool {
	for _, e := range q {
		if e.Negated || len(e.With) > 0 {
			return false
		}
		if t, ok := e.Terms.(*ast.Term); ok {
			if b, ok := t.Value.(ast.Boolean); ok && bool(b) {
				continue
			}
			return false
		}
		if !e.IsEquality() {
			return false
		}
		a, b := e.Operand(0), e.Operand(1)
		_, av := a.Value.(ast.Var)
		_, bv := b.Value.(ast.Var)
		if !(av && ast.IsConstant(b.Value)) && !(bv && ast.IsConstant(a.Value)) {
			return false
		}
	}
	return true
}
