package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/server"
)

const lintAbout = `Finds what the policy folder does silently wrong: rules and data the server never
reads (a deny in another package, a data file in a sub-folder), vetoes that fire
on every request or on none, registered tools, resources, templates and prompts no
rule can allow, catalog rows that name nothing registered or are malformed, and
role names a roles registry does not list (data.mcp.roles, --roles-file,
--realm-export). Each finding is printed as file:line: check: message.
It reads no server configuration (.env, environment). Exit status: 0 clean,
1 findings (or a policy that does not compile), 2 a bad command line.
`

// policyLint is `mcpguard policy lint`.
func policyLint(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("policy lint", "policy lint [--policy-dir D] [--roles-file F] [--realm-export F] [--json]", lintAbout)
	dir := fs.String("policy-dir", "policies", policyDirUsage)
	rolesFile := fs.String("roles-file", "", "a roles file (ROLES_FILE): every role the policy names must be one it grants")
	realmExport := fs.String("realm-export", "", "a Keycloak realm export (JSON file): every role the policy names must be defined there")
	asJSON := fs.Bool("json", false, `print {"policy_dir": …, "findings": [{"check", "severity", "file", "line", "message"}]}`)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	opts, err := lintRoles(*rolesFile, *realmExport)
	if err != nil {
		return err
	}
	if opts.Registered, err = server.Registered(ctx, nil); err != nil {
		return err
	}
	eng, err := policy.New(ctx, *dir)
	if err != nil {
		return err
	}
	findings, err := eng.Lint(ctx, opts)
	if err != nil {
		return err
	}
	if *asJSON {
		out := struct {
			PolicyDir string           `json:"policy_dir"`
			Findings  []policy.Finding `json:"findings"`
		}{*dir, findings}
		if out.Findings == nil {
			out.Findings = []policy.Finding{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		for _, f := range findings {
			fmt.Fprintln(stdout, f)
		}
		if len(findings) == 0 {
			fmt.Fprintf(stdout, "%s: no findings: every rule and data document is read, no veto always or never fires, every registered item can be allowed and every row names one\n", *dir)
		} else {
			fmt.Fprintf(stdout, "%s: %d finding(s)\n", *dir, len(findings))
		}
	}
	if len(findings) > 0 {
		return exitError(1)
	}
	return nil
}

// lintRoles reads the role registries named on the command line.
func lintRoles(rolesFile, realmExport string) (policy.LintOptions, error) {
	var opts policy.LintOptions
	if rolesFile != "" {
		r, err := server.RolesFileRegistry(rolesFile)
		if err != nil {
			return opts, err
		}
		opts.Roles = append(opts.Roles, r)
	}
	if realmExport != "" {
		r, err := server.RealmExportRegistry(realmExport)
		if err != nil {
			return opts, err
		}
		opts.Roles = append(opts.Roles, r)
	}
	return opts, nil
}

const rolesAbout = `Prints the roles registry (data.mcp.roles) of a roles file or a Keycloak realm
export, as a data file for the policy folder: save it as policies/roles.json, and
policy lint then finds every role name the catalog or a rule misspells.
`

// policyRoles is `mcpguard policy roles`.
func policyRoles(args []string, stdout io.Writer) error {
	fs := newFlagSet("policy roles", "policy roles (--roles-file F | --realm-export F)", rolesAbout)
	rolesFile := fs.String("roles-file", "", "a roles file (ROLES_FILE): the roles it grants")
	realmExport := fs.String("realm-export", "", "a Keycloak realm export (JSON file): the roles it defines")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if (*rolesFile == "") == (*realmExport == "") {
		return &usageError{msg: "policy roles: give one of --roles-file and --realm-export", usage: flagUsage(fs)}
	}
	opts, err := lintRoles(*rolesFile, *realmExport)
	if err != nil {
		return err
	}
	doc := map[string]any{"mcp": map[string]any{"roles": opts.Roles[0]}}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}
