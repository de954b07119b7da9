package policy

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// unknownParts are the parts of the input a lint leaves open: anyone may call,
// with any roles and arguments, at any time, over any transport.
var unknownParts = []string{
	"input.identity", "input.authorization", "input.request",
	"input.mcp.session_id", "input.mcp.protocol_version", "input.mcp.client",
	"input.mcp.tool.arguments", "input.mcp.prompt.arguments",
}

// CanAllow reports whether some caller could ever be allowed the request in
// describes (method and target): allow is partially evaluated with the
// caller, roles, arguments and transport unknown. No remaining query means no
// rule can allow it, whoever asks.
func (e *Engine) CanAllow(ctx context.Context, in *Input) (bool, error) {
	c := e.current.Load()
	v, err := in.value()
	if err != nil {
		return false, err
	}
	pq, err := rego.New(
		rego.Query(AllowQuery+" == true"),
		rego.Compiler(c.compiler),
		rego.Store(c.store),
		rego.ParsedInput(v),
		rego.Unknowns(unknownParts),
		rego.StrictBuiltinErrors(true),
	).Partial(ctx)
	if err != nil {
		return false, err
	}
	return len(pq.Queries) > 0, nil
}

// CatalogErrorsQuery names malformed rows of the policy's data table.
const CatalogErrorsQuery = "data.mcp.authz.catalog_errors"

// CatalogErrors evaluates data.mcp.authz.catalog_errors, when the policy
// defines it: each string names a catalog row no caller can satisfy because
// it is malformed.
func (e *Engine) CatalogErrors(ctx context.Context) ([]string, error) {
	c := e.current.Load()
	rs, err := rego.New(rego.Query(CatalogErrorsQuery), rego.Compiler(c.compiler), rego.Store(c.store),
		rego.StrictBuiltinErrors(true)).Eval(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	if len(rs) > 0 && len(rs[0].Expressions) > 0 {
		if list, ok := rs[0].Expressions[0].Value.([]any); ok {
			for _, x := range list {
				if s, ok := x.(string); ok {
					out = append(out, s)
				}
			}
		}
	}
	return out, nil
}

// The names of the lint's checks (Finding.Check): stable, for scripts that
// read `mcpguard policy lint --json`.
const (
	CheckUnreadModule  = "unread-module"  // no rule of a module is ever evaluated
	CheckUnreadRule    = "unread-rule"    // a decision rule (deny, allow, …) outside data.mcp.authz
	CheckUnreadData    = "unread-data"    // a data document no rule reads
	CheckVetoAlways    = "veto-always"    // a deny rule that holds for every request
	CheckVetoNever     = "veto-never"     // a deny rule that no request can fire
	CheckUnreachable   = "unreachable"    // a registered item no rule can ever allow
	CheckNoRow         = "no-row"         // a registered resource template without a catalog row
	CheckOrphanRow     = "orphan-row"     // a catalog row naming nothing registered
	CheckCatalogRow    = "catalog-row"    // a malformed catalog row (data.mcp.authz.catalog_errors)
	CheckUnknownRole   = "unknown-role"   // a role no roles registry knows
	CheckRolesRegistry = "roles-registry" // a malformed data.mcp.roles, or one that disagrees with its source
)

// Severities of a finding. Both make the lint fail; a warning is a finding
// that may, rarely, be meant.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
)

// Finding is one problem the lint found, at a file and line when it has one.
type Finding struct {
	Check    string `json:"check"`
	Severity string `json:"severity"`
	File     string `json:"file,omitempty"`
	Line     int    `json:"line,omitempty"`
	Message  string `json:"message"`
}

// String is the finding as the command line prints it: file:line: check: message.
func (f Finding) String() string {
	where := ""
	switch {
	case f.File != "" && f.Line > 0:
		where = f.File + ":" + strconv.Itoa(f.Line) + ": "
	case f.File != "":
		where = f.File + ": "
	}
	sev := ""
	if f.Severity == SeverityWarning {
		sev = " (warning)"
	}
	return fmt.Sprintf("%s%s%s: %s", where, f.Check, sev, f.Message)
}

// LintOptions says what, besides the policy folder itself, the lint checks
// it against.
type LintOptions struct {
	// Registered is what the server registers; nil skips the checks that
	// need it (unreachable items, templates without rows, orphan rows).
	Registered *Registered
	// Roles are registries of role names from outside the policy (a roles
	// file, a Keycloak realm export): every role a catalog row or a rule
	// names must be in each, and so must every role of data.mcp.roles.
	Roles []*RoleRegistry
}

// Lint loads the engine's folder again, exactly as the engine does, and
// finds what it does silently wrong:
// rules and data the server never reads, vetoes that always or never fire,
// registered items no rule allows, rows naming nothing registered, malformed
// rows, and role names no registry knows. Findings come sorted by file and
// line; an error means the lint itself could not run.
func (e *Engine) Lint(ctx context.Context, opts LintOptions) ([]Finding, error) {
	var l *linter
	var err error
	if e.fromBundles || e.static {
		// The policy in force is a bundle: lint what was activated.
		c := e.current.Load()
		if c == nil {
			return nil, ErrNoPolicy
		}
		l, err = lintLoaded(c.loaded, &positions{at: map[string]position{}})
	} else {
		l, err = newLinter(e.dir)
	}
	if err != nil {
		return nil, err
	}
	l.unreadRules()
	l.unreadData()
	l.contract()
	l.vetoes(ctx)
	bad, err := e.CatalogErrors(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CatalogErrorsQuery, err)
	}
	l.catalogErrors(bad)
	if opts.Registered != nil {
		if err := l.registered(ctx, e, opts.Registered); err != nil {
			return nil, err
		}
	}
	l.roles(opts.Roles)
	sortFindings(l.findings)
	return l.findings, nil
}

// linter holds what the checks share: the compiled policy, its data and
// where each data key was written.
type linter struct {
	dir      string
	compiler *ast.Compiler
	store    storage.Store
	data     map[string]any
	pos      *positions
	// reached are the rules some query of the server evaluates, directly
	// or through other rules.
	reached  map[*ast.Rule]bool
	findings []Finding
}

// newLinter loads and compiles the folder afresh, as the server does: the
// engine's own compiler also holds the modules its prepared queries added.
func newLinter(dir string) (*linter, error) {
	loaded, err := Load(dir, false)
	if err != nil {
		return nil, err
	}
	pos, err := indexDataFiles(dir)
	if err != nil {
		return nil, err
	}
	return lintLoaded(loaded, pos)
}

// lintLoaded lints a policy already loaded; pos places data keys in files.
func lintLoaded(loaded *Loaded, pos *positions) (*linter, error) {
	compiler, err := loaded.Compile()
	if err != nil {
		return nil, err
	}
	l := &linter{dir: loaded.Dir, compiler: compiler, store: inmem.NewFromObject(loaded.Documents), data: loaded.Documents, pos: pos}
	l.reached = reachedRules(compiler)
	return l, nil
}

func (l *linter) add(f Finding) {
	if f.Severity == "" {
		f.Severity = SeverityError
	}
	l.findings = append(l.findings, f)
}

// addAt adds a finding located at the data key path.
func (l *linter) addAt(path []string, f Finding) {
	if p, ok := l.pos.lookup(path); ok {
		f.File, f.Line = p.file, p.line
	}
	l.add(f)
}

func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.File != b.File {
			// Findings without a place come last.
			if a.File == "" || b.File == "" {
				return b.File == ""
			}
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Message < b.Message
	})
}
