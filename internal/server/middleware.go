package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/exchange"
	"github.com/mcpguard/mcpguard/internal/policy"
	"github.com/mcpguard/mcpguard/tools"
)

// JSON-RPC error codes for refused requests, in the implementation-defined
// range and clear of the codes the SDK and MCP use (-32001…-32005, -32020…, -32042).
const (
	// CodeAccessDenied: the policy denied the request.
	CodeAccessDenied = -32030
	// CodeAuthorizationUnavailable: roles or the policy could not be had; the request is refused.
	CodeAuthorizationUnavailable = -32031
)

// DenialData is the data of a refused request's JSON-RPC error.
type DenialData struct {
	DecisionID string   `json:"decision_id"`
	Reasons    []string `json:"reasons"`
}

// requestFacts travel from the HTTP layer to the MCP middleware inside the
// request's TokenInfo.Extra, the one per-request channel the SDK offers.
type requestFacts struct {
	p          *principal
	remoteAddr string
	host       string
}

const extraKey = "mcpguard"

// authorizer is the receiving middleware: one decision for every method,
// made for the caller of this very request (its TokenInfo; over legacy SSE,
// the TokenInfo of the POST that brought it). A panic in the decision or the
// handler answers an internal error for this request alone.
func (s *Server) authorizer() mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return s.recovering(s.traced(s.authorize(next)))
	}
}

func (s *Server) authorize(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		p, facts := s.principalOf(req)
		in := policy.Input{
			Identity:      p.identityDoc,
			Authorization: p.authzDoc,
			Request: policy.Request{
				TimeNS:     time.Now().UnixNano(),
				Transport:  s.transport,
				RemoteAddr: facts.remoteAddr,
				Host:       facts.host,
			},
		}
		in.MCP.Method = method
		describeSession(&in.MCP, req)
		if p.authzErr != nil {
			return nil, s.unavailable(method, p)
		}
		if isList(method) {
			return s.list(ctx, method, req, &in, p, next)
		}
		switch params := req.GetParams().(type) {
		case *mcp.CallToolParamsRaw:
			in.MCP.Tool = &policy.Tool{Name: params.Name, Arguments: params.Arguments, Annotations: s.catalog.toolAnnotations[params.Name]}
		case *mcp.ReadResourceParams:
			in.MCP.ResourceURI = params.URI
		case *mcp.SubscribeParams:
			in.MCP.ResourceURI = params.URI
		case *mcp.UnsubscribeParams:
			in.MCP.ResourceURI = params.URI
		case *mcp.GetPromptParams:
			in.MCP.Prompt = &policy.Prompt{Name: params.Name, Arguments: params.Arguments}
		case *mcp.CompleteParams:
			// Completion reveals a prompt's or resource's argument values:
			// the policy decides it like a use of its ref.
			c := &policy.Completion{Argument: params.Argument.Name, Value: params.Argument.Value}
			if params.Ref != nil {
				c.RefType, c.Name, c.URI = params.Ref.Type, params.Ref.Name, params.Ref.URI
			}
			if params.Context != nil {
				c.ContextArguments = params.Context.Arguments
			}
			in.MCP.Completion = c
		case *mcp.SubscriptionsListenParams:
			// The SDK subscribes to these URIs from inside the listen
			// handler, past this middleware: decide them here.
			sub := &policy.Subscriptions{ResourceURIs: []string{}}
			if n := params.Notifications; n != nil {
				sub.ResourceURIs = append(sub.ResourceURIs, n.ResourceSubscriptions...)
				sub.ToolsListChanged, sub.PromptsListChanged, sub.ResourcesListChanged = n.ToolsListChanged, n.PromptsListChanged, n.ResourcesListChanged
			}
			in.MCP.Subscriptions = sub
		case *mcp.InitializeParams:
			if params.ClientInfo != nil {
				in.MCP.ClientName, in.MCP.ClientVersion = params.ClientInfo.Name, params.ClientInfo.Version
			}
			in.MCP.ProtocolVersion = params.ProtocolVersion
		}
		s.observe(policy.AllowQuery, &in)
		began := time.Now()
		d, err := s.engine.Decide(ctx, &in)
		s.metrics.decided(method, in.MCP.Tool, began, d.Allow && err == nil)
		s.noteDecision(ctx, d, err)
		if err != nil || !d.Allow {
			return nil, s.deny(method, p, d, err)
		}
		ctx = context.WithValue(ctx, requestInputKey{}, &in)
		return next(tools.WithAuthContext(ctx, p.auth), method, req)
	}
}

func (s *Server) principalOf(req mcp.Request) (*principal, requestFacts) {
	if extra := req.GetExtra(); extra != nil && extra.TokenInfo != nil {
		if f, ok := extra.TokenInfo.Extra[extraKey].(*requestFacts); ok && f.p != nil {
			return f.p, *f
		}
	}
	return s.defaultPrincipal(), requestFacts{}
}

// describeSession fills in the session, its protocol version and client: from
// the initialize handshake, or, under the 2026-07-28 protocol, from the
// request's own _meta, which says them on every request (a session's first
// request sets the session's, and server/discover sets none before it runs).
func describeSession(m *policy.MCP, req mcp.Request) {
	if ss, ok := req.GetSession().(*mcp.ServerSession); ok && ss != nil {
		m.SessionID = ss.ID()
		if ip := ss.InitializeParams(); ip != nil {
			m.ProtocolVersion = ip.ProtocolVersion
			if ip.ClientInfo != nil {
				m.ClientName, m.ClientVersion = ip.ClientInfo.Name, ip.ClientInfo.Version
			}
		}
	}
	params := req.GetParams()
	if params == nil || reflect.ValueOf(params).IsNil() {
		return
	}
	meta := params.GetMeta()
	// The SDK reads the request as the new protocol from this version on.
	if v, ok := meta[mcp.MetaKeyProtocolVersion].(string); ok && v >= newProtocol {
		m.ProtocolVersion = v
		if ci, ok := meta[mcp.MetaKeyClientInfo].(map[string]any); ok {
			m.ClientName, _ = ci["name"].(string)
			m.ClientVersion, _ = ci["version"].(string)
		}
	}
}

// newProtocol is the first protocol version whose requests carry their
// protocol version and client in _meta (SEP-2575).
const newProtocol = "2026-07-28"

func isList(method string) bool {
	switch method {
	case "tools/list", "resources/list", "resources/templates/list", "prompts/list":
		return true
	}
	return false
}

// list asks allow for the list method itself, then lets the handler build
// the page and keeps only what data.mcp.authz.visible names, in one evaluation.
func (s *Server) list(ctx context.Context, method string, req mcp.Request, in *policy.Input, p *principal, next mcp.MethodHandler) (mcp.Result, error) {
	s.observe(policy.AllowQuery, in)
	began := time.Now()
	d, err := s.engine.Decide(ctx, in)
	s.metrics.decided(method, nil, began, d.Allow && err == nil)
	s.noteDecision(ctx, d, err)
	if err != nil || !d.Allow {
		return nil, s.deny(method, p, d, err)
	}
	// The SDK pages by its own cursor over the unfiltered list (whose last
	// item, hidden or not, the cursor names, and any crafted cursor is
	// honoured): it hands over the whole list, and pages are cut here, after
	// filtering, so a cursor can only walk what the caller may see.
	after, err := takeCursor(req)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: "invalid cursor"}
	}
	res, err := next(ctx, method, req)
	if err != nil {
		return res, err
	}
	var cands policy.Candidates
	switch r := res.(type) {
	case *mcp.ListToolsResult:
		cands.Tools = s.catalog.toolCandidates(r.Tools)
	case *mcp.ListResourcesResult:
		cands.Resources = make([]policy.Candidate, len(r.Resources))
		for i, x := range r.Resources {
			cands.Resources[i] = policy.Candidate{Name: x.URI}
		}
	case *mcp.ListResourceTemplatesResult:
		cands.ResourceTemplates = make([]policy.Candidate, len(r.ResourceTemplates))
		for i, x := range r.ResourceTemplates {
			cands.ResourceTemplates[i] = policy.Candidate{Name: x.URITemplate}
		}
	case *mcp.ListPromptsResult:
		cands.Prompts = make([]policy.Candidate, len(r.Prompts))
		for i, x := range r.Prompts {
			cands.Prompts[i] = policy.Candidate{Name: x.Name}
		}
	default:
		return nil, s.deny(method, p, policy.Decision{ID: "", Reasons: []string{"unexpected list result"}}, errors.New("unexpected list result"))
	}
	in.MCP.Candidates = &cands
	visible, err := s.visible(ctx, in)
	if err != nil {
		return nil, s.deny(method, p, policy.Decision{Reasons: []string{"policy evaluation failed"}}, err)
	}
	// New result values with new slices: the SDK shares the items themselves.
	size := s.cfg.ListPageSize
	switch r := res.(type) {
	case *mcp.ListToolsResult:
		out := *r
		out.Tools, out.NextCursor = page(r.Tools, visible, func(t *mcp.Tool) string { return t.Name }, after, size)
		return &out, nil
	case *mcp.ListResourcesResult:
		out := *r
		out.Resources, out.NextCursor = page(r.Resources, visible, func(x *mcp.Resource) string { return x.URI }, after, size)
		return &out, nil
	case *mcp.ListResourceTemplatesResult:
		out := *r
		out.ResourceTemplates, out.NextCursor = page(r.ResourceTemplates, visible, func(x *mcp.ResourceTemplate) string { return x.URITemplate }, after, size)
		return &out, nil
	case *mcp.ListPromptsResult:
		out := *r
		out.Prompts, out.NextCursor = page(r.Prompts, visible, func(x *mcp.Prompt) string { return x.Name }, after, size)
		return &out, nil
	}
	return nil, errors.New("unreachable")
}

// visible answers data.mcpguard.visible. The engine reuses a caller's
// answer for the same list while the policy is in force, and only when the
// policy's visible is shown to depend on the caller alone (as it reuses
// calls' decisions); any other list, a time window's say, is evaluated every
// time. The server keeps no list of its own. The set may be shared: read it.
func (s *Server) visible(ctx context.Context, in *policy.Input) (map[string]struct{}, error) {
	s.observe(policy.VisibleQuery, in)
	began := time.Now()
	set, reused, err := s.engine.VisibleSet(ctx, in)
	s.metrics.listCache(reused)
	if !reused {
		s.metrics.listed(began)
	}
	return set, err
}

// page keeps the visible items that sort after the cursor's key (the SDK
// lists in ascending key order), at most size of them, and returns the
// cursor of the next page, or "" after the last.
func page[T any](items []T, visible map[string]struct{}, key func(T) string, after string, size int) ([]T, string) {
	out := make([]T, 0, min(len(visible), size))
	for _, it := range items {
		k := key(it)
		if _, ok := visible[k]; !ok || (after != "" && k <= after) {
			continue
		}
		if len(out) == size {
			return out, encodeCursor(key(out[len(out)-1]))
		}
		out = append(out, it)
	}
	return out, ""
}

// listCursor is what an opaque list cursor carries: the key of the last
// item of the previous page, an item the caller was shown.
type listCursor struct {
	V     int    `json:"v"`
	After string `json:"after"`
}

func encodeCursor(after string) string {
	b, _ := json.Marshal(listCursor{V: 1, After: after})
	return base64.RawURLEncoding.EncodeToString(b)
}

// takeCursor reads a list request's cursor and removes it, so the SDK lists
// from the start.
func takeCursor(req mcp.Request) (string, error) {
	var c *string
	switch p := req.GetParams().(type) {
	case *mcp.ListToolsParams:
		if p != nil {
			c = &p.Cursor
		}
	case *mcp.ListResourcesParams:
		if p != nil {
			c = &p.Cursor
		}
	case *mcp.ListResourceTemplatesParams:
		if p != nil {
			c = &p.Cursor
		}
	case *mcp.ListPromptsParams:
		if p != nil {
			c = &p.Cursor
		}
	}
	if c == nil || *c == "" {
		return "", nil
	}
	raw := *c
	*c = ""
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return "", err
	}
	var lc listCursor
	if err := json.Unmarshal(b, &lc); err != nil || lc.V != 1 || lc.After == "" {
		return "", errors.New("not a cursor of this server")
	}
	return lc.After, nil
}

// deny answers a refused request. The log keeps the reasons; the caller
// gets them only with DENIAL_DETAIL and a verified token, since they name
// the roles and rules a prober would want. Otherwise: a generic message and
// the decision id, which an operator finds in the log.
func (s *Server) deny(method string, p *principal, d policy.Decision, err error) error {
	s.logger.Info("request denied", "decision_id", d.ID, "method", method, "user", p.identity.UserID(),
		"kind", string(p.identity.Kind), "reasons", d.Reasons, "details", d.Details, "error", err)
	code := CodeAccessDenied
	msg := "access denied"
	reasons := d.Reasons
	if err != nil {
		code = CodeAuthorizationUnavailable
		msg = "authorization failed: the policy could not decide (request refused)"
		reasons = nil
	} else if s.cfg.DenialDetail && p.identity.Authenticated() && len(reasons) > 0 {
		msg += ": " + strings.Join(reasons, "; ")
	} else {
		reasons = nil
	}
	if reasons == nil {
		reasons = []string{}
		if d.ID != "" {
			msg += " (decision " + d.ID + ")"
		}
	}
	data, _ := json.Marshal(DenialData{DecisionID: d.ID, Reasons: reasons})
	return &jsonrpc.Error{Code: int64(code), Message: msg, Data: data}
}

// unavailable refuses a request whose roles could not be had. The role
// service's own words (which may name its configuration) stay in the log.
func (s *Server) unavailable(method string, p *principal) error {
	reason := "authorization service unavailable"
	if errors.Is(p.authzErr, exchange.ErrRefused) {
		reason = "the role service refused this caller"
	}
	s.logger.Info("request refused: no roles", "method", method, "user", p.identity.UserID(), "error", p.authzErr)
	s.metrics.decision(method, false)
	data, _ := json.Marshal(DenialData{Reasons: []string{reason}})
	return &jsonrpc.Error{Code: CodeAuthorizationUnavailable, Message: reason + " (request refused)", Data: data}
}
