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

// ReusedVisible returns the visible set the engine holds for in's caller
// and list, if any.
func ReusedVisible(e *Engine, in *Input) (map[string]struct{}, bool) {
	s, ok := listShapeOf(in)
	if !ok {
		return nil, false
	}
	return e.current.Load().reuse.lookupVisible(reuseKey{shape: s, identity: in.Identity, authorization: in.Authorization}, in.MCP.Candidates)
}

// VisibleReuseAnalysed reports whether in's list shape was analysed, and
// found reusable.
func VisibleReuseAnalysed(e *Engine, in *Input) (reusable, analysed bool) {
	s, ok := listShapeOf(in)
	if !ok {
		return false, false
	}
	r := e.current.Load().reuse
	r.mu.RLock()
	defer r.mu.RUnlock()
	reusable, analysed = r.shapes[s]
	return reusable, analysed
}

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
	r.analyse = func(ctx context.Context, s shape, cands *Candidates) bool {
		return f(ctx, s.target, func(ctx context.Context) bool { return orig(ctx, s, cands) })
	}
}

// Remembered is how many call decisions the policy in force holds for reuse.
func Remembered(e *Engine) int {
	r := e.current.Load().reuse
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.decisions)
}
