package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/config"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/tools"
)

// This file serves the policy authors' tools (`mcpguard policy input` and
// `mcpguard policy catalog`): what the server would show its policy, found
// by the very code that shows it, never by a copy of its layout.

// PolicyRequest is one MCP request to describe, as it would reach the server.
type PolicyRequest struct {
	// Token is the caller's bearer token, verified as the HTTP layer
	// verifies it; empty for a request without one.
	Token string
	// Method is the JSON-RPC method; Params its params as JSON (empty:
	// none, as for tools/list without a cursor).
	Method string
	Params json.RawMessage
	// RemoteAddr and Host are the HTTP request's (RemoteAddr as
	// http.Request has it, host:port). Over stdio there is no HTTP request.
	RemoteAddr, Host string
	// Session is the MCP session the request arrives in; nil for none.
	Session *PolicySession
}

// PolicySession is what a session tells about itself: its id, and the
// protocol version and client of its initialize request.
type PolicySession struct {
	ID, ProtocolVersion, ClientName, ClientVersion string
}

// PolicyInputs are the input documents the server built for one request.
type PolicyInputs struct {
	// Allow is the input of the decision every request gets.
	Allow *policy.Input
	// Visible is, for a list method the caller may call, the input of the
	// evaluation that filters the list: Allow with the registered items as
	// candidates. Nil otherwise.
	Visible *policy.Input
}

// PolicyInput runs req through the server's authorization middleware, with
// the caller authenticated and resolved as an HTTP request of it would be,
// and returns the input documents the middleware gave the engine. No tool,
// resource or prompt handler runs: where the middleware hands an allowed
// request on, it gets an empty answer (for a list, the registered items).
// It is for a server built to answer it, not one serving requests.
func (s *Server) PolicyInput(ctx context.Context, req PolicyRequest) (*PolicyInputs, error) {
	r, err := newPolicyRequest(req.Method, req.Params)
	if err != nil {
		return nil, err
	}
	if req.Session != nil {
		ss, err := s.policySession(ctx, req.Session)
		if err != nil {
			return nil, err
		}
		defer ss.Close()
		r.setSession(ss)
	}
	if err := s.authenticatePolicyRequest(ctx, req, r); err != nil {
		return nil, err
	}

	var mu sync.Mutex
	out := &PolicyInputs{}
	s.inputSeen = func(query string, in *policy.Input) {
		mu.Lock()
		defer mu.Unlock()
		cp := *in
		switch query {
		case policy.AllowQuery:
			if out.Allow == nil {
				out.Allow = &cp
			}
		case policy.VisibleQuery:
			out.Visible = &cp
		}
	}
	defer func() { s.inputSeen = nil }()
	_, herr := s.authorize(s.emptyHandler)(ctx, req.Method, r.request)
	mu.Lock()
	defer mu.Unlock()
	if out.Allow == nil {
		// Refused before the policy was asked: roles that could not be had.
		if herr == nil {
			herr = errors.New("no decision was asked")
		}
		return nil, fmt.Errorf("the server refuses this request before asking the policy: %w", describeRPCError(herr))
	}
	return out, nil
}

// describeRPCError keeps a JSON-RPC error's message, the part a person reads.
func describeRPCError(err error) error {
	var re *jsonrpc.Error
	if errors.As(err, &re) {
		return errors.New(re.Message)
	}
	return err
}

// authenticatePolicyRequest gives r the caller of req as protect and
// authenticate would: a token verified and resolved to a principal, carried
// with the HTTP request's facts; without a token over HTTP with
// authentication on, the request never reaches MCP (401).
func (s *Server) authenticatePolicyRequest(ctx context.Context, req PolicyRequest, r *policyRequest) error {
	if s.transport == config.TransportStdio {
		if req.Token != "" {
			return errors.New("over stdio the caller's token is STDIO_ACCESS_TOKEN (read from the environment), not a request's")
		}
		return nil // the default principal: STDIO_ACCESS_TOKEN's caller, or anonymous
	}
	if s.verifier == nil {
		if req.Token != "" {
			return errors.New("with ENABLE_AUTH=false the server reads no token: every caller is anonymous")
		}
		return nil // protect passes the request on as it is: anonymous, no request facts
	}
	if req.Token == "" {
		return errors.New("with ENABLE_AUTH=true an HTTP request without a token is refused (401) before any policy")
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Azure.BaseURL+s.endpointPath(), http.NoBody)
	if err != nil {
		return err
	}
	hr.Header.Set("Authorization", "Bearer "+req.Token)
	hr.RemoteAddr, hr.Host = req.RemoteAddr, req.Host
	id, raw, err := s.verifier.Authenticate(hr)
	if err != nil {
		return fmt.Errorf("the token is refused (the server answers 401/403): %w", err)
	}
	p := s.resolve(ctx, id, raw)
	r.setExtra(&mcp.RequestExtra{TokenInfo: p.tokenInfo(hr), Header: http.Header{}})
	return nil
}

// emptyHandler stands in for the SDK's handlers: nothing registered runs.
// A list gets the registered items, so that the list's filtering is asked.
func (s *Server) emptyHandler(_ context.Context, method string, _ mcp.Request) (mcp.Result, error) {
	switch method {
	case "tools/list":
		return &mcp.ListToolsResult{Tools: s.catalog.tools}, nil
	case "resources/list":
		return &mcp.ListResourcesResult{Resources: s.catalog.resources}, nil
	case "resources/templates/list":
		return &mcp.ListResourceTemplatesResult{ResourceTemplates: s.catalog.templates}, nil
	case "prompts/list":
		return &mcp.ListPromptsResult{Prompts: s.catalog.prompts}, nil
	}
	return nil, nil
}

// policySession is a session of the server's own MCP server whose state is
// that of an initialized session, over a connection that carries nothing.
func (s *Server) policySession(ctx context.Context, ps *PolicySession) (*mcp.ServerSession, error) {
	state := &mcp.ServerSessionState{InitializedParams: &mcp.InitializedParams{}}
	if ps.ProtocolVersion != "" || ps.ClientName != "" || ps.ClientVersion != "" {
		ip := &mcp.InitializeParams{ProtocolVersion: ps.ProtocolVersion, Capabilities: &mcp.ClientCapabilities{}}
		if ps.ClientName != "" || ps.ClientVersion != "" {
			ip.ClientInfo = &mcp.Implementation{Name: ps.ClientName, Version: ps.ClientVersion}
		}
		state.InitializeParams = ip
		state.NegotiatedProtocolVersion = ps.ProtocolVersion
	}
	ss, err := s.mcp.Connect(ctx, idleTransport{id: ps.ID}, &mcp.ServerSessionOptions{State: state})
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	return ss, nil
}

// idleTransport is a connection that never delivers a message: the session
// exists for its state alone.
type idleTransport struct{ id string }

func (t idleTransport) Connect(context.Context) (mcp.Connection, error) {
	return &idleConn{id: t.id, done: make(chan struct{})}, nil
}

type idleConn struct {
	id   string
	once sync.Once
	done chan struct{}
}

func (c *idleConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case <-c.done:
		return nil, mcp.ErrConnectionClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *idleConn) Write(context.Context, jsonrpc.Message) error { return nil }

func (c *idleConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

func (c *idleConn) SessionID() string { return c.id }

// policyRequest is a request as the SDK hands it to the middleware: typed
// params, and the session and extra set later.
type policyRequest struct {
	request    mcp.Request
	setSession func(*mcp.ServerSession)
	setExtra   func(*mcp.RequestExtra)
}

// newPolicyRequest decodes params into the type the SDK decodes them into
// for method. A method the SDK does not serve never reaches the middleware.
func newPolicyRequest(method string, params json.RawMessage) (*policyRequest, error) {
	switch method {
	case "tools/call":
		return typedRequest[mcp.CallToolParamsRaw](method, params, true)
	case "resources/read":
		return typedRequest[mcp.ReadResourceParams](method, params, true)
	case "resources/subscribe":
		return typedRequest[mcp.SubscribeParams](method, params, true)
	case "resources/unsubscribe":
		return typedRequest[mcp.UnsubscribeParams](method, params, true)
	case "prompts/get":
		return typedRequest[mcp.GetPromptParams](method, params, true)
	case "completion/complete":
		return typedRequest[mcp.CompleteParams](method, params, true)
	case "subscriptions/listen":
		return typedRequest[mcp.SubscriptionsListenParams](method, params, true)
	case "initialize":
		return typedRequest[mcp.InitializeParams](method, params, true)
	case "logging/setLevel":
		return typedRequest[mcp.SetLoggingLevelParams](method, params, true)
	case "notifications/progress":
		return typedRequest[mcp.ProgressNotificationParams](method, params, true)
	case "tools/list":
		return typedRequest[mcp.ListToolsParams](method, params, false)
	case "resources/list":
		return typedRequest[mcp.ListResourcesParams](method, params, false)
	case "resources/templates/list":
		return typedRequest[mcp.ListResourceTemplatesParams](method, params, false)
	case "prompts/list":
		return typedRequest[mcp.ListPromptsParams](method, params, false)
	case "server/discover":
		return typedRequest[mcp.DiscoverParams](method, params, false)
	case "ping":
		return typedRequest[mcp.PingParams](method, params, false)
	case "notifications/initialized":
		return typedRequest[mcp.InitializedParams](method, params, false)
	case "notifications/cancelled":
		return typedRequest[mcp.CancelledParams](method, params, false)
	case "notifications/roots/list_changed":
		return typedRequest[mcp.RootsListChangedParams](method, params, false)
	}
	return nil, fmt.Errorf("method %q: the server does not serve it, so no request for it reaches the policy (it serves %v)", method, ServedMethods())
}

// ServedMethods are the methods newPolicyRequest knows: those the SDK's
// server dispatches to a handler.
func ServedMethods() []string {
	m := []string{"tools/call", "resources/read", "resources/subscribe", "resources/unsubscribe", "prompts/get",
		"completion/complete", "subscriptions/listen", "initialize", "logging/setLevel", "notifications/progress",
		"tools/list", "resources/list", "resources/templates/list", "prompts/list", "server/discover", "ping",
		"notifications/initialized", "notifications/cancelled", "notifications/roots/list_changed"}
	sort.Strings(m)
	return m
}

func typedRequest[T any, P interface {
	*T
	mcp.Params
}](method string, raw json.RawMessage, required bool) (*policyRequest, error) {
	r := &mcp.ServerRequest[P]{}
	if len(raw) > 0 && string(raw) != "null" {
		var p P
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("%s params: %w", method, err)
		}
		r.Params = p
	} else if required {
		return nil, fmt.Errorf("%s needs params (the SDK refuses the request without them)", method)
	}
	return &policyRequest{
		request:    r,
		setSession: func(ss *mcp.ServerSession) { r.Session = ss },
		setExtra:   func(e *mcp.RequestExtra) { r.Extra = e },
	}, nil
}

// Catalog is what a server registers, as its policy sees it: each tool,
// resource, resource template and prompt keyed as data.mcp.catalog keys its
// rows (tool name, URI, URI template, prompt name), with the fields MCP
// lists for it. A tool's annotations are those the policy reads in
// input.mcp.tool.annotations (the protocol's defaults applied).
type Catalog struct {
	Tools             map[string]map[string]any `json:"tools"`
	Resources         map[string]map[string]any `json:"resources"`
	ResourceTemplates map[string]map[string]any `json:"resource_templates"`
	Prompts           map[string]map[string]any `json:"prompts"`
}

// ReadCatalog registers what register adds (tools.Register when nil) on a
// bare MCP server and reads it back as the server does at start.
func ReadCatalog(ctx context.Context, register func(*mcp.Server)) (*Catalog, error) {
	if register == nil {
		register = tools.Register
	}
	ms := mcp.NewServer(&mcp.Implementation{Name: "mcpguard", Version: Version}, nil)
	register(ms)
	c, err := readCatalog(ctx, ms)
	if err != nil {
		return nil, fmt.Errorf("reading the registered tools: %w", err)
	}
	out := &Catalog{Tools: map[string]map[string]any{}, Resources: map[string]map[string]any{},
		ResourceTemplates: map[string]map[string]any{}, Prompts: map[string]map[string]any{}}
	for _, t := range c.tools {
		m, err := fieldsOf(t, "name")
		if err != nil {
			return nil, fmt.Errorf("tool %s: %w", t.Name, err)
		}
		ann, err := fragmentJSON(c.toolAnnotations[t.Name])
		if err != nil {
			return nil, fmt.Errorf("tool %s annotations: %w", t.Name, err)
		}
		m["annotations"] = ann
		out.Tools[t.Name] = m
	}
	for _, r := range c.resources {
		if out.Resources[r.URI], err = fieldsOf(r, "uri"); err != nil {
			return nil, fmt.Errorf("resource %s: %w", r.URI, err)
		}
	}
	for _, r := range c.templates {
		if out.ResourceTemplates[r.URITemplate], err = fieldsOf(r, "uriTemplate"); err != nil {
			return nil, fmt.Errorf("resource template %s: %w", r.URITemplate, err)
		}
	}
	for _, p := range c.prompts {
		if out.Prompts[p.Name], err = fieldsOf(p, "name"); err != nil {
			return nil, fmt.Errorf("prompt %s: %w", p.Name, err)
		}
	}
	return out, nil
}

// fieldsOf is x's JSON object without its key field (the map's key).
func fieldsOf(x any, key string) (map[string]any, error) {
	b, err := json.Marshal(x)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, key)
	return m, nil
}

// fragmentJSON is the value the policy reads for f; a tool without a
// fragment reads as one that declared no hints.
func fragmentJSON(f *policy.Fragment) (any, error) {
	if f == nil {
		f = policy.ToolHints{}.Fragment()
	}
	b, err := f.JSON()
	if err != nil {
		return nil, err
	}
	var x any
	return x, json.Unmarshal(b, &x)
}
