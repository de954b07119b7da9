package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/devidp"
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

// devIdentity is a caller of the embedded development identity provider,
// as `token --dev` and `policy input` take it from flags.
type devIdentity struct {
	user, roles, scopes, groups *string
	app, v1                     *bool
	lifetime                    *time.Duration
}

func addDevIdentityFlags(fs *flag.FlagSet) *devIdentity {
	return &devIdentity{
		user:     fs.String("user", "alice", "user (or app) name; the object id is derived from it"),
		roles:    fs.String("roles", "", "comma-separated Entra app roles (the roles claim)"),
		scopes:   fs.String("scopes", "", "comma-separated delegated scopes (default: AZURE_REQUIRED_SCOPES)"),
		groups:   fs.String("groups", "", "comma-separated group ids"),
		app:      fs.Bool("app", false, "an app-only token (client credentials): no scp, idtyp=app"),
		lifetime: fs.Duration("lifetime", time.Hour, "token lifetime"),
		v1:       fs.Bool("v1", false, "a v1 token (needs AZURE_ACCEPT_V1_TOKENS=true on the server)"),
	}
}

// mint signs the identity's token with the issuer, for cfg's API.
func (d *devIdentity) mint(cfg *config.Config, iss *devidp.Issuer) (string, error) {
	sc := splitList(*d.scopes)
	if *d.scopes == "" {
		sc = cfg.Azure.RequiredScopes
	}
	return iss.Mint(devidp.Token{
		Audience: cfg.Azure.ClientID, User: *d.user, App: *d.app, Scopes: sc,
		Roles: splitList(*d.roles), Groups: splitList(*d.groups), Lifetime: *d.lifetime, V1: *d.v1,
	})
}

// devIssuer is the development identity provider of cfg, with its key
// (DEV_IDP_KEY_FILE, made when absent): the one a running server trusts.
func devIssuer(cfg *config.Config) (*devidp.Issuer, error) {
	key, err := devidp.LoadOrCreateKey(cfg.Dev.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("DEV_IDP_KEY_FILE: %w", err)
	}
	return devidp.New(cfg.Azure.AuthorityHost, cfg.Azure.TenantID, key)
}

// token prints an access token signed by the development identity provider.
func token(args []string, stdout io.Writer) error {
	fs := newFlagSet("token", "token --dev [flags]",
		"Prints an access token signed by the embedded development identity provider,\nfor a server run with DEV_IDP=true (make run).\n")
	dev := fs.Bool("dev", false, "sign with the embedded development identity provider (the only kind of token this command makes)")
	id := addDevIdentityFlags(fs)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if !*dev {
		return &usageError{msg: "token: only development tokens can be made here (--dev); real tokens come from Entra ID", usage: flagUsage(fs)}
	}
	// Only the dev IdP's settings are read here; it never runs in production.
	cfg, _, err := config.Load([]string{"--dev-idp=true", "--environment=development"})
	if err != nil {
		return err
	}
	iss, err := devIssuer(cfg)
	if err != nil {
		return err
	}
	tok, err := id.mint(cfg, iss)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

const keysUsage = "usage: mcpguard keys generate\n\nPrints fresh JWT_SIGNING_KEY and STORAGE_ENCRYPTION_KEY lines for .env.\n"

// keys prints fresh secrets for the .env file.
func keys(args []string, stdout io.Writer) error {
	if wantsHelp(args) {
		fmt.Fprint(stdout, keysUsage)
		return nil
	}
	if len(args) != 1 || args[0] != "generate" {
		return &usageError{msg: fmt.Sprintf("keys: want generate, not %q", args), usage: keysUsage}
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

func policyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{msg: "policy: which command?", usage: policyUsage}
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, policyUsage)
		return nil
	case "lint":
		return policyLint(ctx, args, stdout)
	case "roles":
		return policyRoles(args, stdout)
	case "test":
		return policyTest(ctx, args, stdout, stderr)
	case "eval":
		return policyEval(ctx, args, stdout, stderr)
	case "input":
		return policyInput(ctx, args, stdout, stderr)
	case "catalog":
		return policyCatalog(ctx, args, stdout)
	case "replay":
		return policyReplay(ctx, args, stdout, stderr)
	}
	return &usageError{msg: fmt.Sprintf("policy: unknown command %q", sub), usage: policyUsage}
}
