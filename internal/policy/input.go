package policy

import (
	"bytes"
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
}

// Tool is input.mcp.tool.
type Tool struct {
	Name string
	// Arguments is the raw JSON object of the call's arguments.
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

	versionTerm   = ast.IntNumberTerm(InputVersion)
	emptyObject   = ast.NewObject()
	anonymousNone = ast.NewObject()
)

// value lays the document out as DESIGN.md specifies. Each object is made
// with all its items at once (one allocation block), and the parts that
// repeat across requests (method names, a session's client) are reused.
func (in *Input) value() ast.Value {
	identity, authz := ast.Value(anonymousNone), ast.Value(anonymousNone)
	if in.Identity != nil {
		identity = in.Identity.v
	}
	if in.Authorization != nil {
		authz = in.Authorization.v
	}
	return ast.NewObject(
		ast.Item(kVersion, versionTerm),
		ast.Item(kMCP, ast.NewTerm(in.MCP.value())),
		ast.Item(kIdentity, ast.NewTerm(identity)),
		ast.Item(kAuthorization, ast.NewTerm(authz)),
		ast.Item(kRequest, ast.NewTerm(ast.NewObject(
			ast.Item(kTimeNS, ast.NewTerm(ast.Number(strconv.FormatInt(in.Request.TimeNS, 10)))),
			ast.Item(kRemoteAddr, ast.StringTerm(in.Request.RemoteAddr)),
			ast.Item(kTransport, internTerm(in.Request.Transport)),
			ast.Item(kHost, ast.StringTerm(in.Request.Host)),
		))),
	)
}

func (m *MCP) value() ast.Value {
	var items [8][2]*ast.Term
	n := 0
	add := func(k, v *ast.Term) { items[n] = ast.Item(k, v); n++ }
	add(kMethod, internTerm(m.Method))
	add(kSessionID, ast.StringTerm(m.SessionID))
	add(kProtocol, internTerm(m.ProtocolVersion))
	add(kClient, clientTerm(m.ClientName, m.ClientVersion))
	if m.Tool != nil {
		add(kTool, ast.NewTerm(ast.NewObject(
			ast.Item(kName, ast.StringTerm(m.Tool.Name)),
			ast.Item(kArguments, ast.NewTerm(jsonValue(m.Tool.Arguments))),
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
	return ast.NewObject(items[:n]...)
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

// jsonValue converts call arguments; absent or unparsable arguments become
// an empty object (the SDK has already rejected malformed JSON).
func jsonValue(raw json.RawMessage) ast.Value {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return emptyObject
	}
	v, err := parseJSON(raw)
	if err != nil {
		return emptyObject
	}
	return v
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
