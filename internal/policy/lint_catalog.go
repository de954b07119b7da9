package policy

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Registered is what a server registers, as the lint needs it: the policy
// decides on these names, and its catalog rows should name nothing else.
type Registered struct {
	Tools     []RegisteredTool
	Resources []string // URIs
	Templates []string // URI templates, as registered
	Prompts   []string
}

// RegisteredTool is a registered tool and the annotations the policy sees.
type RegisteredTool struct {
	Name        string
	Annotations *Fragment
}

// The catalog's sections, in data.mcp.catalog.
const (
	sectionTools     = "tools"
	sectionResources = "resources"
	sectionTemplates = "resource_templates"
	sectionPrompts   = "prompts"
)

// catalog is data.mcp.catalog, each section's rows by key; nil sections
// when the policy has none.
func (l *linter) catalog() map[string]map[string]any {
	out := map[string]map[string]any{}
	mcp, _ := l.data["mcp"].(map[string]any)
	cat, _ := mcp["catalog"].(map[string]any)
	for k, v := range cat {
		if rows, ok := v.(map[string]any); ok {
			out[k] = rows
		}
	}
	return out
}

func rowPath(section, key string) []string { return []string{"mcp", "catalog", section, key} }

// registered checks every registered item against the policy: is there a
// caller it could ever allow (allow partially evaluated, the caller unknown),
// does a template have the row lists read, and does every row name
// something registered.
func (l *linter) registered(ctx context.Context, e *Engine, reg *Registered) error {
	cat := l.catalog()
	unreachable := func(kind, section, key, name string, in *Input, why string) error {
		ok, err := e.CanAllow(ctx, in)
		if err != nil {
			return fmt.Errorf("lint: %s %s: %w", kind, name, err)
		}
		if ok {
			return nil
		}
		msg := fmt.Sprintf("%s %q: no rule can ever allow %s, whoever the caller", kind, name, why)
		if _, has := cat[section][key]; !has {
			msg += fmt.Sprintf(" (catalog.%s has no row %q)", section, key)
			l.add(Finding{Check: CheckUnreachable, Message: msg})
			return nil
		}
		l.addAt(rowPath(section, key), Finding{Check: CheckUnreachable, Message: msg})
		return nil
	}
	for _, t := range reg.Tools {
		in := &Input{}
		in.MCP.Method = "tools/call"
		in.MCP.Tool = &Tool{Name: t.Name, Annotations: t.Annotations}
		if err := unreachable("tool", sectionTools, t.Name, t.Name, in, "a call to it"); err != nil {
			return err
		}
	}
	for _, uri := range reg.Resources {
		in := &Input{}
		in.MCP.Method, in.MCP.ResourceURI = "resources/read", uri
		if err := unreachable("resource", sectionResources, uri, uri, in, "reading it"); err != nil {
			return err
		}
	}
	for _, tmpl := range reg.Templates {
		in := &Input{}
		sample := sampleURI(tmpl)
		in.MCP.Method, in.MCP.ResourceURI = "resources/read", sample
		if err := unreachable("resource template", sectionTemplates, tmpl, tmpl, in, fmt.Sprintf("reading its URIs (such as %q)", sample)); err != nil {
			return err
		}
		if _, has := cat[sectionTemplates][tmpl]; !has {
			l.add(Finding{Check: CheckNoRow, Message: fmt.Sprintf(
				"resource template %q has no row in catalog.resource_templates: resources/templates/list and completion/complete decide on the row keyed by the URI template as registered", tmpl)})
		}
	}
	for _, name := range reg.Prompts {
		in := &Input{}
		in.MCP.Method, in.MCP.Prompt = "prompts/get", &Prompt{Name: name}
		if err := unreachable("prompt", sectionPrompts, name, name, in, "getting it"); err != nil {
			return err
		}
	}
	l.orphanRows(cat, reg)
	return nil
}

// orphanRows finds catalog rows that name nothing registered: a misspelt
// name, or an item this build no longer registers.
func (l *linter) orphanRows(cat map[string]map[string]any, reg *Registered) {
	tools := make([]string, len(reg.Tools))
	for i, t := range reg.Tools {
		tools[i] = t.Name
	}
	templates := make([]*regexp.Regexp, len(reg.Templates))
	for i, t := range reg.Templates {
		templates[i] = templatePattern(t)
	}
	orphan := func(section, key, what string) {
		l.addAt(rowPath(section, key), Finding{Check: CheckOrphanRow, Severity: SeverityWarning,
			Message: fmt.Sprintf("catalog.%s[%q] names no registered %s", section, key, what)})
	}
	for _, key := range sortedKeys(cat[sectionTools]) {
		if !slices.Contains(tools, key) {
			orphan(sectionTools, key, "tool")
		}
	}
	for _, key := range sortedKeys(cat[sectionResources]) {
		if !slices.Contains(reg.Resources, key) && !slices.ContainsFunc(templates, func(re *regexp.Regexp) bool { return re.MatchString(key) }) {
			orphan(sectionResources, key, "resource, nor a URI of a registered resource template")
		}
	}
	for _, key := range sortedKeys(cat[sectionTemplates]) {
		if !slices.Contains(reg.Templates, key) {
			orphan(sectionTemplates, key, "resource template (rows are keyed by the URI template as registered)")
		}
	}
	for _, key := range sortedKeys(cat[sectionPrompts]) {
		if !slices.Contains(reg.Prompts, key) {
			orphan(sectionPrompts, key, "prompt")
		}
	}
}

// uriExpression is one RFC 6570 expression of a URI template.
var uriExpression = regexp.MustCompile(`\{([+#./;?&]?)[^}]*\}`)

// sampleURI fills each expression of a URI template with "x": a URI the
// template produces, for asking whether any read of it could be allowed.
func sampleURI(tmpl string) string {
	return uriExpression.ReplaceAllStringFunc(tmpl, func(e string) string {
		switch op := uriExpression.FindStringSubmatch(e)[1]; op {
		case "?":
			return "?x=x"
		case "&":
			return "&x=x"
		case "", "+":
			return "x"
		default:
			return op + "x"
		}
	})
}

// templatePattern matches the URIs a URI template produces (loosely: any
// value for each expression).
func templatePattern(tmpl string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	last := 0
	for _, m := range uriExpression.FindAllStringSubmatchIndex(tmpl, -1) {
		b.WriteString(regexp.QuoteMeta(tmpl[last:m[0]]))
		switch tmpl[m[2]:m[3]] {
		case "":
			b.WriteString(`[^/?#]*`)
		case "+", "#":
			b.WriteString(`.*`)
		default: // path, label, parameter and query expansions
			b.WriteString(`[/.;?&]?[^#]*`)
		}
		last = m[1]
	}
	b.WriteString(regexp.QuoteMeta(tmpl[last:]))
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// catalogRef finds the row a catalog_errors message is about:
// catalog.<section>["<key>"]: … or catalog has unknown section "<name>".
var (
	catalogRowRef     = regexp.MustCompile(`^catalog\.(\w+)\[("(?:[^"\\]|\\.)*")\]`)
	catalogSectionRef = regexp.MustCompile(`^catalog has unknown section ("(?:[^"\\]|\\.)*")`)
)

// catalogErrors reports data.mcp.authz.catalog_errors at the rows they name.
func (l *linter) catalogErrors(msgs []string) {
	for _, msg := range msgs {
		path := []string{"mcp", "catalog"}
		if m := catalogRowRef.FindStringSubmatch(msg); m != nil {
			if key, err := strconv.Unquote(m[2]); err == nil {
				path = rowPath(m[1], key)
			}
		} else if m := catalogSectionRef.FindStringSubmatch(msg); m != nil {
			if s, err := strconv.Unquote(m[1]); err == nil {
				path = append(path, s)
			}
		}
		l.addAt(path, Finding{Check: CheckCatalogRow, Message: msg})
	}
}
