package policy

import (
	"context"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// Decision reuse. Most requests are decided by who the caller is and what
// they ask for: the method and the tool, prompt or resource named. Such a
// decision is reused for the same caller while the policy that made it is in
// force, and only when OPA itself shows that the policy reads nothing else
// for that request: allow is partially evaluated with the method and target
// known and everything else in the input unknown, and the residual must read
// the input only under input.identity and input.authorization, and call no
// non-deterministic builtin (time.now_ns, http.send, rand.*, …). A rule that
// reads a tool's arguments, the request's address or time, the session or
// the client leaves a residual that does, and that (method, target) is then
// evaluated on every request.
//
// The analysis runs in the background, never on a request's goroutine: the
// first request of a shape is evaluated and starts it, one at a time per
// shape and at most maxAnalyses at once per compiled policy (past that a
// later request of the shape starts it). Until it has shown the shape
// reusable, every request of the shape is evaluated; the first one
// evaluated after that is remembered. An analysis that errs, times out or
// panics leaves its shape evaluated on every request.
//
// The caller is named by its input fragments (Input.Identity and
// Input.Authorization), which the server makes once per token: a new token,
// so new roles, is a new caller. The reuse belongs to one compiled policy,
// its analyses included, so a reload drops it.

// shape is what a request asks, as far as the reuse analysis knows it.
type shape struct {
	method string
	kind   targetKind
	target string // tool or prompt name, resource URI
	// annotations are a tool's registered hints (never nil for a tool).
	annotations *Fragment
}

type targetKind uint8

const (
	targetNone targetKind = iota
	targetTool
	targetPrompt
	targetResource
)

// reuseKey names one caller's decision of one shape.
type reuseKey struct {
	shape
	identity, authorization *Fragment
}

// Bounds: an analysis costs a partial evaluation (milliseconds) and a core
// while it runs, so no more than maxAnalyses run at once, and a client
// naming ever new prompts or resource URIs stops being analysed after
// maxShapes (analysed and pending); decisions are forgotten all at once
// past maxDecisions.
const (
	maxShapes       = 1024
	maxAnalyses     = 2
	maxDecisions    = 1 << 16
	analysisTimeout = 2 * time.Second
)

type reuse struct {
	mu        sync.RWMutex
	shapes    map[shape]bool     // analysed: reusable or not
	pending   map[shape]struct{} // being analysed, one analysis each
	decisions map[reuseKey]bool
	// idle is signalled (under mu) when the last pending analysis ends.
	idle *sync.Cond
	// analyse is the analysis; tests replace it to count or hold analyses.
	analyse func(ctx context.Context, s shape) bool
}

func newReuse(c *compiled) *reuse {
	r := &reuse{shapes: map[shape]bool{}, pending: map[shape]struct{}{}, decisions: map[reuseKey]bool{}}
	r.idle = sync.NewCond(&r.mu)
	r.analyse = func(ctx context.Context, s shape) bool { return analyse(ctx, c, s) }
	return r
}

// shapeOf is the shape of a request the reuse may serve, or false for one
// it does not (a tool the server did not register, a request that carries
// more than one target).
func shapeOf(in *Input) (shape, bool) {
	m := &in.MCP
	s := shape{method: m.Method}
	targets := 0
	if m.Tool != nil {
		if m.Tool.Annotations == nil { // not a registered tool
			return s, false
		}
		s.kind, s.target, s.annotations = targetTool, m.Tool.Name, m.Tool.Annotations
		targets++
	}
	if m.Prompt != nil {
		s.kind, s.target = targetPrompt, m.Prompt.Name
		targets++
	}
	if m.ResourceURI != "" || isResourceMethod(m.Method) {
		s.kind, s.target = targetResource, m.ResourceURI
		targets++
	}
	return s, targets <= 1
}

// lookup returns the caller's reused decision, if there is one.
func (r *reuse) lookup(k reuseKey) (allowed, ok bool) {
	r.mu.RLock()
	allowed, ok = r.decisions[k]
	r.mu.RUnlock()
	return allowed, ok
}

// remember keeps a decision just evaluated, if its shape is known to be
// reusable. It never waits for an analysis: a shape not yet analysed starts
// one in the background, and this decision is not kept.
func (r *reuse) remember(ctx context.Context, k reuseKey, allowed bool) {
	r.mu.RLock()
	reusable, analysed := r.shapes[k.shape]
	_, pending := r.pending[k.shape]
	busy := len(r.pending) >= maxAnalyses || len(r.shapes)+len(r.pending) >= maxShapes
	r.mu.RUnlock()
	if !analysed {
		if !pending && !busy {
			r.start(ctx, k.shape)
		}
		return
	}
	if !reusable {
		return
	}
	r.mu.Lock()
	if len(r.decisions) >= maxDecisions {
		clear(r.decisions)
	}
	r.decisions[k] = allowed
	r.mu.Unlock()
}

// start analyses s in the background unless it is analysed or pending
// already, or the bounds are reached (checked again under the lock: another
// request of the shape may have started it).
func (r *reuse) start(ctx context.Context, s shape) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, analysed := r.shapes[s]; analysed {
		return
	}
	if _, pending := r.pending[s]; pending {
		return
	}
	if len(r.pending) >= maxAnalyses || len(r.shapes)+len(r.pending) >= maxShapes {
		return
	}
	r.pending[s] = struct{}{}
	// Detached from the request, which may end first, but bounded.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), analysisTimeout)
	go r.run(ctx, cancel, s)
}

// run is one analysis. A panic in it is a no (and would otherwise end the
// process: no server recovers it off the request's goroutine).
func (r *reuse) run(ctx context.Context, cancel context.CancelFunc, s shape) {
	reusable := false
	defer func() {
		_ = recover()
		cancel()
		r.mu.Lock()
		delete(r.pending, s)
		r.shapes[s] = reusable
		if len(r.pending) == 0 {
			r.idle.Broadcast()
		}
		r.mu.Unlock()
	}()
	reusable = r.analyse(ctx, s)
}

// wait returns when no analysis is pending (for tests).
func (r *reuse) wait() {
	r.mu.Lock()
	for len(r.pending) > 0 {
		r.idle.Wait()
	}
	r.mu.Unlock()
}

// Paths of the input that vary with the request, beyond the caller: the
// analysis leaves them unknown. Whatever else the input holds is known to
// it (version, method, the target).
var variableInput = []*ast.Term{
	ast.MustParseTerm("input.request"),
	ast.MustParseTerm("input.mcp.session_id"),
	ast.MustParseTerm("input.mcp.protocol_version"),
	ast.MustParseTerm("input.mcp.client"),
	ast.MustParseTerm("input.mcp.tool.arguments"),
	ast.MustParseTerm("input.mcp.prompt.arguments"),
	ast.MustParseTerm("input.mcp.candidates"),
	ast.MustParseTerm("input.mcp.completion"),
	ast.MustParseTerm("input.mcp.subscriptions"),
}

// callerInput are the paths a reusable decision may read: the caller.
var callerInput = []*ast.Term{
	ast.MustParseTerm("input.identity"),
	ast.MustParseTerm("input.authorization"),
}

// knownInput is the input of a shape as the analysis knows it: the parts
// every request of the shape has, laid out as Input.value lays them out.
func knownInput(s shape) ast.Value {
	mcp := ast.NewObject(ast.Item(kMethod, ast.StringTerm(s.method)))
	switch s.kind {
	case targetTool:
		tool := ast.NewObject(ast.Item(kAnnotations, ast.NewTerm(s.annotations.v)))
		insertString(tool, kName, s.target)
		mcp.Insert(kTool, ast.NewTerm(tool))
	case targetPrompt:
		prompt := ast.NewObject()
		insertString(prompt, kName, s.target)
		mcp.Insert(kPrompt, ast.NewTerm(prompt))
	case targetResource:
		res := ast.NewObject()
		insertString(res, kURI, s.target)
		mcp.Insert(kResource, ast.NewTerm(res))
	}
	return ast.NewObject(ast.Item(kVersion, versionTerm), ast.Item(kMCP, ast.NewTerm(mcp)))
}

// analyse reports whether allow, for requests of shape s, is a function of
// the caller alone. Any doubt (an error, a timeout, a residual it cannot
// read) is a no: the request is then evaluated every time. ctx bounds it
// (start gives it analysisTimeout).
func analyse(ctx context.Context, c *compiled, s shape) bool {
	unknowns := append(append([]*ast.Term{}, callerInput...), variableInput...)
	pq, err := rego.New(
		rego.Query(AllowQuery),
		rego.Compiler(c.compiler),
		rego.Store(c.store),
		rego.Transaction(c.txn),
		rego.StoreReadAST(true),
		rego.StrictBuiltinErrors(true),
		rego.ParsedInput(knownInput(s)),
		rego.ParsedUnknowns(unknowns),
	).Partial(ctx)
	if err != nil {
		return false
	}
	ok := true
	check := func(x any) {
		ast.WalkTerms(x, func(t *ast.Term) bool {
			switch v := t.Value.(type) {
			case ast.Ref:
				if v[0].Equal(ast.InputRootDocument) && !readsCaller(v) {
					ok = false
				}
			case ast.Call:
				if !deterministic(v[0]) {
					ok = false
				}
			}
			return !ok
		})
		ast.WalkExprs(x, func(e *ast.Expr) bool {
			if len(e.With) > 0 || (e.IsCall() && !deterministic(e.Operator())) {
				ok = false
			}
			return !ok
		})
	}
	for _, q := range pq.Queries {
		check(q)
	}
	for _, m := range pq.Support {
		check(m)
	}
	return ok
}

// readsCaller: ref is input.identity… or input.authorization…
func readsCaller(ref ast.Ref) bool {
	for _, p := range callerInput {
		if ref.HasPrefix(p.Value.(ast.Ref)) {
			return true
		}
	}
	return false
}

// deterministic: op names a builtin that always answers the same for the
// same arguments, or a function of the policy (whose body is checked in its
// own right). An operator it does not know is not deterministic.
func deterministic(op any) bool {
	var ref ast.Ref
	switch o := op.(type) {
	case ast.Ref:
		ref = o
	case *ast.Term:
		r, ok := o.Value.(ast.Ref)
		if !ok {
			return false
		}
		ref = r
	default:
		return false
	}
	if ref[0].Equal(ast.DefaultRootDocument) {
		return true // a function of the policy
	}
	b, ok := ast.BuiltinMap[ref.String()]
	return ok && !b.IsNondeterministic()
}
