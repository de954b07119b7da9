// Package mcpguard holds what the binary embeds from the repository's own
// folders: the decision module policies/mcpguard.rego, which the policy
// engine compiles with every policy folder (internal/policy).
package mcpguard

import _ "embed"

// GuardModule is policies/mcpguard.rego: the rules the server asks
// (data.mcpguard.allow, decision, visible), which compose the fixed guards
// with the security team's package mcp.authz.
//
//go:embed policies/mcpguard.rego
var GuardModule string
