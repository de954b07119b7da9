package policy

import (
	"encoding/json"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// JSON is the fragment as the policy reads it, for the authors' tools
// (`mcpguard policy catalog`).
func (f *Fragment) JSON() ([]byte, error) {
	x, err := ast.JSON(f.v)
	if err != nil {
		return nil, fmt.Errorf("fragment: %w", err)
	}
	return json.Marshal(x)
}
