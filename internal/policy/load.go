package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"

	"github.com/mcpguard/mcpguard"
)

// Loaded is a policy folder as the server compiles it: its Rego modules
// (Rego v1), the built-in decision module, and its data documents. The
// server, `mcpguard policy test` and the lint all start from Load, so that
// what passes the authoring loop is what the server runs.
type Loaded struct {
	Dir       string
	Modules   map[string]*ast.Module
	Documents map[string]any
}

// GuardPackage is the package of the built-in decision module.
const GuardPackage = "mcpguard"

// PermissionPackage is the package of the folder's own rules, which the
// decision module asks.
const PermissionPackage = "mcp.authz"

// GuardFile is the file name of the decision module in a policy folder, and
// the name the built-in copy is compiled under when the folder has none.
const GuardFile = "mcpguard.rego"

// Load reads the folder: every .rego file (the *_test.rego files only when
// withTests) and every data.json / data.yaml, each under the path of its
// folder; and adds the built-in decision module. A folder may carry the
// decision module (policies/mcpguard.rego, so that stock `opa test` sees it)
// only as built in: a changed copy, any other module of package mcpguard, or
// data under data.mcpguard would change the guards, and is refused.
func Load(dir string, withTests bool) (*Loaded, error) {
	src, err := readDir(dir, withTests)
	if err != nil {
		return nil, err
	}
	return src.assemble(withTests)
}

// source is a policy as read, before the built-in modules are added: the
// raw Rego files of a folder or a bundle, tests included, and its data. One
// read serves both the served policy and its tests, so that the tests a
// reload runs are those of the very files it swaps in.
type source struct {
	dir     string
	modules map[string]regoFile
	docs    map[string]any
}

type regoFile struct {
	raw    []byte
	parsed *ast.Module
}

// readDir reads every .rego file of dir (the tests only when withTests: a
// test that does not parse then does not stop the server) and its data.
func readDir(dir string, withTests bool) (*source, error) {
	var filter loader.Filter
	if !withTests {
		filter = func(_ string, info fs.FileInfo, _ int) bool { return !info.IsDir() && isTest(info.Name()) }
	}
	res, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).Filtered([]string{dir}, filter)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", dir, err)
	}
	src := &source{dir: dir, modules: make(map[string]regoFile, len(res.Modules)), docs: res.Documents}
	for name, f := range res.Modules {
		src.modules[name] = regoFile{raw: f.Raw, parsed: f.Parsed}
	}
	return src, nil
}

// isTest tells a test module by its file name, as opa test does.
func isTest(name string) bool { return strings.HasSuffix(name, "_test.rego") }

// revision is a digest of what the served policy is made of: its modules
// (tests left out) and its data. Equal revisions decide alike.
func (s *source) revision() string {
	h := sha256.New()
	for _, name := range sortedKeys(s.modules) {
		if isTest(name) {
			continue
		}
		// Lengths first: no two different file sets hash the same stream.
		fmt.Fprintf(h, "%d:%s%d:", len(name), name, len(s.modules[name].raw))
		h.Write(s.modules[name].raw)
	}
	// json.Marshal sorts object keys: equal data, equal bytes.
	data, err := json.Marshal(s.docs)
	if err != nil {
		data = []byte(err.Error())
	}
	h.Write(data)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))[:16]
}

// assemble checks the source's modules as Load documents and adds the
// built-in ones.
func (s *source) assemble(withTests bool) (*Loaded, error) {
	dir := s.dir
	modules := map[string]*ast.Module{}
	guard := ""
	for _, name := range sortedKeys(s.modules) {
		f := s.modules[name]
		if !withTests && isTest(name) {
			continue
		}
		if !ownsGuard(f.parsed) {
			modules[name] = f.parsed
			continue
		}
		if isTest(name) {
			return nil, fmt.Errorf("policy %s: %s: package %s is mcpguard's own; test it from another package", dir, name, f.parsed.Package.Path)
		}
		if guard != "" || strings.ReplaceAll(string(f.raw), "\r\n", "\n") != mcpguard.GuardModule {
			return nil, fmt.Errorf("policy %s: %s: package %s is mcpguard's decision module and must be exactly the one built in (%s): put rules in package mcp.authz, or copy the file from this release", dir, name, f.parsed.Package.Path, GuardFile)
		}
		guard = name
		modules[name] = f.parsed
	}
	if len(modules) == 0 || len(modules) == 1 && guard != "" {
		return nil, fmt.Errorf("policy %s: no .rego files", dir)
	}
	if err := refuseForeignPermissions(dir, modules); err != nil {
		return nil, err
	}
	if !hasPackage(modules, PermissionPackage) {
		return nil, fmt.Errorf("policy %s: no rule is in package %s: every request would be denied", dir, PermissionPackage)
	}
	if _, ok := s.docs[GuardPackage]; ok {
		return nil, fmt.Errorf("policy %s: data under data.%s would change mcpguard's decision module; it is refused", dir, GuardPackage)
	}
	if guard == "" {
		m, err := ast.ParseModuleWithOpts(GuardFile, mcpguard.GuardModule, ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
		if err != nil {
			return nil, fmt.Errorf("built-in %s: %w", GuardFile, err)
		}
		modules[filepath.Join(dir, GuardFile)+" (built in)"] = m
	}
	if err := addDefaults(dir, modules); err != nil {
		return nil, err
	}
	if err := addFolderFacts(dir, modules); err != nil {
		return nil, err
	}
	return &Loaded{Dir: dir, Modules: modules, Documents: s.docs}, nil
}

// guardCalls are the functions of the folder the decision module calls, with
// the default each gets when the folder does not define it: nothing is
// allowed through it. (A call to a function no module defines would not
// compile.)
var guardCalls = []struct{ pkg, rule, module string }{
	{"mcp.authz", "tool_allowed", "default tool_allowed(_) := false"},
	{"mcp.authz", "resource_allowed", "default resource_allowed(_) := false"},
	{"mcp.authz", "prompt_allowed", "default prompt_allowed(_) := false"},
	{"mcp.authz", "template_allowed", "default template_allowed(_) := false"},
	{"mcp.lib", "satisfied", "default satisfied(_) := false"},
}

// addDefaults adds, for each function in guardCalls that no module of its
// package defines, a module holding its default.
func addDefaults(dir string, modules map[string]*ast.Module) error {
	defined := map[string]bool{}
	for _, m := range modules {
		for _, r := range m.Rules {
			defined[strings.TrimPrefix(r.Path().String(), "data.")] = true
		}
	}
	for _, c := range guardCalls {
		if defined[c.pkg+"."+c.rule] {
			continue
		}
		name := filepath.Join(dir, c.pkg+"."+c.rule+".rego") + " (default)"
		m, err := ast.ParseModuleWithOpts(name, "package "+c.pkg+"\n\n"+c.module+"\n", ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return fmt.Errorf("default %s.%s: %w", c.pkg, c.rule, err)
		}
		modules[name] = m
	}
	return nil
}

// refuseForeignPermissions refuses a rule of package mcp.authz written in
// another package (a ref head: package mcp; authz.tool_allowed(x) if …).
// OPA's partial evaluation, which prepares the hot path, does not carry such
// a function into its result, so the hot path and the explanation would
// disagree; the permissions belong in their package.
func refuseForeignPermissions(dir string, modules map[string]*ast.Module) error {
	prefix := "data." + PermissionPackage + "."
	for name, m := range modules {
		// Only a parent package's rule can land in mcp.authz: the package
		// itself and its sub-packages define their own paths.
		if pkg := m.Package.Path.String() + "."; strings.HasPrefix(pkg, prefix) || !strings.HasPrefix(prefix, pkg) {
			continue
		}
		for _, r := range m.Rules {
			if p := r.Path().String(); strings.HasPrefix(p, prefix) {
				return fmt.Errorf("policy %s: %s:%d: rule %s is written in package %s: write it in package %s",
					dir, name, r.Location.Row, p, strings.TrimPrefix(m.Package.Path.String(), "data."), PermissionPackage)
			}
		}
	}
	return nil
}

func hasPackage(modules map[string]*ast.Module, pkg string) bool {
	for _, m := range modules {
		if strings.TrimPrefix(m.Package.Path.String(), "data.") == pkg {
			return true
		}
	}
	return false
}

// addFolderFacts adds package mcpguard.folder: what the decision module may
// skip for this folder. tool_extensions is false when mcp.authz has no
// tool_allowed body but its default, so that a list need not ask it for
// each candidate (the answer would be false for all).
func addFolderFacts(dir string, modules map[string]*ast.Module) error {
	extensions := false
	for _, m := range modules {
		for _, r := range m.Rules {
			// The full path: a rule of a parent package may define it too
			// (package mcp; authz.tool_allowed(name) if …).
			if r.Path().String() == "data."+PermissionPackage+".tool_allowed" && !r.Default {
				extensions = true
			}
		}
	}
	name := filepath.Join(dir, GuardPackage+".folder.rego") + " (generated)"
	m, err := ast.ParseModuleWithOpts(name, fmt.Sprintf("package %s.folder\n\ntool_extensions := %t\n", GuardPackage, extensions),
		ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return fmt.Errorf("folder facts: %w", err)
	}
	modules[name] = m
	return nil
}

// ownsGuard reports whether m's package is mcpguard or below it.
func ownsGuard(m *ast.Module) bool {
	p := m.Package.Path
	return len(p) >= 2 && p[1].Value.Compare(ast.String(GuardPackage)) == 0
}

// Compile compiles the modules strictly, as the server does. A policy that
// does not compile is an error naming each file and line.
func (l *Loaded) Compile() (*ast.Compiler, error) {
	compiler := ast.NewCompiler().WithStrict(true)
	compiler.Compile(l.Modules)
	if compiler.Failed() {
		return nil, fmt.Errorf("policy %s does not compile: %w", l.Dir, compiler.Errors)
	}
	return compiler, nil
}
