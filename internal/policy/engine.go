// Package policy decides MCP requests with an embedded OPA engine. It loads
// the Rego policies and data of one folder with its own decision module
// (policies/mcpguard.rego, built in), prepares their queries once and answers
// three questions on a given input document: may this request pass
// (data.mcpguard.allow), why not (data.mcpguard.decision), and which list
// items may this caller see (data.mcpguard.visible). The decision module
// composes fixed guards with the folder's permissions (package mcp.authz).
// It knows no transport and fetches nothing. Undefined results, errors and
// timeouts deny.
package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
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

// Engine evaluates the policies of one folder. It is safe for concurrent use;
// Reload swaps the compiled policies atomically.
type Engine struct {
	dir     string
	timeout time.Duration
	logger  *slog.Logger
	current atomic.Pointer[compiled]
	ids     idSource
}

type compiled struct {
	compiler *ast.Compiler
	store    storage.Store
	// txn is one read transaction shared by every evaluation: the store is
	// never written, and an in-memory read is stateless, so opening one per
	// evaluation would only cost time.
	txn      storage.Transaction
	allow    rego.PreparedEvalQuery
	decision rego.PreparedEvalQuery
	visible  rego.PreparedEvalQuery
}

// Option configures an Engine.
type Option func(*Engine)

// WithTimeout bounds one evaluation; past it the request is denied.
func WithTimeout(d time.Duration) Option { return func(e *Engine) { e.timeout = d } }

// WithLogger sets where decisions that deny or fail are logged.
func WithLogger(l *slog.Logger) Option { return func(e *Engine) { e.logger = l } }

// New loads and compiles the policies in dir. A policy that does not parse or
// compile is an error naming the file and line.
func New(ctx context.Context, dir string, opts ...Option) (*Engine, error) {
	e := &Engine{dir: dir, timeout: 100 * time.Millisecond, logger: slog.New(slog.DiscardHandler)}
	e.ids.prefix = newIDPrefix()
	for _, o := range opts {
		o(e)
	}
	if err := e.Reload(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// Reload compiles the folder again and, only if that succeeds, replaces the
// active policies. A broken policy leaves the previous one in force.
func (e *Engine) Reload(ctx context.Context) error {
	c, err := compile(ctx, e.dir)
	if err != nil {
		return err
	}
	e.current.Store(c)
	return nil
}

// compileTimeout bounds loading: partial evaluation at load runs whatever
// of the policy does not depend on input.
const compileTimeout = 60 * time.Second

func compile(ctx context.Context, dir string) (*compiled, error) {
	ctx, cancel := context.WithTimeout(ctx, compileTimeout)
	defer cancel()
	loaded, err := Load(dir, false)
	if err != nil {
		return nil, err
	}
	if _, err := loaded.Compile(); err != nil {
		return nil, err
	}
	// The strict compile above is the check. Evaluation gets a compiler of
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
	c := &compiled{compiler: compiler, store: store, txn: txn}
	for _, q := range []struct {
		query string
		into  *rego.PreparedEvalQuery
		// partial: evaluate the query ahead against data, leaving only
		// input unknown. allow then becomes flat rules that the rule index
		// selects by method and tool name, whatever the catalog's size.
		partial bool
	}{{AllowQuery, &c.allow, true}, {DecisionQuery, &c.decision, false}, {VisibleQuery, &c.visible, false}} {
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
	return c, nil
}

// noMetrics spares each evaluation the timers and maps of a metrics set.
var noMetrics = metrics.NoOp()

// Decide evaluates allow for the input and, on a deny, the decision with its
// reasons. Any error is returned together with a denying Decision. Tool
// arguments the policy cannot be shown exactly as the tool will read them
// are a deny without an error: the request is refused, the policy is sound.
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	v, err := in.value()
	if err != nil {
		d := Decision{ID: e.ids.next(), Reasons: []string{err.Error()}}
		var ae *argumentsError
		if !errors.As(err, &ae) {
			d.Reasons = []string{"policy input could not be built"}
			e.logger.Error("policy input failed", "decision_id", d.ID, "method", in.MCP.Method, "error", err)
			return d, err
		}
		e.logger.Info("tool arguments refused", "decision_id", d.ID, "method", in.MCP.Method,
			"tool", in.MCP.Tool.Name, "reason", ae.reason)
		return d, nil
	}
	return e.decide(ctx, v, in.MCP.Method)
}

// DecideDocument decides a whole input document given as JSON, as the
// command line and tests have it.
func (e *Engine) DecideDocument(ctx context.Context, doc []byte) (Decision, error) {
	var x any
	if err := util.UnmarshalJSON(doc, &x); err != nil {
		return Decision{}, fmt.Errorf("input document: %w", err)
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return Decision{}, fmt.Errorf("input document: %w", err)
	}
	method := ""
	if m, ok := x.(map[string]any)["mcp"].(map[string]any); ok {
		method, _ = m["method"].(string)
	}
	return e.decide(ctx, v, method)
}

func (e *Engine) decide(ctx context.Context, value ast.Value, method string) (Decision, error) {
	c := e.current.Load()
	allowed, err := evalBool(ctx, c, &c.allow, value, e.timeout)
	if err != nil {
		d := Decision{ID: e.ids.next(), Reasons: []string{"policy evaluation failed"}}
		e.logger.Error("policy evaluation failed", "decision_id", d.ID, "method", method, "error", err)
		return d, err
	}
	if allowed {
		return Decision{Allow: true, ID: e.ids.next()}, nil
	}
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
// see, in one evaluation. An error or an undefined result sees nothing.
func (e *Engine) Visible(ctx context.Context, in *Input) (map[string]struct{}, error) {
	c := e.current.Load()
	v, err := in.value()
	if err != nil {
		return nil, err
	}
	var set ast.Set
	_, err = evalWith(ctx, c, &c.visible, v, e.listTimeout(in.MCP.Candidates), rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) {
		// Keep the AST: converting a large set to Go values costs more than reading it.
		if s, ok := t.Value.(ast.Set); ok {
			set = s
		}
		return nil, nil
	}))
	if err != nil {
		e.logger.Error("policy visibility failed", "method", in.MCP.Method, "error", err)
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
