package policy

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
)

// The paths decision logs name: the decision of a request (the result is
// the decision object, reasons included) and the filtering of a list.
const (
	decisionPath = "mcpguard/decision"
	visiblePath  = "mcpguard/visible"
)

// The rules OPA's decision-log plugin asks of the policy (its defaults,
// which mcpguard keeps): the changes to make to an event before it is
// written (policies/system_log.rego), and whether to drop it.
const (
	MaskQuery = "data.system.log.mask"
	DropQuery = "data.system.log.drop"
)

// latencyMetric is the decision's latency in the event's metrics, under
// the name OPA gives its own evaluation time.
const latencyMetric = "timer_rego_query_eval_ns"

// logQueueSize bounds the decisions waiting for OPA's decision-log plugin.
// A full queue drops (and counts) rather than slow a request down.
const logQueueSize = 4096

// logEntry is what a request's goroutine hands over: values it already
// holds, no conversion and no encoding.
type logEntry struct {
	id      string
	path    string
	at      time.Time
	latency time.Duration
	// input is the document the policy was given (AST values are
	// immutable once built: reading it on another goroutine is safe).
	input ast.Value
	// request, when input is nil, is the request whose document the log
	// goroutine builds: a reused decision made none, and the request's
	// goroutine should not make one only to log it.
	request *Input
	c       *compiled
	d       Decision
	visible map[string]struct{}
	err     error
}

// decisionLog hands decisions to OPA's decision-log plugin on a goroutine
// of its own: the plugin's Log masks the event (data.system.log.mask, an
// evaluation) and encodes it, which a request should not wait for.
type decisionLog struct {
	manager *plugins.Manager
	queue   chan logEntry
	quit    chan struct{}
	done    chan struct{}
	dropped *atomic.Uint64
	logger  *slog.Logger
}

func newDecisionLog(m *plugins.Manager, dropped *atomic.Uint64, logger *slog.Logger) *decisionLog {
	l := &decisionLog{manager: m, queue: make(chan logEntry, logQueueSize), quit: make(chan struct{}),
		done: make(chan struct{}), dropped: dropped, logger: logger}
	go l.run()
	return l
}

// enqueue never blocks: with the queue full the entry is dropped and
// counted (Status.LogsDropped).
func (l *decisionLog) enqueue(en logEntry) {
	select {
	case l.queue <- en:
	default:
		l.dropped.Add(1)
	}
}

// logFlushInterval is how often the log goroutine takes what is queued. It
// sleeps on a timer, not on the queue: a request's send then never has to
// wake it (waking a parked goroutine costs the sender a system call, more
// than the rest of the hand-over), and a decision reaches OPA's plugin
// within this long.
const logFlushInterval = 20 * time.Millisecond

func (l *decisionLog) run() {
	defer close(l.done)
	tick := time.NewTicker(logFlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			l.drain()
		case <-l.quit:
			l.drain()
			return
		}
	}
}

// drain writes what is queued now.
func (l *decisionLog) drain() {
	for {
		select {
		case en := <-l.queue:
			l.write(en)
		default:
			return
		}
	}
}

// stop writes what is queued, within ctx.
func (l *decisionLog) stop(ctx context.Context) {
	close(l.quit)
	select {
	case <-l.done:
	case <-ctx.Done():
	}
}

func (l *decisionLog) write(en logEntry) {
	p := logs.Lookup(l.manager)
	if p == nil {
		return
	}
	if err := p.Log(context.Background(), en.info()); err != nil {
		l.logger.Warn("decision log", "decision_id", en.id, "error", err)
	}
}

// logDecision queues a decision of Decide.
func (e *Engine) logDecision(t0 time.Time, c *compiled, input ast.Value, d Decision, err error) {
	e.dlog.enqueue(logEntry{id: d.ID, path: decisionPath, at: t0, latency: time.Since(t0), input: input, c: c, d: d, err: err})
}

// info lays the entry out as OPA's server and SDK hand a decision to the
// plugin: the plugin turns it into the event (decision_id, timestamp, path,
// input, result, revision and bundles, metrics, labels).
func (en *logEntry) info() *server.Info {
	info := &server.Info{
		DecisionID: en.id,
		Timestamp:  en.at.UTC(),
		Path:       en.path,
		Metrics:    latency(en.latency.Nanoseconds()),
	}
	if en.input == nil && en.request != nil {
		if v, err := en.request.value(); err == nil {
			en.input = v
		}
	}
	if en.input != nil {
		// The mask works on JSON values, the drop and mask policies read
		// the AST: both, as OPA's SDK gives them.
		if x, err := ast.JSON(en.input); err == nil {
			info.Input = &x
			info.InputAST = en.input
		}
	}
	result := en.result()
	info.Results = &result
	if en.c != nil {
		info.Revision = en.c.revision
		info.Bundles = en.c.bundles
	}
	if en.err != nil {
		info.Error = &logError{Code: "evaluation_error", Message: en.err.Error()}
	}
	return info
}

// result is the logged result: the decision object (allow, reasons and,
// on a deny, the details and obligations), or the sorted visible names.
func (en *logEntry) result() any {
	if en.path == visiblePath {
		names := make([]string, 0, len(en.visible))
		for n := range en.visible {
			names = append(names, n)
		}
		slices.Sort(names)
		out := make([]any, len(names))
		for i, n := range names {
			out[i] = n
		}
		return out
	}
	reasons := make([]any, len(en.d.Reasons))
	for i, r := range en.d.Reasons {
		reasons[i] = r
	}
	obj := map[string]any{"allow": en.d.Allow, "reasons": reasons}
	if len(en.d.Details) > 0 {
		details := make([]any, len(en.d.Details))
		for i, r := range en.d.Details {
			details[i] = map[string]any{"id": r.ID, "message": r.Message, "detail": r.Detail}
		}
		obj["details"] = details
	}
	if len(en.d.Obligations) > 0 {
		obj["obligations"] = en.d.Obligations
	}
	return obj
}

// logError is an error as the event's JSON shows it (an error value alone
// would encode as {}).
type logError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *logError) Error() string { return e.Message }

// latency is a metrics set holding one timer, the decision's latency: the
// plugin reads only All.
type latency int64

func (l latency) All() map[string]any { return map[string]any{latencyMetric: int64(l)} }

func (latency) Info() metrics.Info                 { return metrics.Info{Name: "mcpguard"} }
func (latency) Timer(string) metrics.Timer         { return metrics.NoOp().Timer("") }
func (latency) Histogram(string) metrics.Histogram { return metrics.NoOp().Histogram("") }
func (latency) Counter(string) metrics.Counter     { return metrics.NoOp().Counter("") }
func (latency) Clear()                             {}
func (l latency) MarshalJSON() ([]byte, error)     { return json.Marshal(l.All()) }

// withoutArguments is the input document with the tool's arguments left
// out: what a decision log shows of a call whose arguments were refused.
func (in *Input) withoutArguments() ast.Value {
	cp := *in
	if in.MCP.Tool != nil {
		t := *in.MCP.Tool
		t.Arguments = nil
		cp.MCP.Tool = &t
	}
	v, err := cp.value()
	if err != nil {
		return nil
	}
	return v
}
