package policy

import (
	"context"

	"github.com/open-policy-agent/opa/v1/rego"
)

// unknownParts are the parts of the input a lint leaves open: anyone may call,
// with any roles and arguments, at any time, over any transport.
var unknownParts = []string{
	"input.identity", "input.authorization", "input.request",
	"input.mcp.session_id", "input.mcp.protocol_version", "input.mcp.client",
	"input.mcp.tool.arguments", "input.mcp.prompt.arguments",
}

// CanAllow reports whether some caller could ever be allowed the request in
// describes (method and target): allow is partially evaluated with the
// caller, roles, arguments and transport unknown. No remaining query means no
// rule can allow it, whoever asks.
func (e *Engine) CanAllow(ctx context.Context, in *Input) (bool, error) {
	c := e.current.Load()
	pq, err := rego.New(
		rego.Query(AllowQuery+" == true"),
		rego.Compiler(c.compiler),
		rego.Store(c.store),
		rego.ParsedInput(in.value()),
		rego.Unknowns(unknownParts),
	).Partial(ctx)
	if err != nil {
		return false, err
	}
	return len(pq.Queries) > 0, nil
}
