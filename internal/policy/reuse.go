package policy

import (
	"context"
	"hash/maphash"
	"slices"
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
//
// Lists are reused the same way (Engine.VisibleSet): the shape of a list is
// its method and its candidates, and visible is partially evaluated with the
// candidates known. A list shape is named by a hash of the candidates (each
// one's name and annotations fragment); the candidates themselves are kept
// with the shape and compared whole before a set is served or kept, so that
// two lists whose hashes collide never share an answer.

// shape is what a request asks, as far as the reuse analysis knows it.
type shape struct {
	method string
	kind   targetKind
	target string // tool or prompt name, resource URI
	// annotations are a tool's registered hints (never nil for a tool).
	annotations *Fragment
	// candidates hashes a list's candidates (targetList).
	candidates uint64
}

type targetKind uint8

const (
	targetNone targetKind = iota
	targetTool
	targetPrompt
	targetResource
	targetList
)

// reuseKey names one caller's decision of one shape.
type reuseKey struct {
	shape
	identity, authorization *Fragment
}

// Bounds: an analysis costs a partial evaluation (milliseconds) and a core
// while it runs, so no more than maxAnalyses run at once, and a client
// naming ever new prompts or resource URIs stops being analysed after
// maxShapes (analysed and pending); of these at most maxListShapes are
// lists, whose candidates are kept. Decisions are forgotten all at once
// past maxDecisions, visible sets past maxVisibleSets sets or
// maxVisibleNames names in all.
const (
	maxShapes       = 1024
	maxListShapes   = 64
	maxAnalyses     = 2
	maxDecisions    = 1 << 16
	maxVisibleSets  = 4096
	maxVisibleNames = 1 << 18
	analysisTimeout = 2 * time.Second
)

// limits are a reuse's bounds: the constants above (tests lower them).
type limits struct{ shapes, listShapes, analyses, decisions, visibleSets, visibleNames int }

var defaultLimits = limits{shapes: maxShapes, listShapes: maxListShapes, analyses: maxAnalyses,
	decisions: maxDecisions, visibleSets: maxVisibleSets, visibleNames: maxVisibleNames}

type reuse struct {
	limits    limits
	mu        sync.RWMutex
	shapes    map[shape]bool     // analysed: reusable or not
	pending   map[shape]struct{} // being analysed, one analysis each
	decisions map[reuseKey]bool
	// lists are the candidates of each list shape, analysed or pending.
	lists map[shape]*Candidates
	// visible are the reused visible sets (read-only: they are served as
	// they are), names counts their members.
	visible map[reuseKey]map[string]struct{}
	names   int
	// idle is signalled (under mu) when the last pending analysis ends.
	idle *sync.Cond
	// analyse is the analysis; tests replace it to count or hold analyses.
	// cands are a list shape's candidates (nil for any other shape).
	analyse func(ctx context.Context, s shape, cands *Candidates) bool
}

func newReuse(c *compiled) *reuse {
	r := &reuse{limits: defaultLimits, shapes: map[shape]bool{}, pending: map[shape]struct{}{}, decisions: map[reuseKey]bool{},
		lists: map[shape]*Candidates{}, visible: map[reuseKey]map[string]struct{}{}}
	r.idle = sync.NewCond(&r.mu)
	r.analyse = func(ctx context.Context, s shape, cands *Candidates) bool {
		compiler, ok := analysisCompiler(c)
		return ok && analyse(ctx, c, compiler, s, cands)
	}
	return r
}

// analysisCompiler compiles c's policy afresh for one analysis: OPA's
// partial evaluation writes to the compiled rules it saves a `with`
// expression of, which evaluations of the same rules read. It is dropped
// with the analysis (milliseconds, at most maxShapes times per policy):
// kept, it would add to the live heap every collection marks.
func analysisCompiler(c *compiled) (*ast.Compiler, bool) {
	if c.loaded == nil {
		return nil, false
	}
	compiler := ast.NewCompiler()
	compiler.Compile(c.loaded.Modules)
	return compiler, !compiler.Failed()
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

var candidatesSeed = maphash.MakeSeed()

// listShapeOf is the shape of a list request, or false for a request that
// is not a list.
func listShapeOf(in *Input) (shape, bool) {
	c := in.MCP.Candidates
	if c == nil {
		return shape{}, false
	}
	var h maphash.Hash
	h.SetSeed(candidatesSeed)
	for _, list := range [][]Candidate{c.Tools, c.Resources, c.ResourceTemplates, c.Prompts} {
		for _, x := range list {
			h.WriteString(x.Name)
			h.WriteByte(0)
			maphash.WriteComparable(&h, x.Annotations)
		}
		h.WriteByte(1)
	}
	return shape{method: in.MCP.Method, kind: targetList, candidates: h.Sum64()}, true
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
	if !r.reusable(ctx, k.shape, nil) {
		return
	}
	r.mu.Lock()
	if len(r.decisions) >= r.limits.decisions {
		clear(r.decisions)
	}
	r.decisions[k] = allowed
	r.mu.Unlock()
}

// lookupVisible returns the caller's reused visible set for the list whose
// candidates are cands, if there is one.
func (r *reuse) lookupVisible(k reuseKey, cands *Candidates) (map[string]struct{}, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	set, ok := r.visible[k]
	if !ok || !sameCandidates(r.lists[k.shape], cands) {
		return nil, false
	}
	return set, true
}

// rememberVisible keeps a visible set just evaluated for the list whose
// candidates are cands, as remember keeps a decision. The set is shared
// from then on: nobody may change it.
func (r *reuse) rememberVisible(ctx context.Context, k reuseKey, cands *Candidates, set map[string]struct{}) {
	if !r.reusable(ctx, k.shape, cands) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Another list whose hash collides with this one's was analysed: the
	// shape is not this list's.
	if !sameCandidates(r.lists[k.shape], cands) {
		return
	}
	if len(r.visible) >= r.limits.visibleSets || r.names+len(set) > r.limits.visibleNames {
		clear(r.visible)
		r.names = 0
	}
	if old, ok := r.visible[k]; ok {
		r.names -= len(old)
	}
	r.visible[k] = set
	r.names += len(set)
}

// sameCandidates: a and b are the same candidates, each by name and by
// annotations fragment, in the same order.
func sameCandidates(a, b *Candidates) bool {
	return a != nil && b != nil && slices.Equal(a.Tools, b.Tools) && slices.Equal(a.Resources, b.Resources) &&
		slices.Equal(a.ResourceTemplates, b.ResourceTemplates) && slices.Equal(a.Prompts, b.Prompts)
}

// reusable reports whether s is analysed and reusable; a shape not yet
// analysed starts its analysis (cands: a list's candidates) and is not.
func (r *reuse) reusable(ctx context.Context, s shape, cands *Candidates) bool {
	r.mu.RLock()
	reusable, analysed := r.shapes[s]
	_, pending := r.pending[s]
	busy := r.full(s)
	r.mu.RUnlock()
	if !analysed {
		if !pending && !busy {
			r.start(ctx, s, cands)
		}
		return false
	}
	return reusable
}

// full: no analysis of s may start now (under mu).
func (r *reuse) full(s shape) bool {
	return len(r.pending) >= r.limits.analyses || len(r.shapes)+len(r.pending) >= r.limits.shapes ||
		(s.kind == targetList && len(r.lists) >= r.limits.listShapes)
}

// start analyses s in the background unless it is analysed or pending
// already, or the bounds are reached (checked again under the lock: another
// request of the shape may have started it).
func (r *reuse) start(ctx context.Context, s shape, cands *Candidates) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, analysed := r.shapes[s]; analysed {
		return
	}
	if _, pending := r.pending[s]; pending {
		return
	}
	if r.full(s) {
		return
	}
	r.pending[s] = struct{}{}
	if s.kind == targetList {
		// Kept for the shape's life, a copy: a later list is served only
		// if its candidates are these.
		r.lists[s] = &Candidates{Tools: slices.Clone(cands.Tools), Resources: slices.Clone(cands.Resources),
			ResourceTemplates: slices.Clone(cands.ResourceTemplates), Prompts: slices.Clone(cands.Prompts)}
		cands = r.lists[s]
	}
	// Detached from the request, which may end first, but bounded.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), analysisTimeout)
	go r.run(ctx, cancel, s, cands)
}

// run is one analysis. A panic in it is a no (and would otherwise end the
// process: no server recovers it off the request's goroutine).
func (r *reuse) run(ctx context.Context, cancel context.CancelFunc, s shape, cands *Candidates) {
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
	reusable = r.analyse(ctx, s, cands)
}

// WaitReuseAnalysis returns when the policy in force has no reuse analysis
// running: what the requests so far started has ended. For tests (the
// server's too), which must know when a reuse may begin.
func WaitReuseAnalysis(e *Engine) {
	if c := e.current.Load(); c != nil {
		c.reuse.wait()
	}
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
	ast.MustParseTerm("input.mcp.completion"),
	ast.MustParseTerm("input.mcp.subscriptions"),
}

// candidatesInput are a list's candidates: unknown to the analysis of a
// call, known to that of a list.
var candidatesInput = ast.MustParseTerm("input.mcp.candidates")

// callerInput are the paths a reusable decision may read: the caller.
var callerInput = []*ast.Term{
	ast.MustParseTerm("input.identity"),
	ast.MustParseTerm("input.authorization"),
}

// knownInput is the input of a shape as the analysis knows it: the parts
// every request of the shape has, laid out as Input.value lays them out.
func knownInput(s shape, cands *Candidates) ast.Value {
	mcp := ast.NewObject(ast.Item(kMethod, ast.StringTerm(s.method)))
	switch s.kind {
	case targetList:
		mcp.Insert(kCandidates, candidatesTerm(cands))
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
// the caller alone, or for a list (cands its candidates) visible. Any doubt
// (an error, a timeout, a residual it cannot read) is a no: the request is
// then evaluated every time. ctx bounds it (start gives it analysisTimeout).
func analyse(ctx context.Context, c *compiled, compiler *ast.Compiler, s shape, cands *Candidates) bool {
	query := AllowQuery
	unknowns := append(append([]*ast.Term{}, callerInput...), variableInput...)
	if s.kind == targetList {
		query = VisibleQuery
	} else {
		unknowns = append(unknowns, candidatesInput)
	}
	// Partial evaluation computes a builtin whose arguments it knows unless
	// OPA marks it non-deterministic, and some that read the clock are not:
	// the analysis, knowing the shape, would compute one once, and the
	// decision would be reused after its answer changed (a certificate
	// expired). A policy that calls one is never reused.
	if c.readsClock {
		return false
	}
	pq, err := rego.New(
		rego.Query(query),
		rego.Compiler(compiler),
		rego.Store(c.store),
		rego.Transaction(c.txn),
		rego.StoreReadAST(true),
		rego.StrictBuiltinErrors(true),
		rego.ParsedInput(knownInput(s, cands)),
		rego.ParsedUnknowns(unknowns),
	).Partial(ctx)
	if err != nil {
		return false
	}
	k := readCheck{compiler: compiler, known: knownPaths(s), followed: map[*ast.Rule]struct{}{}, ok: true}
	for _, q := range pq.Queries {
		k.check(q)
	}
	for _, m := range pq.Support {
		k.check(m)
	}
	return k.ok
}

// readCheck checks what a residual reads. OPA's partial evaluation does not
// always inline a rule: one with an else chain (and other forms) is left in
// the residual as a reference to the policy's own rule, which the residual
// then does not show. Every rule the residual refers to is therefore
// checked whole, and every rule those refer to: a reference it cannot pin
// down checks every rule it could mean.
type readCheck struct {
	compiler *ast.Compiler
	// known are the input paths the shape fixes (knownInput): a rule of
	// the policy, evaluated on a request of the shape, reads the same there.
	known    []ast.Ref
	followed map[*ast.Rule]struct{}
	ok       bool
}

// check walks x (a residual query, a support module, a rule): its input
// references must be the caller's or the shape's, its calls deterministic,
// no expression may carry `with`, and the rules it refers to must pass too.
func (k *readCheck) check(x any) {
	var refs []ast.Ref
	ast.WalkTerms(x, func(t *ast.Term) bool {
		switch v := t.Value.(type) {
		case ast.Ref:
			switch {
			case v[0].Equal(ast.InputRootDocument):
				if !readsCaller(v) && !k.readsKnown(v) {
					k.ok = false
				}
			case v[0].Equal(ast.DefaultRootDocument):
				refs = append(refs, v)
			}
		case ast.Call:
			if !deterministic(v[0]) {
				k.ok = false
			}
		}
		return !k.ok
	})
	ast.WalkExprs(x, func(e *ast.Expr) bool {
		if len(e.With) > 0 || (e.IsCall() && !deterministic(e.Operator())) {
			k.ok = false
		}
		return !k.ok
	})
	for _, ref := range refs {
		if !k.ok {
			return
		}
		// Hidden packages (system.*) included: a dynamic reference may
		// mean them too.
		for _, r := range k.compiler.GetRulesDynamicWithOpts(ref, ast.RulesOptions{IncludeHiddenModules: true}) {
			if _, done := k.followed[r]; !done {
				k.followed[r] = struct{}{}
				k.check(r)
			}
		}
	}
}

// readsKnown: ref reads under an input path the shape fixes.
func (k *readCheck) readsKnown(ref ast.Ref) bool {
	for _, p := range k.known {
		if ref.HasPrefix(p) {
			return true
		}
	}
	return false
}

// knownPaths are the input paths knownInput fixes for s, each a leaf of it
// (a reference to an object above them, such as input.mcp.tool, would also
// read what varies: the arguments).
func knownPaths(s shape) []ast.Ref {
	paths := []ast.Ref{refVersion, refMethod}
	switch s.kind {
	case targetList:
		paths = append(paths, candidatesInput.Value.(ast.Ref))
	case targetTool:
		paths = append(paths, refToolName, refToolAnnotations)
	case targetPrompt:
		paths = append(paths, refPromptName)
	case targetResource:
		paths = append(paths, refResourceURI)
	}
	return paths
}

var (
	refVersion         = ast.MustParseRef("input.version")
	refMethod          = ast.MustParseRef("input.mcp.method")
	refToolName        = ast.MustParseRef("input.mcp.tool.name")
	refToolAnnotations = ast.MustParseRef("input.mcp.tool.annotations")
	refPromptName      = ast.MustParseRef("input.mcp.prompt.name")
	refResourceURI     = ast.MustParseRef("input.mcp.resource.uri")
)

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

// readsClock are the builtins that read the time of day without OPA marking
// them non-deterministic (ast.Builtin.Nondeterministic): certificate chains
// are verified at time.Now() unless the options say another time. A policy
// calling one is not analysed at all (callsClock), so deterministic need
// not know them.
var readsClock = map[string]struct{}{
	ast.CryptoX509ParseAndVerifyCertificates.Name:            {},
	ast.CryptoX509ParseAndVerifyCertificatesWithOptions.Name: {},
}

// callsClock: a rule of the policy calls a builtin of readsClock.
func callsClock(compiler *ast.Compiler) bool {
	found := false
	for _, m := range compiler.Modules {
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if ref, ok := t.Value.(ast.Ref); ok {
				if _, clock := readsClock[ref.String()]; clock {
					found = true
				}
			}
			return found
		})
		if found {
			return true
		}
	}
	return false
}
