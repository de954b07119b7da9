package policy

import (
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The lint's checks of the decision module's contract.
const (
	CheckAllowTargeted   = "allow-targeted"        // an allow body about a method with a target, which allow is not asked for
	CheckUnauthenticated = "allow-unauthenticated" // the policy admits callers without a token
)

// targetedMethods are the methods the decision module decides by the catalog
// and the *_allowed rules, never by mcp.authz.allow (policies/mcpguard.rego).
var targetedMethods = map[string]bool{"tools/call": true, "resources/read": true, "resources/subscribe": true,
	"prompts/get": true, "subscriptions/listen": true, "completion/complete": true}

// targetRefs are the parts of input.mcp only a method with a target has.
var targetRefs = []string{"input.mcp.tool", "input.mcp.resource", "input.mcp.prompt", "input.mcp.completion", "input.mcp.subscriptions"}

// contract finds rules in mcp.authz that do nothing the way they are
// written: an allow body about a tool, resource or prompt (the decision
// module does not ask allow for those; tool_allowed and its kin are the
// extension points), and the switch that admits anonymous callers.
func (l *linter) contract() {
	for name, m := range l.sortedModules() {
		if m.Package.Path.String() != teamPackage {
			continue
		}
		for _, r := range m.Rules {
			switch lastName(r.Path()) {
			case "allow":
				if about := targetedBody(r.Body); about != "" {
					file, line := locate(r.Location, name)
					l.add(Finding{Check: CheckAllowTargeted, File: file, Line: line,
						Message: fmt.Sprintf("this allow body is about %s, a method with a target: allow is not asked for it, so the body allows nothing there; write tool_allowed(name), resource_allowed(uri), prompt_allowed(name) or template_allowed(template) instead", about)})
				}
			case "allow_unauthenticated":
				file, line := locate(r.Location, name)
				l.add(Finding{Check: CheckUnauthenticated, Severity: SeverityWarning, File: file, Line: line,
					Message: "the policy admits callers without a verified token (meant only for a server with ENABLE_AUTH=false on its own machine)"})
			}
		}
	}
}

// targetedBody names what makes a rule body about a method with a target:
// input.mcp.method compared with one, or a reference to a target's part of
// the input. "" when it is about neither.
func targetedBody(body ast.Body) string {
	about := ""
	ast.WalkTerms(body, func(t *ast.Term) bool {
		if about != "" {
			return true
		}
		switch v := t.Value.(type) {
		case ast.String:
			if targetedMethods[string(v)] && mentionsMethod(body) {
				about = string(v)
			}
		case ast.Ref:
			s := v.String()
			for _, p := range targetRefs {
				if s == p || strings.HasPrefix(s, p+".") || strings.HasPrefix(s, p+"[") {
					about = p
				}
			}
		}
		return false
	})
	return about
}

func mentionsMethod(body ast.Body) bool {
	found := false
	ast.WalkRefs(body, func(r ast.Ref) bool {
		if r.String() == "input.mcp.method" {
			found = true
		}
		return found
	})
	return found
}
