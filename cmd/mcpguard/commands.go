package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/internal/server"
)

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// token prints an access token signed by the development identity provider.
func token(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	dev := fs.Bool("dev", false, "sign with the embedded development identity provider (the only kind of token this command makes)")
	user := fs.String("user", "alice", "user (or app) name; the object id is derived from it")
	roles := fs.String("roles", "", "comma-separated Entra app roles (the roles claim)")
	scopes := fs.String("scopes", "", "comma-separated delegated scopes (default: AZURE_REQUIRED_SCOPES)")
	groups := fs.String("groups", "", "comma-separated group ids")
	app := fs.Bool("app", false, "an app-only token (client credentials): no scp, idtyp=app")
	lifetime := fs.Duration("lifetime", time.Hour, "token lifetime")
	v1 := fs.Bool("v1", false, "a v1 token (needs AZURE_ACCEPT_V1_TOKENS=true on the server)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*dev {
		return fmt.Errorf("token: only development tokens can be made here (--dev); real tokens come from Entra ID")
	}
	// Only the dev IdP's settings are read here; it never runs in production.
	cfg, _, err := config.Load([]string{"--dev-idp=true", "--environment=development"})
	if err != nil {
		return err
	}
	key, err := devidp.LoadOrCreateKey(cfg.Dev.KeyFile)
	if err != nil {
		return err
	}
	iss, err := devidp.New(cfg.Azure.AuthorityHost, cfg.Azure.TenantID, key)
	if err != nil {
		return err
	}
	sc := splitList(*scopes)
	if *scopes == "" {
		sc = cfg.Azure.RequiredScopes
	}
	tok, err := iss.Mint(devidp.Token{
		Audience: cfg.Azure.ClientID, User: *user, App: *app, Scopes: sc,
		Roles: splitList(*roles), Groups: splitList(*groups), Lifetime: *lifetime, V1: *v1,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// keys prints fresh secrets for the .env file.
func keys(args []string, stdout io.Writer) error {
	if len(args) != 1 || args[0] != "generate" {
		return fmt.Errorf("usage: mcpguard keys generate")
	}
	gen := func() string {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			panic(err)
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	fmt.Fprintf(stdout, "JWT_SIGNING_KEY=%s\nSTORAGE_ENCRYPTION_KEY=%s\n", gen(), gen())
	return nil
}

func policyCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: mcpguard policy lint | test | eval --input FILE")
	}
	sub, args := args[0], args[1:]
	ctx := context.Background()
	switch sub {
	case "lint":
		// The lint serves nothing: the production guards on serving do not apply.
		cfg, _, err := config.Load(append([]string{"--enable-auth=false", "--log-level=error", "--environment=development"}, args...))
		if err != nil {
			return err
		}
		srv, err := server.New(ctx, cfg, server.Options{})
		if err != nil {
			return err
		}
		un, err := srv.Unreachable(ctx)
		if err != nil {
			return err
		}
		for _, u := range un {
			fmt.Fprintf(stdout, "%s %q: no rule in %s can ever allow it\n", u.Kind, u.Name, cfg.PolicyDir)
		}
		bad, err := srv.Engine().CatalogErrors(ctx)
		if err != nil {
			return err
		}
		for _, b := range bad {
			fmt.Fprintf(stdout, "%s: %s\n", cfg.PolicyDir, b)
		}
		if len(un) > 0 || len(bad) > 0 {
			return exitError(1)
		}
		fmt.Fprintf(stdout, "every registered tool, resource and prompt can be allowed by %s, and its catalog is well formed\n", cfg.PolicyDir)
		return nil
	case "test":
		dir := "policies"
		if len(args) > 0 {
			dir = args[0]
		}
		results, err := tester.Run(ctx, dir)
		if err != nil {
			return err
		}
		failed, total := 0, 0
		for _, r := range results {
			total++
			if r.Fail || r.Error != nil {
				failed++
				fmt.Fprintf(stdout, "FAIL %s.%s %v\n", r.Package, r.Name, r.Error)
			}
		}
		fmt.Fprintf(stdout, "%d passed, %d failed\n", total-failed, failed)
		if failed > 0 || total == 0 {
			return exitError(1)
		}
		return nil
	case "eval":
		fs := flag.NewFlagSet("policy eval", flag.ContinueOnError)
		input := fs.String("input", "", "a JSON file with an input document (the layout of docs/POLICIES.md)")
		dir := fs.String("dir", "policies", "policy folder")
		if err := fs.Parse(args); err != nil {
			return err
		}
		data, err := os.ReadFile(*input)
		if err != nil {
			return err
		}
		eng, err := policy.New(ctx, *dir)
		if err != nil {
			return err
		}
		d, err := eng.DecideDocument(ctx, data)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	}
	_ = stderr
	return fmt.Errorf("unknown policy command %q", sub)
}
