package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/server"
)

const inputAbout = `Prints the input document the server would give its policy for one request,
built by the server's own code: the caller's token verified by the server's
authentication, its roles resolved by the configured role source (ROLE_SOURCE),
the request described by the authorization middleware. Nothing is executed.

The caller is one of:
  a development identity (the default: --user alice): a token of the embedded
    development identity provider, as make run trusts it. The server settings
    are those of make run (DEV_IDP=true, ENVIRONMENT=development) over the
    environment and .env (ENV_FILE); the provider's address DEV_IDP_ADDR is
    served for the command, or, when a server already serves it, that one is used;
  a real token, --token-file FILE (- for standard input; never on the command
    line, where ps shows it), verified with the server settings of the
    environment and .env (ENV_FILE), as serve reads them;
  --anonymous: no token, the server run with ENABLE_AUTH=false.
The request is --method with --tool/--resource/--prompt and --arguments, or
--params with the request's params as JSON (any method). A request arrives
in no MCP session unless --session-id, --client or --protocol-version say one.
--time stamps it (default now; the token's iat/exp are those of minting).
Exit status: 0 printed, 1 the server refuses the request before asking the
policy (a refused token, roles that cannot be had, arguments it never shows
the policy), 2 a bad command line.
`

// defaultRemoteAddr stands for the client's address: a loopback client.
const defaultRemoteAddr = "127.0.0.1:49152"

// policyInput is `mcpguard policy input`.
func policyInput(ctx context.Context, args []string, stdout, _ io.Writer) error {
	fs := newFlagSet("policy input", "policy input [--policy-dir D] [caller] [request]", inputAbout)
	dir := fs.String("policy-dir", "policies", policyDirUsage)
	id := addDevIdentityFlags(fs)
	tokenFile := fs.String("token-file", "", "the caller's token: a file holding it, or - for standard input")
	anonymous := fs.Bool("anonymous", false, "a caller without a token (the server run with ENABLE_AUTH=false)")
	method := fs.String("method", "", "the JSON-RPC method (default: tools/call with --tool, resources/read with --resource, prompts/get with --prompt)")
	tool := fs.String("tool", "", "the tool a tools/call calls")
	resource := fs.String("resource", "", "the URI of resources/read, resources/subscribe or resources/unsubscribe")
	prompt := fs.String("prompt", "", "the prompt prompts/get gets")
	arguments := fs.String("arguments", "", "the tool's arguments (a JSON object, sent as given) or the prompt's (an object of strings)")
	params := fs.String("params", "", "the request's params as JSON, for any method (instead of --tool, --resource, --prompt, --arguments)")
	sessionID := fs.String("session-id", "", "the MCP session's id")
	client := fs.String("client", "", "the session's client as NAME/VERSION (its initialize request's clientInfo)")
	protocol := fs.String("protocol-version", "", "the session's protocol version")
	remoteAddr := fs.String("remote-addr", defaultRemoteAddr, "the HTTP client's address, host:port")
	host := fs.String("host", "", "the HTTP request's Host (default: the host of AZURE_BASE_URL)")
	at := fs.String("time", "", "the request's time, RFC 3339 (default: now)")
	visible := fs.Bool("visible", false, "for a list method: the input of the list's filtering, with the registered items as candidates")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	bad := func(format string, a ...any) error {
		return &usageError{msg: "policy input: " + fmt.Sprintf(format, a...), usage: flagUsage(fs)}
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	devSet := ""
	for _, n := range []string{"user", "roles", "scopes", "groups", "app", "lifetime", "v1"} {
		if set[n] {
			devSet = n
		}
	}
	if *tokenFile != "" && *anonymous {
		return bad("--token-file and --anonymous are two different callers")
	}
	if devSet != "" && (*tokenFile != "" || *anonymous) {
		return bad("--%s describes a development identity: not with --token-file or --anonymous", devSet)
	}
	req, err := inputRequest(*method, *tool, *resource, *prompt, *arguments, *params)
	if err != nil {
		return bad("%v", err)
	}
	var when time.Time
	if *at != "" {
		if when, err = time.Parse(time.RFC3339Nano, *at); err != nil {
			return bad("--time: %v", err)
		}
	}
	if *client != "" || *protocol != "" || *sessionID != "" {
		name, version, _ := strings.Cut(*client, "/")
		req.Session = &server.PolicySession{ID: *sessionID, ProtocolVersion: *protocol, ClientName: name, ClientVersion: version}
	}
	if *visible && !isListMethod(req.Method) {
		return bad("--visible is for a list method (tools/list, resources/list, resources/templates/list, prompts/list)")
	}

	// The server's settings, with the policy folder of this command.
	cfgArgs := []string{"--policy-dir=" + *dir, "--log-level=error"}
	var stopIDP func()
	var cfg *config.Config
	switch {
	case *anonymous:
		cfg, _, err = config.Load(append(cfgArgs, "--enable-auth=false", "--environment=development"))
	case *tokenFile != "":
		if req.Token, err = readToken(*tokenFile); err == nil {
			cfg, stopIDP, err = devServer(cfgArgs)
		}
		if err == nil {
			defer stopIDP()
		}
	default:
		cfg, stopIDP, err = devServer(append(cfgArgs, "--dev-idp=true", "--environment=development", "--enable-auth=true"))
		if err == nil {
			defer stopIDP()
			req.Token, err = mintFor(id, cfg)
		}
	}
	if err != nil {
		return err
	}
	req.RemoteAddr, req.Host = *remoteAddr, *host
	if req.Host == "" {
		if u, err := url.Parse(cfg.Azure.BaseURL); err == nil {
			req.Host = u.Host
		}
	}

	srv, err := server.New(ctx, cfg, server.Options{})
	if err != nil {
		return err
	}
	ins, err := srv.PolicyInput(ctx, req)
	if err != nil {
		if cfg.Dev.Enabled && strings.Contains(err.Error(), "token is refused") {
			err = fmt.Errorf("%w (a server already serving DEV_IDP_ADDR %s must use the same DEV_IDP_KEY_FILE %s)", err, cfg.Dev.Addr, cfg.Dev.KeyFile)
		}
		return err
	}
	in := ins.Allow
	if *visible {
		if ins.Visible == nil {
			return fmt.Errorf("the policy denies %s itself to this caller: no list is filtered (the input of that decision is the one without --visible)", req.Method)
		}
		in = ins.Visible
	}
	if !when.IsZero() {
		in.Request.TimeNS = when.UnixNano()
	}
	doc, err := in.Document()
	if err != nil {
		return fmt.Errorf("the server refuses this request before asking the policy: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, doc, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = stdout.Write(out.Bytes())
	return err
}

func isListMethod(m string) bool {
	switch m {
	case "tools/list", "resources/list", "resources/templates/list", "prompts/list":
		return true
	}
	return false
}

// inputRequest is the request the flags describe: --params as given, or
// params made of --tool, --resource, --prompt and --arguments.
func inputRequest(method, tool, resource, prompt, arguments, params string) (server.PolicyRequest, error) {
	r := server.PolicyRequest{Method: method}
	named := 0
	for _, s := range []string{tool, resource, prompt} {
		if s != "" {
			named++
		}
	}
	if named > 1 {
		return r, errors.New("one of --tool, --resource and --prompt")
	}
	if params != "" {
		if named > 0 || arguments != "" {
			return r, errors.New("--params holds the whole params: not with --tool, --resource, --prompt or --arguments")
		}
		if method == "" {
			return r, errors.New("--params needs --method")
		}
		r.Params = json.RawMessage(params)
		return r, nil
	}
	want := func(m string) {
		if r.Method == "" {
			r.Method = m
		}
	}
	quote := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	switch {
	case tool != "":
		want("tools/call")
		if r.Method != "tools/call" {
			return r, fmt.Errorf("--tool is for tools/call, not %s", r.Method)
		}
		p := `{"name":` + quote(tool)
		if arguments != "" {
			// The arguments as given, byte for byte: the policy is shown
			// them exactly as the tool will read them, or not at all.
			p += `,"arguments":` + arguments
		}
		r.Params = json.RawMessage(p + "}")
	case resource != "":
		want("resources/read")
		switch r.Method {
		case "resources/read", "resources/subscribe", "resources/unsubscribe":
		default:
			return r, fmt.Errorf("--resource is for resources/read, resources/subscribe and resources/unsubscribe, not %s", r.Method)
		}
		if arguments != "" {
			return r, errors.New("--arguments: a resource has none")
		}
		r.Params = json.RawMessage(`{"uri":` + quote(resource) + `}`)
	case prompt != "":
		want("prompts/get")
		if r.Method != "prompts/get" {
			return r, fmt.Errorf("--prompt is for prompts/get, not %s", r.Method)
		}
		p := `{"name":` + quote(prompt)
		if arguments != "" {
			p += `,"arguments":` + arguments
		}
		r.Params = json.RawMessage(p + "}")
	default:
		if arguments != "" {
			return r, errors.New("--arguments goes with --tool or --prompt")
		}
		if method == "" {
			return r, errors.New("which request? give --method, --tool, --resource or --prompt")
		}
	}
	if len(r.Params) > 0 && !json.Valid(r.Params) {
		return r, fmt.Errorf("--arguments is not JSON: %s", arguments)
	}
	return r, nil
}

// readToken reads a token from a file or standard input ("-").
func readToken(path string) (string, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("--token-file %s is empty", path)
	}
	return t, nil
}

// devServer loads the server's settings and, when they run the development
// identity provider (DEV_IDP=true), serves it at DEV_IDP_ADDR for the
// server's verifier, as serve does, unless something serves that address
// already (a running make run, whose issuer is the same when its key file
// is). An address with port 0 is served on a free port.
func devServer(cfgArgs []string) (*config.Config, func(), error) {
	cfg, _, err := config.Load(cfgArgs)
	if err != nil || !cfg.Dev.Enabled {
		return cfg, func() {}, err
	}
	ln, err := net.Listen("tcp", cfg.Dev.Addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return cfg, func() {}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("DEV_IDP_ADDR: %w", err)
	}
	if addr := ln.Addr().String(); addr != cfg.Dev.Addr {
		if cfg, _, err = config.Load(append(cfgArgs, "--dev-idp-addr="+addr)); err != nil {
			_ = ln.Close()
			return nil, nil, err
		}
	}
	iss, err := devIssuer(cfg)
	if err != nil {
		_ = ln.Close()
		return nil, nil, err
	}
	hs := &http.Server{Handler: iss.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	return cfg, func() { _ = hs.Close() }, nil
}

// mintFor signs the development identity's token with cfg's issuer key.
func mintFor(id *devIdentity, cfg *config.Config) (string, error) {
	iss, err := devIssuer(cfg)
	if err != nil {
		return "", err
	}
	return id.mint(cfg, iss)
}
