package main

import (
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// kind names one sort of edit. The names are part of the allow-list format.
type kind string

const (
	// deleteExpr drops one conjunct: the expression is replaced by true, which
	// is the same as deleting it and keeps the body non-empty.
	deleteExpr kind = "delete"
	// negateExpr flips one expression's `not`.
	negateExpr kind = "negate"
	// dropBody makes one definition of a rule (or one else branch) never
	// hold: false is added to its body. For a rule defined more than once this is
	// deleting that definition; for a rule defined once it is deleting the
	// rule while its callers still compile (they then see it undefined).
	dropBody kind = "drop-body"
	// dropDefault deletes a `default` rule, so that the rule is undefined
	// rather than its default value when no definition holds.
	dropDefault kind = "drop-default"
)

// mutant is one edit of one policy module.
type mutant struct {
	file string // the module's file, as loaded
	line int
	rule string // rule name and which of its bodies in the file: "allow#4"
	kind kind
	expr string // the source of the edited expression, whitespace folded; "-" for a whole body

	// where: the rule's index in the module, the depth in its else chain, the
	// body's index in walk order within that rule (0 is the rule's own body
	// when walked first; nested every and comprehension bodies follow), and
	// the expression's index in that body.
	ruleIdx, elseDepth, bodyIdx, exprIdx int
}

// key identifies a mutant in the allow-list independently of line numbers.
func (m mutant) key() string {
	return strings.Join([]string{baseName(m.file), m.rule, string(m.kind), m.expr}, " | ")
}

func (m mutant) String() string {
	if m.kind == dropBody || m.kind == dropDefault {
		return fmt.Sprintf("%s:%d: %s %s", m.file, m.line, m.kind, m.rule)
	}
	return fmt.Sprintf("%s:%d: %s `%s` in %s", m.file, m.line, m.kind, m.expr, m.rule)
}

func baseName(file string) string {
	if i := strings.LastIndexByte(file, '/'); i >= 0 {
		return file[i+1:]
	}
	return file
}

// exprText is an expression's source with whitespace folded, cut to keep
// allow-list lines readable (a long set literal is still told apart by its
// beginning and its rule).
func exprText(e *ast.Expr) string {
	var s string
	if e.Location != nil && len(e.Location.Text) > 0 {
		s = strings.Join(strings.Fields(string(e.Location.Text)), " ")
	} else {
		s = e.String()
	}
	if len(s) > 72 {
		s = s[:69] + "..."
	}
	return s
}

// bodies lists the bodies of one rule (not of its else branches) in a fixed
// order: the rule's own body first, then bodies nested in it (every,
// comprehensions), then those in its head (a comprehension as the value).
func bodies(r *ast.Rule) []ast.Body {
	var out []ast.Body
	collect := func(b ast.Body) bool {
		out = append(out, b)
		return false
	}
	ast.WalkBodies(r.Body, collect)
	ast.WalkBodies(r.Head, collect)
	return out
}

// isTrue reports whether e is the bare literal true, which the parser also
// supplies as the body of a rule written without one.
func isTrue(e *ast.Expr) bool {
	t, ok := e.Terms.(*ast.Term)
	if !ok || e.Negated || len(e.With) > 0 {
		return false
	}
	b, ok := t.Value.(ast.Boolean)
	return ok && bool(b)
}

// negatable leaves out what `not` cannot apply to: declarations, every, and
// assignments (negated, their variables would be unsafe: always invalid).
func negatable(e *ast.Expr) bool {
	switch e.Terms.(type) {
	case *ast.SomeDecl, *ast.Every:
		return false
	}
	return !e.IsAssignment() && !isTrue(e)
}

// enumerate lists every mutant of module m, in source order.
func enumerate(file string, m *ast.Module, negate bool) []mutant {
	var out []mutant
	seen := map[string]int{} // rule name -> bodies so far in this file
	for i, top := range m.Rules {
		name := top.Head.Ref().String()
		if top.Default {
			out = append(out, mutant{file: file, line: top.Location.Row, rule: "default " + name, kind: dropDefault, expr: "-", ruleIdx: i})
			continue
		}
		depth := 0
		for r := top; r != nil; r, depth = r.Else, depth+1 {
			seen[name]++
			label := fmt.Sprintf("%s#%d", name, seen[name])
			out = append(out, mutant{file: file, line: r.Location.Row, rule: label, kind: dropBody, expr: "-", ruleIdx: i, elseDepth: depth})
			for bi, b := range bodies(r) {
				for ei, e := range b {
					at := mutant{file: file, line: e.Location.Row, rule: label, expr: exprText(e), ruleIdx: i, elseDepth: depth, bodyIdx: bi, exprIdx: ei}
					if !isTrue(e) {
						at.kind = deleteExpr
						out = append(out, at)
					}
					if negate && negatable(e) {
						at.kind = negateExpr
						out = append(out, at)
					}
				}
			}
		}
	}
	return out
}

// apply returns a copy of orig with the mutant's edit made.
func (m mutant) apply(orig *ast.Module) *ast.Module {
	mod := orig.Copy()
	if m.kind == dropDefault {
		mod.Rules = append(mod.Rules[:m.ruleIdx:m.ruleIdx], mod.Rules[m.ruleIdx+1:]...)
		return mod
	}
	r := mod.Rules[m.ruleIdx]
	for range m.elseDepth {
		r = r.Else
	}
	if m.kind == dropBody {
		// false first, the body kept after it: the variables the head reads
		// stay bound, so the mutant compiles whenever the policy does.
		r.Body = ast.NewBody(append([]*ast.Expr{literal(false, r.Body[0])}, r.Body...)...)
		return mod
	}
	b := bodies(r)[m.bodyIdx]
	e := b[m.exprIdx]
	switch m.kind {
	case deleteExpr:
		b.Set(literal(true, e), m.exprIdx)
	case negateExpr:
		e.Negated = !e.Negated
	}
	return mod
}

// literal is the expression true or false, placed where at was.
func literal(v bool, at *ast.Expr) *ast.Expr {
	t := ast.BooleanTerm(v)
	t.Location = at.Location
	e := ast.NewExpr(t)
	e.Location = at.Location
	return e
}
