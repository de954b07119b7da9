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
// "ref/resource", URI) whose argument values would be revealed.
type Completion struct {
	RefType  string
	Name     string
	URI      string
	Argument string
	Value    string
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
	// Annotations are the registered tool's annotations.
	Annotations *Fragment
}

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
// template's URI template in Name, with optional annotations.
type Candidate struct {
	Name        string
	Annotations *Fragment
}

// Request is input.request: facts of the transport.
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

	versionTerm   = ast.IntNumberTerm(InputVersion)
	emptyObject   = ast.NewObject()
	anonymousNone = ast.NewObject()
)

// value lays the document out as DESIGN.md specifies. Each object is made
// with all its items at once (one allocation block), and the parts that
// repeat across requests (method names, a session's client) are reused.
// Its one error is arguments the policy cannot be shown faithfully (an
// *argumentsError).
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
		ast.Item(kRequest, ast.NewTerm(ast.NewObject(
			ast.Item(kTimeNS, ast.NewTerm(ast.Number(strconv.FormatInt(in.Request.TimeNS, 10)))),
			ast.Item(kRemoteAddr, ast.StringTerm(in.Request.RemoteAddr)),
			ast.Item(kTransport, internTerm(in.Request.Transport)),
			ast.Item(kHost, ast.StringTerm(in.Request.Host)),
		))),
	), nil
}

func (m *MCP) value() (ast.Value, error) {
	var items [10][2]*ast.Term
	n := 0
	add := func(k, v *ast.Term) { items[n] = ast.Item(k, v); n++ }
	add(kMethod, internTerm(m.Method))
	add(kSessionID, ast.StringTerm(m.SessionID))
	add(kProtocol, internTerm(m.ProtocolVersion))
	add(kClient, clientTerm(m.ClientName, m.ClientVersion))
	if m.Tool != nil {
		args, err := decodeArguments(m.Tool.Arguments)
		if err != nil {
			return nil, err
		}
		add(kTool, ast.NewTerm(ast.NewObject(
			ast.Item(kName, ast.StringTerm(m.Tool.Name)),
			ast.Item(kArguments, ast.NewTerm(args)),
			ast.Item(kAnnotations, ast.NewTerm(fragmentOr(m.Tool.Annotations))),
		)))
	}
	if m.ResourceURI != "" {
		add(kResource, ast.NewTerm(ast.NewObject(ast.Item(kURI, ast.StringTerm(m.ResourceURI)))))
	}
	if m.Prompt != nil {
		args := ast.NewObject()
		for k, v := range m.Prompt.Arguments {
			args.Insert(ast.StringTerm(k), ast.StringTerm(v))
		}
		add(kPrompt, ast.NewTerm(ast.NewObject(
			ast.Item(kName, ast.StringTerm(m.Prompt.Name)),
			ast.Item(kArguments, ast.NewTerm(args)),
		)))
	}
	if c := m.Candidates; c != nil {
		add(kCandidates, ast.NewTerm(ast.NewObject(
			ast.Item(kTools, candidateArray(c.Tools, kName)),
			ast.Item(kResources, candidateArray(c.Resources, kURI)),
			ast.Item(kTemplates, candidateArray(c.ResourceTemplates, kURITemplate)),
			ast.Item(kPrompts, candidateArray(c.Prompts, kName)),
		)))
	}
	if c := m.Completion; c != nil {
		ref := ast.NewObject(ast.Item(kType, ast.StringTerm(c.RefType)))
		switch c.RefType {
		case "ref/prompt":
			ref.Insert(kName, ast.StringTerm(c.Name))
		case "ref/resource":
			ref.Insert(kURI, ast.StringTerm(c.URI))
		}
		add(kCompletion, ast.NewTerm(ast.NewObject(
			ast.Item(kRef, ast.NewTerm(ref)),
			ast.Item(kArgument, ast.NewTerm(ast.NewObject(
				ast.Item(kName, ast.StringTerm(c.Argument)),
				ast.Item(kValue, ast.StringTerm(c.Value)),
			))),
		)))
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
	t := ast.NewTerm(ast.NewObject(ast.Item(kName, ast.StringTerm(name)), ast.Item(kVersionField, ast.StringTerm(version))))
	if internedCount.Add(1) <= maxInterned {
		clients.Store(k, t)
	}
	return t
}

// maxInterned bounds both caches: their keys come from clients, so a hostile
// client must not grow them without end.
const maxInterned = 4096

var internedCount atomic.Int64

func candidateArray(items []Candidate, key *ast.Term) *ast.Term {
	terms := make([]*ast.Term, len(items))
	for i, c := range items {
		terms[i] = ast.NewTerm(ast.NewObject(
			ast.Item(key, ast.StringTerm(c.Name)),
			ast.Item(kAnnotations, ast.NewTerm(fragmentOr(c.Annotations))),
		))
	}
	return ast.ArrayTerm(terms...)
}

func fragmentOr(f *Fragment) ast.Value {
	if f == nil {
		return emptyObject
	}
	return f.v
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
