package policy

import "context"

// Reused reports whether the engine holds a reused decision for in's caller
// and shape, and which.
func Reused(e *Engine, in *Input) (allowed, ok bool) {
	s, ok := shapeOf(in)
	if !ok {
		return false, false
	}
	return e.current.Load().reuse.lookup(reuseKey{shape: s, identity: in.Identity, authorization: in.Authorization})
}

// WaitReuseAnalysis returns when the policy in force has no decision-reuse
// analysis running: what the requests so far started has ended.
func WaitReuseAnalysis(e *Engine) { ReuseAnalysisWaiter(e)() }

// ReuseAnalysisWaiter is WaitReuseAnalysis for the policy in force now,
// kept across a reload.
func ReuseAnalysisWaiter(e *Engine) func() { return e.current.Load().reuse.wait }

// MaxReuseAnalyses is how many analyses run at once per compiled policy,
// each bounded by ReuseAnalysisTimeout.
const (
	MaxReuseAnalyses     = maxAnalyses
	ReuseAnalysisTimeout = analysisTimeout
)

// SetReuseAnalysis replaces the analysis of the policy in force with f,
// which is given the target (tool, prompt, resource) of the shape and the
// analysis it replaces. Call it before the engine decides anything.
func SetReuseAnalysis(e *Engine, f func(ctx context.Context, target string, analyse func(context.Context) bool) bool) {
	r := e.current.Load().reuse
	orig := r.analyse
	r.analyse = func(ctx context.Context, s shape) bool {
		return f(ctx, s.target, func(ctx context.Context) bool { return orig(ctx, s) })
	}
}
