// Package authntest builds hostile tokens for tests of token verifiers: the
// JWS JSON re-wrappings of a genuinely signed token that a compact-only
// verifier must refuse.
package authntest

import (
	"encoding/json"
	"strings"
)

// WrapJSON re-wraps a compact JWS into the flattened (general false) or the
// general JWS JSON serialization, with extra members beside the signed parts:
// to a parser that reads claims from the outer object, they are claims.
func WrapJSON(compact string, extra map[string]any, general bool) string {
	p := strings.Split(compact, ".")
	if len(p) != 3 {
		panic("authntest: not a compact JWS")
	}
	obj := make(map[string]any, len(extra)+3)
	for k, v := range extra {
		obj[k] = v
	}
	if general {
		obj["payload"] = p[1]
		obj["signatures"] = []map[string]any{{"protected": p[0], "signature": p[2]}}
	} else {
		obj["protected"], obj["payload"], obj["signature"] = p[0], p[1], p[2]
	}
	b, err := json.Marshal(obj)
	if err != nil {
		panic("authntest: " + err.Error())
	}
	return string(b)
}
