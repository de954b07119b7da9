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
	v, err := in.value()
	if err != nil {
		return false, err
	}
	pq, err := rego.New(
		rego.Query(AllowQuery+" == true"),
		rego.Compiler(c.compiler),
		rego.Store(c.store),
		rego.ParsedInput(v),
		rego.Unknowns(unknownParts),
		rego.StrictBuiltinErrors(true),
	).Partial(ctx)
	if err != nil {
		return false, err
	}
	return len(pq.Queries) > 0, nil
}

// CatalogErrorsQuery names malformed rows of the policy's data table.
const CatalogErrorsQuery = "data.mcp.authz.catalog_errors"

// CatalogErrors evaluates data.mcp.authz.catalog_errors, when the policy
// defines it: each string names a catalog row no caller can satisfy because
// it is malformed.
func (e *Engine) CatalogErrors(ctx context.Context) ([]string, error) {
	c := e.current.Load()
	rs, err := rego.New(rego.Query(CatalogErrorsQuery), rego.Compiler(c.compiler), rego.Store(c.store),
		rego.StrictBuiltinErrors(true)).Eval(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	if len(rs) > 0 && len(rs[0].Expressions) > 0 {
		if list, ok := rs[0].Expressions[0].Value.([]any); ok {
			for _, x := range list {
				if s, ok := x.(string); ok {
					out = append(out, s)
				}
			}
		}
	}
	return out, nil
}
