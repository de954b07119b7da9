package policy

// Reused reports whether the engine holds a reused decision for in's caller
// and shape, and which.
func Reused(e *Engine, in *Input) (allowed, ok bool) {
	s, ok := shapeOf(in)
	if !ok {
		return false, false
	}
	return e.current.Load().reuse.lookup(reuseKey{shape: s, identity: in.Identity, authorization: in.Authorization})
}
