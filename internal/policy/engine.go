// Package policy decides MCP requests with an embedded OPA engine. It loads
// the Rego policies and data of one folder with its own decision module
// (policies/mcpguard.rego, built in), prepares their queries once and answers
// three questions on a given input document: may this request pass
// (data.mcpguard.allow), why not (data.mcpguard.decision), and which list
// items may this caller see (data.mcpguard.visible). The decision module
// composes fixed guards with the folder's permissions (package mcp.authz).
// Undefined results, errors and timeouts deny.
//
// The policy in force changes without a restart: a folder is reloaded when
// its files change (or on Reload), and OPA's own plugin manager, when an OPA
// configuration is given, activates signed bundles and receives the decision
// logs. Every change is compiled strictly and passes its own tests before it
// is swapped in, atomically: a change that fails leaves the last good policy
// in force. The engine knows no transport; what it fetches, OPA's bundle
// plugin fetches.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"
)

// The rules the engine evaluates.
const (
	AllowQuery    = "data.mcpguard.allow"
	DecisionQuery = "data.mcpguard.decision"
	VisibleQuery  = "data.mcpguard.visible"
)

// Decision is the answer to one request.
type Decision struct {
	Allow bool `json:"allow"`
	// Reasons are the messages of Details: what a caller may be shown.
	Reasons []string `json:"reasons"`
	// Details are the reasons of a deny as the policy gave them: the rule,
	// the message, and the detail the log keeps.
	Details     []Reason `json:"details,omitempty"`
	Obligations []any    `json:"obligations,omitempty"`
	// ID identifies this decision in logs and in the error a caller sees.
	ID string `json:"decision_id"`
}

// Reason is one reason of a deny: ID names the rule that refused (may be
// empty), Message is the text a caller may be shown, Detail the text for
// the log, which may name roles, values and rules.
type Reason struct {
	ID      string `json:"id"`
	Message string `json:"message"`
	Detail  string `json:"detail"`
}

// Engine evaluates the policies of one folder, or of the bundles OPA's
// bundle plugin activates. It is safe for concurrent use; a new policy is
// swapped in atomically, and every decision is made by one policy whole.
type Engine struct {
	dir     string
	timeout time.Duration
	logger  *slog.Logger
	current atomic.Pointer[compiled]
	ids     idSource

	// tests runs the policy's own tests before any policy is swapped in;
	// without it only changes made while running are tested.
	tests bool
	// noReuse: no decision is reused (WithoutDecisionReuse).
	noReuse bool
	mgmt    *Management
	// fromBundles is set when the policy comes from OPA's bundle plugin,
	// which then alone changes it; the folder is not read.
	fromBundles bool
	// static is an engine made from a bundle file (OpenBundle).
	static      bool
	watching    atomic.Bool
	generations atomic.Uint64
	opa         *opaPlane
	dlog        *decisionLog
	status      status
	// reloadMu serialises folder reloads: two at once could swap in the
	// older read last.
	reloadMu sync.Mutex
	// first is closed when the first policy is swapped in.
	first     chan struct{}
	firstOnce sync.Once
	// bg lives as long as the engine: the watcher and OPA's plugins run
	// under it, not under the context New was given.
	bg     context.Context
	stopBG context.CancelFunc
	closed sync.Once
}

type compiled struct {
	compiler *ast.Compiler
	store    storage.Store
	// txn is one read transaction shared by every evaluation: the store is
	// never written, and an in-memory read is stateless, so opening one per
	// evaluation would only cost time. The store is the engine's own, never
	// OPA's plugin manager's, whose bundle activations write.
	txn      storage.Transaction
	allow    rego.PreparedEvalQuery
	decision rego.PreparedEvalQuery
	visible  rego.PreparedEvalQuery
	// reuse keeps the decisions that depend on the caller alone (reuse.go).
	reuse *reuse
	// readsClock: the policy calls a builtin that reads the time of day
	// unmarked (callsClock), so nothing of it is answered ahead: allow is
	// not partially evaluated at load, and no decision is reused.
	readsClock bool
	// loaded is the served policy as compiled (for the lint).
	loaded *Loaded
	// revision names this policy; bundles are the revisions of the
	// bundles it was made of (none for a folder), as decision logs say.
	revision string
	bundles  map[string]server.BundleInfo
	// generation numbers the policies an engine swaps in, from 1.
	generation uint64
}

// Option configures an Engine.
type Option func(*Engine)

// WithTimeout bounds one evaluation; past it the request is denied.
func WithTimeout(d time.Duration) Option { return func(e *Engine) { e.timeout = d } }

// WithLogger sets where decisions that deny or fail, and policy changes, are
// logged.
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.logger = l } }

// WithoutDecisionReuse makes every decision an evaluation (reuse.go): for
// measuring what an evaluation costs, and for ruling the reuse out.
func WithoutDecisionReuse() Option { return func(e *Engine) { e.noReuse = true } }

// WithPolicyTests makes the policy's own tests (its *_test.rego) a condition
// of every policy swapped in, the first included. Without it the first
// folder is only compiled (its tests are CI's) and later changes are tested.
func WithPolicyTests(on bool) Option { return func(e *Engine) { e.tests = on } }

// WithManagement runs OPA's plugin manager with the configuration m: bundles
// (which then replace the folder), decision logs, status reports.
func WithManagement(m Management) Option { return func(e *Engine) { e.mgmt = &m } }

// defaultTimeout bounds one evaluation unless WithTimeout says otherwise.
const defaultTimeout = 100 * time.Millisecond

var discardLogger = slog.New(slog.DiscardHandler)

// ErrNoPolicy is the error of a decision made before any policy is in force:
// it denies.
var ErrNoPolicy = errors.New("no policy is in force")

// New loads and compiles the policies in dir, or, with a management
// configuration that names bundles, waits for the first bundle to be
// activated (from OPA's persistence directory, or downloaded). A policy that
// does not parse or compile is an error naming the file and line. Close
// stops what New started.
func New(ctx context.Context, dir string, opts ...Option) (*Engine, error) {
	e := &Engine{dir: dir, timeout: defaultTimeout, logger: discardLogger, first: make(chan struct{})}
	e.ids.prefix = newIDPrefix()
	for _, o := range opts {
		o(e)
	}
	e.bg, e.stopBG = context.WithCancel(context.WithoutCancel(ctx))
	if e.mgmt != nil {
		if err := e.startOPA(ctx); err != nil {
			e.Close(context.Background())
			return nil, err
		}
	}
	if e.fromBundles {
		return e, nil
	}
	if err := e.reload(ctx, e.tests); err != nil {
		e.Close(context.Background())
		return nil, err
	}
	return e, nil
}

// Close stops watching the folder and OPA's plugins; the decision logs
// queued are handed to OPA's plugin first, which uploads what it holds
// within ctx's deadline. The engine still decides, with the policy in
// force. Close may be called more than once.
func (e *Engine) Close(ctx context.Context) {
	e.closed.Do(func() {
		e.stopBG()
		if e.dlog != nil {
			e.dlog.stop(ctx)
		}
		if e.opa != nil && e.opa.started {
			e.opa.manager.Stop(ctx)
		}
	})
}

func (e *Engine) source() string {
	if e.fromBundles {
		return "bundle"
	}
	return "dir"
}

// Reload reads the folder again and, only if it compiles strictly and its
// tests pass, swaps it in. A change that fails leaves the previous policy in
// force, and is counted and kept in Status. A folder whose files have not
// changed is not compiled again. With bundles, Reload asks OPA's bundle
// plugin to download now when they are configured with trigger: manual;
// polled bundles come with the next poll.
func (e *Engine) Reload(ctx context.Context) error {
	if e.fromBundles {
		return e.opa.trigger(ctx, e.logger)
	}
	if e.static {
		return errors.New("an engine made from a bundle file is not reloaded")
	}
	return e.reload(ctx, true)
}

func (e *Engine) reload(ctx context.Context, tests bool) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	src, err := readDir(e.dir, tests)
	if err != nil {
		return e.refuse(err)
	}
	rev := src.revision()
	if c := e.current.Load(); c != nil && c.revision == rev {
		// Back to the policy in force (a refused change undone): nothing
		// is refused any more.
		if e.Status().LastError != nil {
			e.status.update(e.source(), func(s *Status) { s.LastError = nil })
			e.logger.Info("the policy folder is the policy in force again", "revision", rev)
		}
		return nil
	}
	c, err := build(ctx, src, tests)
	if err != nil {
		return e.refuse(err)
	}
	c.revision = rev
	if e.opa != nil {
		if err := e.opa.mirror(ctx, c); err != nil {
			return e.refuse(fmt.Errorf("policy %s: handing it to OPA's plugins: %w", e.dir, err))
		}
	}
	e.swap(c)
	return nil
}

// swap puts c in force.
func (e *Engine) swap(c *compiled) {
	c.generation = e.generations.Add(1)
	e.current.Store(c)
	e.status.update(e.source(), func(s *Status) {
		s.Ready, s.Revision, s.Loaded, s.LastError = true, c.revision, time.Now(), nil
		s.Reloads++
	})
	e.firstOnce.Do(func() { close(e.first) })
	e.logger.Info("policy in force", "source", e.source(), "revision", c.revision)
	if e.dlog != nil && len(c.compiler.GetRulesExact(maskRef)) == 0 {
		e.logger.Warn("decision logs are on but the policy has no " + MaskQuery + ": inputs are logged unmasked (policies/system_log.rego masks them)")
	}
}

var maskRef = ast.MustParseRef(MaskQuery)

// refuse counts a change that was not swapped in and returns err.
func (e *Engine) refuse(err error) error {
	e.status.update(e.source(), func(s *Status) {
		s.LastError = err
		s.Failures++
	})
	if c := e.current.Load(); c != nil {
		e.logger.Error("policy change refused; the last good policy stays in force", "revision", c.revision, "error", err)
	}
	return err
}

// compileTimeout bounds loading: partial evaluation at load runs whatever
// of the policy does not depend on input.
const compileTimeout = 60 * time.Second

// build compiles a source as the server serves it: strictly, with the
// tests when asked (they must pass), then the queries prepared.
func build(ctx context.Context, src *source, tests bool) (*compiled, error) {
	ctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	loaded, err := src.assemble(false)
	if err != nil {
		return nil, err
	}
	if _, err := loaded.Compile(); err != nil {
		return nil, err
	}
	if tests {
		withTests, err := src.assemble(true)
		if err != nil {
			return nil, err
		}
		if err := runTests(ctx, withTests); err != nil {
			return nil, err
		}
	}
	return prepare(ctx, loaded)
}

func prepare(ctx context.Context, loaded *Loaded) (*compiled, error) {
	dir := loaded.Dir
	// The strict compile is the check. Evaluation gets a compiler of
	// its own, not strict: preparing a partially evaluated query compiles
	// every module again, already rewritten, and strict mode would then
	// take a function's wildcard argument (tool_allowed(_)) for an unused one.
	compiler := ast.NewCompiler()
	compiler.Compile(loaded.Modules)
	if compiler.Failed() {
		return nil, fmt.Errorf("policy %s does not compile: %w", dir, compiler.Errors)
	}
	// AST values on read: data lookups during evaluation need no conversion.
	store := inmem.NewFromObjectWithOpts(loaded.Documents, inmem.OptReturnASTValuesOnRead(true))
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	c := &compiled{compiler: compiler, store: store, txn: txn, loaded: loaded}
	// Partial evaluation computes, once, whatever builtin it knows the
	// arguments of, unless OPA marks it non-deterministic; a few that read
	// the clock are not marked (readsClock), and would be answered at load
	// for good. A policy that calls one is evaluated whole on each request.
	c.readsClock = callsClock(compiler)
	for _, q := range []struct {
		query string
		into  *rego.PreparedEvalQuery
		// partial: evaluate the query ahead against data, leaving only
		// input unknown. allow then becomes flat rules that the rule index
		// selects by method and tool name, whatever the catalog's size.
		partial bool
	}{{AllowQuery, &c.allow, !c.readsClock}, {DecisionQuery, &c.decision, false}, {VisibleQuery, &c.visible, false}} {
		var popts []rego.PrepareOption
		if q.partial {
			popts = append(popts, rego.WithPartialEval())
		}
		pq, err := rego.New(
			rego.Query(q.query),
			rego.Compiler(compiler),
			rego.Store(store),
			rego.StoreReadAST(true),
			// A builtin error (a type error, a division by zero) fails the
			// evaluation, which denies; by default it only makes its rule
			// undefined, and a veto that errs would not fire.
			rego.StrictBuiltinErrors(true),
		).PrepareForEval(ctx, popts...)
		if err != nil {
			return nil, fmt.Errorf("policy %s: preparing %s: %w", dir, q.query, err)
		}
		*q.into = pq
	}
	c.reuse = newReuse(c)
	return c, nil
}

// noMetrics spares each evaluation the timers and maps of a metrics set.
var noMetrics = metrics.NoOp()

// Decide evaluates allow for the input and, on a deny, the decision with its
// reasons. Any error is returned together with a denying Decision. Tool
// arguments the policy cannot be shown exactly as the tool will read them
// are a deny without an error: the request is refused, the policy is sound.
// With decision logs on, the decision is queued for OPA's decision-log
// plugin; the masking and the encoding happen off the request's goroutine,
// which shares the Decision's slices: read them, never change them.
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	var t0 time.Time
	if e.dlog != nil {
		t0 = time.Now()
	}
	c := e.current.Load()
	key, reusable := reuseKey{}, false
	if s, ok := shapeOf(in); ok && c != nil && !e.noReuse {
		key, reusable = reuseKey{shape: s, identity: in.Identity, authorization: in.Authorization}, true
	}
	if reusable {
		if allowed, ok := c.reuse.lookup(key); ok {
			// The arguments are checked whatever was decided before: a
			// request the policy cannot be shown exactly is refused.
			if in.MCP.Tool != nil {
				if err := checkArguments(in.MCP.Tool.Arguments); err != nil {
					return e.refuseInput(t0, in, err)
				}
			}
			if allowed {
				d := Decision{Allow: true, ID: e.ids.next()}
				if e.dlog != nil {
					// The log goroutine builds the document from a copy.
					req := *in
					e.dlog.enqueue(logEntry{id: d.ID, path: decisionPath, at: t0, latency: time.Since(t0), request: &req, c: c, d: d})
				}
				return d, nil
			}
			v, err := in.value()
			if err != nil {
				return e.refuseInput(t0, in, err)
			}
			d, err := e.denied(ctx, c, v, in.MCP.Method)
			if e.dlog != nil {
				e.logDecision(t0, c, v, d, err)
			}
			return d, err
		}
	}
	v, err := in.value()
	if err != nil {
		return e.refuseInput(t0, in, err)
	}
	d, err := e.decide(ctx, c, v, in.MCP.Method)
	if err == nil && reusable {
		c.reuse.remember(ctx, key, d.Allow)
	}
	if e.dlog != nil {
		e.logDecision(t0, c, v, d, err)
	}
	return d, err
}

// refuseInput is the Decision on an input that could not be built: tool
// arguments the policy cannot be shown exactly are a deny without an
// error, anything else an error.
func (e *Engine) refuseInput(t0 time.Time, in *Input, err error) (Decision, error) {
	d := Decision{ID: e.ids.next(), Reasons: []string{err.Error()}}
	var ae *argumentsError
	if !errors.As(err, &ae) {
		d.Reasons = []string{"policy input could not be built"}
		e.logger.Error("policy input failed", "decision_id", d.ID, "method", in.MCP.Method, "error", err)
		if e.dlog != nil {
			e.logDecision(t0, nil, in.withoutArguments(), d, err)
		}
		return d, err
	}
	e.logger.Info("tool arguments refused", "decision_id", d.ID, "method", in.MCP.Method,
		"tool", in.MCP.Tool.Name, "reason", ae.reason)
	if e.dlog != nil {
		e.logDecision(t0, e.current.Load(), in.withoutArguments(), d, nil)
	}
	return d, nil
}

// DecideDocument decides a whole input document given as JSON, as the
// command line and tests have it. It is not logged.
func (e *Engine) DecideDocument(ctx context.Context, doc []byte) (Decision, error) {
	v, method, err := parseDocument(doc)
	if err != nil {
		return Decision{}, err
	}
	return e.decide(ctx, e.current.Load(), v, method)
}

// parseDocument reads an input document (a JSON object) and its method.
func parseDocument(doc []byte) (ast.Value, string, error) {
	var x any
	if err := util.UnmarshalJSON(doc, &x); err != nil {
		return nil, "", fmt.Errorf("input document: %w", err)
	}
	obj, ok := x.(map[string]any)
	if !ok {
		return nil, "", errors.New("input document: not a JSON object")
	}
	v, err := ast.InterfaceToValue(obj)
	if err != nil {
		return nil, "", fmt.Errorf("input document: %w", err)
	}
	method := ""
	if m, ok := obj["mcp"].(map[string]any); ok {
		method, _ = m["method"].(string)
	}
	return v, method, nil
}

func (e *Engine) decide(ctx context.Context, c *compiled, value ast.Value, method string) (Decision, error) {
	if c == nil {
		return Decision{ID: e.ids.next(), Reasons: []string{"no policy is in force"}}, ErrNoPolicy
	}
	allowed, err := evalBool(ctx, c, &c.allow, value, e.timeout)
	if err != nil {
		d := Decision{ID: e.ids.next(), Reasons: []string{"policy evaluation failed"}}
		e.logger.Error("policy evaluation failed", "decision_id", d.ID, "method", method, "error", err)
		return d, err
	}
	if allowed {
		return Decision{Allow: true, ID: e.ids.next()}, nil
	}
	return e.denied(ctx, c, value, method)
}

// denied is the Decision on a request allow denied, with the reasons.
func (e *Engine) denied(ctx context.Context, c *compiled, value ast.Value, method string) (Decision, error) {
	d := Decision{ID: e.ids.next()}
	if err := e.explain(ctx, c, value, &d); err != nil {
		d.Allow, d.Reasons = false, []string{"policy evaluation failed"}
		e.logger.Error("policy decision failed", "decision_id", d.ID, "method", method, "error", err)
		return d, err
	}
	return d, nil
}

// explain evaluates the full decision object for a request allow denied.
func (e *Engine) explain(ctx context.Context, c *compiled, value ast.Value, d *Decision) error {
	rs, err := evalWith(ctx, c, &c.decision, value, e.timeout)
	if err != nil {
		return err
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		d.Reasons = []string{"denied by default: the policy gave no decision"}
		return nil
	}
	obj, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return fmt.Errorf("%s is %T, not an object", DecisionQuery, rs[0].Expressions[0].Value)
	}
	if allow, _ := obj["allow"].(bool); allow {
		// allow and decision must agree; when they do not, deny.
		return fmt.Errorf("%s allows what %s denies", DecisionQuery, AllowQuery)
	}
	switch rr := obj["reasons"].(type) {
	case []any:
		for _, r := range rr {
			if s, ok := r.(string); ok {
				d.Reasons = append(d.Reasons, s)
			}
		}
	}
	if dd, ok := obj["details"].([]any); ok {
		for _, x := range dd {
			if m, ok := x.(map[string]any); ok {
				r := Reason{}
				r.ID, _ = m["id"].(string)
				r.Message, _ = m["message"].(string)
				r.Detail, _ = m["detail"].(string)
				d.Details = append(d.Details, r)
			}
		}
	}
	if ob, ok := obj["obligations"].([]any); ok {
		d.Obligations = ob
	}
	if len(d.Reasons) == 0 {
		d.Reasons = []string{"denied by policy"}
	}
	return nil
}

// Visible returns the names (or URIs) of the input's candidates the caller may
// see: VisibleSet without saying whether the set was reused.
func (e *Engine) Visible(ctx context.Context, in *Input) (map[string]struct{}, error) {
	set, _, err := e.VisibleSet(ctx, in)
	return set, err
}

// VisibleSet returns the names (or URIs) of the input's candidates the
// caller may see, in one evaluation, or the set evaluated before for the
// same caller and the same list (method and candidates) when the policy's
// visible is shown to depend on the caller alone for that list (reuse.go);
// reused says which. An error or an undefined result sees nothing. The set
// may be shared with other requests: read it, never change it. With
// decision logs on, each answer, reused or not, is logged as a decision of
// its own (path mcpguard/visible).
func (e *Engine) VisibleSet(ctx context.Context, in *Input) (visible map[string]struct{}, reused bool, err error) {
	var t0 time.Time
	if e.dlog != nil {
		t0 = time.Now()
	}
	c := e.current.Load()
	key, reusable := reuseKey{}, false
	if s, ok := listShapeOf(in); ok && c != nil && !e.noReuse {
		key, reusable = reuseKey{shape: s, identity: in.Identity, authorization: in.Authorization}, true
	}
	if reusable {
		if set, ok := c.reuse.lookupVisible(key, in.MCP.Candidates); ok {
			if e.dlog != nil {
				// The log goroutine builds the document from a copy.
				req := *in
				e.dlog.enqueue(logEntry{id: e.ids.next(), path: visiblePath, at: t0, latency: time.Since(t0),
					request: &req, c: c, visible: set})
			}
			return set, true, nil
		}
	}
	v, err := in.value()
	if err != nil {
		return nil, false, err
	}
	out, err := e.visibleOf(ctx, c, v, e.listTimeout(in.MCP.Candidates))
	if err != nil {
		e.logger.Error("policy visibility failed", "method", in.MCP.Method, "error", err)
	} else if reusable {
		c.reuse.rememberVisible(ctx, key, in.MCP.Candidates, out)
	}
	if e.dlog != nil {
		e.dlog.enqueue(logEntry{id: e.ids.next(), path: visiblePath, at: t0, latency: time.Since(t0),
			input: v, c: c, visible: out, err: err})
	}
	return out, false, err
}

func (e *Engine) visibleOf(ctx context.Context, c *compiled, v ast.Value, timeout time.Duration) (map[string]struct{}, error) {
	if c == nil {
		return nil, ErrNoPolicy
	}
	var set ast.Set
	_, err := evalWith(ctx, c, &c.visible, v, timeout, rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) {
		// Keep the AST: converting a large set to Go values costs more than reading it.
		if s, ok := t.Value.(ast.Set); ok {
			set = s
		}
		return nil, nil
	}))
	if err != nil {
		return nil, err
	}
	out := make(map[string]struct{})
	if set == nil {
		return out, nil
	}
	set.Foreach(func(t *ast.Term) {
		if s, ok := t.Value.(ast.String); ok {
			out[string(s)] = struct{}{}
		}
	})
	return out, nil
}

// candidatesPerTimeout is how many list candidates one more timeout covers:
// filtering a list costs in proportion to its length, and a long list on a
// loaded machine must not be refused for being long.
const candidatesPerTimeout = 200

// listTimeout bounds one visible evaluation: the timeout, and one more for
// each candidatesPerTimeout candidates.
func (e *Engine) listTimeout(c *Candidates) time.Duration {
	if c == nil {
		return e.timeout
	}
	n := len(c.Tools) + len(c.Resources) + len(c.ResourceTemplates) + len(c.Prompts)
	return e.timeout * time.Duration(1+n/candidatesPerTimeout)
}

func evalBool(ctx context.Context, c *compiled, q *rego.PreparedEvalQuery, input ast.Value, timeout time.Duration) (bool, error) {
	var result ast.Value
	_, err := evalWith(ctx, c, q, input, timeout, rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) {
		result = t.Value
		return nil, nil
	}))
	if err != nil {
		return false, err
	}
	if result == nil {
		return false, nil // undefined: deny
	}
	b, ok := result.(ast.Boolean)
	if !ok {
		return false, fmt.Errorf("%s is %s, not a boolean", AllowQuery, ast.ValueName(result))
	}
	return bool(b), nil
}

// evalWith runs a prepared query under a deadline. Cancellation goes through
// an external cancel fired by a timer, which costs less than the goroutine
// OPA starts per evaluation otherwise.
func evalWith(ctx context.Context, c *compiled, q *rego.PreparedEvalQuery, input ast.Value, timeout time.Duration, opts ...rego.EvalOption) (rego.ResultSet, error) {
	cancel := topdown.NewCancel()
	timer := time.AfterFunc(timeout, cancel.Cancel)
	defer timer.Stop()
	opts = append(opts, rego.EvalParsedInput(input), rego.EvalExternalCancel(cancel),
		rego.EvalTransaction(c.txn), rego.EvalMetrics(noMetrics))
	rs, err := q.Eval(ctx, opts...)
	if err != nil {
		var te *topdown.Error
		if errors.As(err, &te) && te.Code == topdown.CancelErr {
			return nil, fmt.Errorf("policy evaluation exceeded %s: %w", timeout, err)
		}
		return nil, err
	}
	return rs, nil
}
