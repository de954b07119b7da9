package system.log_test

import data.system.log

# A decision-log event as OPA's plugin hands it to the mask: the request's
# input document under input.

event(doc) := {"decision_id": "d-1", "path": "mcpguard/decision", "input": doc}

call := {
	"version": 1,
	"mcp": {
		"method": "tools/call",
		"session_id": "session-secret",
		"tool": {"name": "search", "arguments": {"query": "patient 42", "limit": 10}},
	},
	"identity": {
		"authenticated": true, "object_id": "o-1",
		"claims": {"iss": "https://issuer", "tid": "t-1", "email": "alice@example.com", "uti": "unique"},
	},
	"authorization": {"source": "keycloak", "roles": ["reader"], "claims": {"azp": "mcp", "sid": "keycloak-session"}},
}

test_identity_claims_reduced_to_the_kept_ones if {
	m := log.mask with input as event(call)
	{"op": "upsert", "path": "/input/identity/claims", "value": {"iss": "https://issuer", "tid": "t-1"}} in m
}

test_authorization_claims_reduced_to_the_kept_ones if {
	m := log.mask with input as event(call)
	{"op": "upsert", "path": "/input/authorization/claims", "value": {"azp": "mcp"}} in m
}

test_tool_argument_values_masked_names_kept if {
	m := log.mask with input as event(call)
	{"op": "upsert", "path": "/input/mcp/tool/arguments", "value": {"query": "**masked**", "limit": "**masked**"}} in m
}

test_session_id_erased if {
	m := log.mask with input as event(call)
	"/input/mcp/session_id" in m
}

prompt := {
	"version": 1,
	"mcp": {"method": "prompts/get", "prompt": {"name": "summary", "arguments": {"topic": "salaries"}}},
	"identity": {"authenticated": false},
}

test_prompt_argument_values_masked if {
	m := log.mask with input as event(prompt)
	{"op": "upsert", "path": "/input/mcp/prompt/arguments", "value": {"topic": "**masked**"}} in m
}

completion := {
	"version": 1,
	"mcp": {
		"method": "completion/complete",
		"completion": {"argument": {"name": "city", "value": "Par"}, "context": {"arguments": {"country": "France"}}},
	},
	"identity": {"authenticated": false},
}

test_completion_value_and_context_masked if {
	m := log.mask with input as event(completion)
	{"op": "upsert", "path": "/input/mcp/completion/argument/value", "value": "**masked**"} in m
	{"op": "upsert", "path": "/input/mcp/completion/context/arguments", "value": {"country": "**masked**"}} in m
}

# A request without the parts: nothing to mask, nothing invented.
test_nothing_to_mask if {
	m := log.mask with input as event({"version": 1, "mcp": {"method": "tools/list"}, "identity": {"authenticated": false}})
	count(m) == 0
}
