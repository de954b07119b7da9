package policy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// InputVersion is the version of the input document's layout (input.version).
const InputVersion = 1

// Fragment is a part of the input document converted once and reused by many
// evaluations: an identity or an authorization, a tool's annotations.
type Fragment struct{ v ast.Value }

// NewFragment converts a JSON-like Go value (maps, slices, strings, numbers,
// bools, structs with json tags).
func NewFragment(x any) (*Fragment, error) {
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return nil, err
	}
	return &Fragment{v: v}, nil
}

// MustFragment is NewFragment for values known to convert.
func MustFragment(x any) *Fragment {
	f, err := NewFragment(x)
	if err != nil {
		panic(err)
	}
	return f
}

// Input is one evaluation's document. Identity and Authorization are
// fragments made once per caller; the rest is made per request.
type Input struct {
	MCP           MCP
	Identity      *Fragment
	Authorization *Fragment
	Request       Request
}

// MCP is input.mcp: what the request asks.
type MCP struct {
	Method          string
	SessionID       string
	ProtocolVersion string
	ClientName      string
	ClientVersion   string
	// Tool is set for tools/call.
	Tool *Tool
	// ResourceURI is set for resources/read and resource subscriptions.
	ResourceURI string
	// Prompt is set for prompts/get.
	Prompt *Prompt
	// Candidates is set for list methods.
	Candidates *Candidates
	// Completion is set for completion/complete: what is being completed.
	Completion *Completion
	// Subscriptions is set for subscriptions/listen: what the stream would carry.
	Subscriptions *Subscriptions
}

// Completion is input.mcp.completion. Its ref names the prompt (RefType
// "ref/prompt", Name) or the resource or resource template (RefType
// "ref/resource", URI) whose argument values would be revealed; RefType ""
// is a request without a ref.
type Completion struct {
	RefType  string
	Name     string
	URI      string
	Argument string
	Value    string
	// ContextArguments are the values already resolved for the ref's other
	// arguments (the request's context.arguments).
	ContextArguments map[string]string
}

// Subscriptions is input.mcp.subscriptions: the resources whose updates a
// subscriptions/listen stream would carry, and the list changes it asks for.
type Subscriptions struct {
	ResourceURIs         []string
	ToolsListChanged     bool
	PromptsListChanged   bool
	ResourcesListChanged bool
}

// Tool is input.mcp.tool.
type Tool struct {
	Name string
	// Arguments is the raw JSON object of the call's arguments, as the
	// tool receives it. Arguments the policy cannot be shown exactly as
	// the tool will read them are refused (see decodeArguments).
	Arguments json.RawMessage
	// Annotations are the registered tool's annotations, as made by
	// ToolHints.Fragment; nil (a tool not registered) reads as the
	// protocol's defaults.
	Annotations *Fragment
}

// ToolHints are a tool's MCP annotations. The policy sees them with the
// protocol's defaults applied (MCP 2025-11-25, ToolAnnotations): a hint the
// tool leaves out is what the specification says it means, so a rule on
// destructive tools is not fooled by a tool that never said.
type ToolHints struct {
	Title    string
	ReadOnly bool // default false
	// Destructive defaults to true (nil), meaningful when ReadOnly is false.
	Destructive *bool
	Idempotent  bool // default false
	// OpenWorld defaults to true (nil).
	OpenWorld *bool
}

// Fragment lays the hints out as input.mcp.tool.annotations: the four hints
// always, as booleans, and title when there is one.
func (h ToolHints) Fragment() *Fragment {
	or := func(b *bool, def bool) bool {
		if b == nil {
			return def
		}
		return *b
	}
	obj := ast.NewObject(
		ast.Item(ast.StringTerm("readOnlyHint"), ast.BooleanTerm(h.ReadOnly)),
		ast.Item(ast.StringTerm("destructiveHint"), ast.BooleanTerm(or(h.Destructive, true))),
		ast.Item(ast.StringTerm("idempotentHint"), ast.BooleanTerm(h.Idempotent)),
		ast.Item(ast.StringTerm("openWorldHint"), ast.BooleanTerm(or(h.OpenWorld, true))),
	)
	if h.Title != "" {
		obj.Insert(ast.StringTerm("title"), ast.StringTerm(h.Title))
	}
	return &Fragment{v: obj}
}

// defaultHints are the annotations of a tool that declares none.
var defaultHints = ToolHints{}.Fragment()

// Prompt is input.mcp.prompt.
type Prompt struct {
	Name      string
	Arguments map[string]string
}

// Candidates is input.mcp.candidates: what a list method would return.
type Candidates struct {
	Tools             []Candidate
	Resources         []Candidate
	ResourceTemplates []Candidate
	Prompts           []Candidate
}

// Candidate is one list item: a tool or prompt Name, a resource URI or a
// template's URI template in Name. Tools carry their annotations (nil reads
// as the protocol's defaults); other kinds have none.
type Candidate struct {
	Name        string
	Annotations *Fragment
}

// Request is input.request: facts of the transport. RemoteAddr and Host
// are those of the HTTP request; over stdio, and over HTTP when the server
// authenticates nobody (the SDK hands the middleware no request facts
// then), there are none.
type Request struct {
	TimeNS     int64
	RemoteAddr string
	Transport  string
	Host       string
}

var (
	kVersion       = ast.StringTerm("version")
	kMCP           = ast.StringTerm("mcp")
	kIdentity      = ast.StringTerm("identity")
	kAuthorization = ast.StringTerm("authorization")
	kRequest       = ast.StringTerm("request")
	kMethod        = ast.StringTerm("method")
	kSessionID     = ast.StringTerm("session_id")
	kProtocol      = ast.StringTerm("protocol_version")
	kClient        = ast.StringTerm("client")
	kName          = ast.StringTerm("name")
	kVersionField  = ast.StringTerm("version")
	kTool          = ast.StringTerm("tool")
	kArguments     = ast.StringTerm("arguments")
	kAnnotations   = ast.StringTerm("annotations")
	kResource      = ast.StringTerm("resource")
	kURI           = ast.StringTerm("uri")
	kURITemplate   = ast.StringTerm("uriTemplate")
	kPrompt        = ast.StringTerm("prompt")
	kCandidates    = ast.StringTerm("candidates")
	kTools         = ast.StringTerm("tools")
	kResources     = ast.StringTerm("resources")
	kTemplates     = ast.StringTerm("resource_templates")
	kPrompts       = ast.StringTerm("prompts")
	kTimeNS        = ast.StringTerm("time_ns")
	kRemoteAddr    = ast.StringTerm("remote_addr")
	kTransport     = ast.StringTerm("transport")
	kHost          = ast.StringTerm("host")
	kCompletion    = ast.StringTerm("completion")
	kRef           = ast.StringTerm("ref")
	kType          = ast.StringTerm("type")
	kArgument      = ast.StringTerm("argument")
	kValue         = ast.StringTerm("value")
	kSubscriptions = ast.StringTerm("subscriptions")
	kResourceURIs  = ast.StringTerm("resource_uris")
	kToolsLC       = ast.StringTerm("tools_list_changed")
	kPromptsLC     = ast.StringTerm("prompts_list_changed")
	kResourcesLC   = ast.StringTerm("resources_list_changed")
	kContext       = ast.StringTerm("context")

	versionTerm   = ast.IntNumberTerm(InputVersion)
	emptyObject   = ast.NewObject()
	anonymousNone = ast.NewObject()
)

// value lays the document out as docs/POLICIES.md documents it. A string
// nobody supplied (no session yet, no email in the token, no HTTP request
// over stdio) is left out rather than given as "": `not input.x` and
// object.get then read naturally, and "" never passes for a value. Lists
// are always arrays. Each object is made with all its items at once (one
// allocation block), and the parts that repeat across requests (method
// names, a session's client) are reused. Its one error is arguments the
// policy cannot be shown faithfully (an *argumentsError).
func (in *Input) value() (ast.Value, error) {
	mcp, err := in.MCP.value()
	if err != nil {
		return nil, err
	}
	identity, authz := ast.Value(anonymousNone), ast.Value(anonymousNone)
	if in.Identity != nil {
		identity = in.Identity.v
	}
	if in.Authorization != nil {
		authz = in.Authorization.v
	}
	return ast.NewObject(
		ast.Item(kVersion, versionTerm),
		ast.Item(kMCP, ast.NewTerm(mcp)),
		ast.Item(kIdentity, ast.NewTerm(identity)),
		ast.Item(kAuthorization, ast.NewTerm(authz)),
		ast.Item(kRequest, ast.NewTerm(in.Request.value())),
	), nil
}

func (r *Request) value() ast.Value {
	var items [4][2]*ast.Term
	n := 0
	add := func(k, v *ast.Term) { items[n] = ast.Item(k, v); n++ }
	add(kTimeNS, ast.NewTerm(ast.Number(strconv.FormatInt(r.TimeNS, 10))))
	if r.RemoteAddr != "" {
		add(kRemoteAddr, ast.StringTerm(r.RemoteAddr))
	}
	if r.Transport != "" {
		add(kTransport, internTerm(r.Transport))
	}
	if r.Host != "" {
		add(kHost, ast.StringTerm(r.Host))
	}
	return ast.NewObject(items[:n]...)
}

// isResourceMethod tells the methods whose target is one resource URI.
func isResourceMethod(method string) bool {
	switch method {
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		return true
	}
	return false
}

func (m *MCP) value() (ast.Value, error) {
	var items [10][2]*ast.Term
	n := 0
	add := func(k, v *ast.Term) { items[n] = ast.Item(k, v); n++ }
	add(kMethod, internTerm(m.Method))
	if m.SessionID != "" {
		add(kSessionID, ast.StringTerm(m.SessionID))
	}
	if m.ProtocolVersion != "" {
		add(kProtocol, internTerm(m.ProtocolVersion))
	}
	if m.ClientName != "" || m.ClientVersion != "" {
		add(kClient, clientTerm(m.ClientName, m.ClientVersion))
	}
	if m.Tool != nil {
		args, err := decodeArguments(m.Tool.Arguments)
		if err != nil {
			return nil, err
		}
		ann := defaultHints
		if m.Tool.Annotations != nil {
			ann = m.Tool.Annotations
		}
		var tool ast.Object
		if m.Tool.Name != "" {
			tool = ast.NewObject(
				ast.Item(kName, ast.StringTerm(m.Tool.Name)),
				ast.Item(kArguments, ast.NewTerm(args)),
				ast.Item(kAnnotations, ast.NewTerm(ann.v)),
			)
		} else {
			tool = ast.NewObject(ast.Item(kArguments, ast.NewTerm(args)), ast.Item(kAnnotations, ast.NewTerm(ann.v)))
		}
		add(kTool, ast.NewTerm(tool))
	}
	if m.ResourceURI != "" || isResourceMethod(m.Method) {
		res := ast.NewObject()
		insertString(res, kURI, m.ResourceURI)
		add(kResource, ast.NewTerm(res))
	}
	if m.Prompt != nil {
		prompt := ast.NewObject(ast.Item(kArguments, ast.NewTerm(stringMap(m.Prompt.Arguments))))
		insertString(prompt, kName, m.Prompt.Name)
		add(kPrompt, ast.NewTerm(prompt))
	}
	if c := m.Candidates; c != nil {
		add(kCandidates, candidatesTerm(c))
	}
	if c := m.Completion; c != nil {
		arg := ast.NewObject(ast.Item(kValue, ast.StringTerm(c.Value)))
		insertString(arg, kName, c.Argument)
		completion := ast.NewObject(
			ast.Item(kArgument, ast.NewTerm(arg)),
			ast.Item(kContext, ast.NewTerm(ast.NewObject(ast.Item(kArguments, ast.NewTerm(stringMap(c.ContextArguments)))))),
		)
		if c.RefType != "" {
			ref := ast.NewObject(ast.Item(kType, ast.StringTerm(c.RefType)))
			insertString(ref, kName, c.Name)
			insertString(ref, kURI, c.URI)
			completion.Insert(kRef, ast.NewTerm(ref))
		}
		add(kCompletion, ast.NewTerm(completion))
	}
	if sub := m.Subscriptions; sub != nil {
		uris := make([]*ast.Term, len(sub.ResourceURIs))
		for i, u := range sub.ResourceURIs {
			uris[i] = ast.StringTerm(u)
		}
		add(kSubscriptions, ast.NewTerm(ast.NewObject(
			ast.Item(kResourceURIs, ast.ArrayTerm(uris...)),
			ast.Item(kToolsLC, ast.BooleanTerm(sub.ToolsListChanged)),
			ast.Item(kPromptsLC, ast.BooleanTerm(sub.PromptsListChanged)),
			ast.Item(kResourcesLC, ast.BooleanTerm(sub.ResourcesListChanged)),
		)))
	}
	return ast.NewObject(items[:n]...), nil
}

// insertString adds k: s to obj unless s is empty.
func insertString(obj ast.Object, k *ast.Term, s string) {
	if s != "" {
		obj.Insert(k, ast.StringTerm(s))
	}
}

// stringMap is a map of strings as an object, {} for none: arguments the
// client sent, values included as sent ("" too).
func stringMap(m map[string]string) ast.Value {
	obj := ast.NewObject()
	for k, v := range m {
		obj.Insert(ast.StringTerm(k), ast.StringTerm(v))
	}
	return obj
}

// interned holds terms for the strings every request repeats: method names,
// protocol versions, transports. AST values are immutable once built, so one
// term serves every evaluation.
var interned sync.Map // string → *ast.Term

func internTerm(s string) *ast.Term {
	if t, ok := interned.Load(s); ok {
		return t.(*ast.Term)
	}
	t := ast.StringTerm(s)
	if internedCount.Add(1) <= maxInterned {
		interned.Store(s, t)
	}
	return t
}

// clients holds one {"name","version"} object per client implementation.
var clients sync.Map // [2]string → *ast.Term

func clientTerm(name, version string) *ast.Term {
	k := [2]string{name, version}
	if t, ok := clients.Load(k); ok {
		return t.(*ast.Term)
	}
	obj := ast.NewObject()
	insertString(obj, kName, name)
	insertString(obj, kVersionField, version)
	t := ast.NewTerm(obj)
	if internedCount.Add(1) <= maxInterned {
		clients.Store(k, t)
	}
	return t
}

// maxInterned bounds both caches: their keys come from clients, so a hostile
// client must not grow them without end.
const maxInterned = 4096

var internedCount atomic.Int64

// candidatesTerm lays out input.mcp.candidates.
func candidatesTerm(c *Candidates) *ast.Term {
	return ast.NewTerm(ast.NewObject(
		ast.Item(kTools, toolCandidates(c.Tools)),
		ast.Item(kResources, candidateArray(c.Resources, kURI)),
		ast.Item(kTemplates, candidateArray(c.ResourceTemplates, kURITemplate)),
		ast.Item(kPrompts, candidateArray(c.Prompts, kName)),
	))
}

// toolCandidates lays out tools with their annotations, the protocol's
// defaults for a tool registered without.
func toolCandidates(items []Candidate) *ast.Term {
	terms := make([]*ast.Term, len(items))
	for i, c := range items {
		ann := defaultHints
		if c.Annotations != nil {
			ann = c.Annotations
		}
		terms[i] = ast.NewTerm(ast.NewObject(
			ast.Item(kName, ast.StringTerm(c.Name)),
			ast.Item(kAnnotations, ast.NewTerm(ann.v)),
		))
	}
	return ast.ArrayTerm(terms...)
}

// candidateArray lays out resources, templates and prompts: the key alone.
func candidateArray(items []Candidate, key *ast.Term) *ast.Term {
	terms := make([]*ast.Term, len(items))
	for i, c := range items {
		terms[i] = ast.NewTerm(ast.NewObject(ast.Item(key, ast.StringTerm(c.Name))))
	}
	return ast.ArrayTerm(terms...)
}

// Document returns the input document as JSON: exactly what the policy is
// given for this input. Arguments the policy would not be shown are its
// error, as in Decide.
func (in *Input) Document() ([]byte, error) {
	v, err := in.value()
	if err != nil {
		return nil, err
	}
	x, err := ast.JSON(v)
	if err != nil {
		return nil, fmt.Errorf("input document: %w", err)
	}
	return json.Marshal(x)
}

// idSource makes decision ids: a random per-process prefix and a counter,
// unique without a system call per decision.
type idSource struct {
	prefix string
	n      atomic.Uint64
}

func newIDPrefix() string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("policy: no randomness: %v", err))
	}
	return hex.EncodeToString(b) + "-"
}

func (s *idSource) next() string {
	var buf [32]byte
	b := append(buf[:0], s.prefix...)
	b = strconv.AppendUint(b, s.n.Add(1), 10)
	return string(b)
}
