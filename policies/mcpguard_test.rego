# The decision module's guards and lists, with the rules of
# team_rules_test.rego: no rule in mcp.authz passes what a guard refuses, and
# a list shows exactly what the caller could call.
package mcpguard_test

import data.mcp.authz
import data.mcp.authz_test
import data.mcpguard

team(who) := object.union(who, {"identity": {"object_id": "team-rules"}})

# Authentication: only a policy that says so admits callers without a token,
# and only with true.
test_unauthenticated_admitted_only_when_the_policy_says_so if {
	req := authz_test.method(authz_test.anonymous, "ping")
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["caller is not authenticated"] with input as req
	mcpguard.allow with input as req with authz.allow_unauthenticated as true
	not mcpguard.allow with input as req with authz.allow_unauthenticated as "true"
	not mcpguard.allow with input as object.remove(req, ["identity"]) with authz.allow_unauthenticated as true
}

# The widest allow a team could write opens no method with a target, and
# nothing to a caller the guards refuse.
test_allow_everything_opens_no_target if {
	not mcpguard.allow with input as authz_test.call(authz_test.user([]), "read_critical_data") with authz.allow as true
	not mcpguard.allow with input as authz_test.read(authz_test.user([]), "data://items/1") with authz.allow as true
	not mcpguard.allow with input as authz_test.prompt(authz_test.user([]), "nope") with authz.allow as true
	not mcpguard.allow with input as authz_test.method(authz_test.anonymous, "ping") with authz.allow as true
	mcpguard.allow with input as authz_test.method(authz_test.user([]), "foo/bar") with authz.allow as true
	not mcpguard.allow with input as authz_test.method(authz_test.user([]), "foo/bar") with authz.allow as "yes"

	# A request that names no method is no method without a target.
	not mcpguard.allow with input as object.remove(authz_test.user([]), ["mcp"]) with authz.allow as true
	not mcpguard.allow with input as authz_test.with_mcp(authz_test.user([]), {"method": 7}) with authz.allow as true
}

# A deny that is not a set is a veto, not nothing.
test_deny_not_a_set_vetoes if {
	req := authz_test.method(authz_test.user([]), "ping")
	mcpguard.allow with input as req
	not mcpguard.allow with input as req with authz.deny as true
	mcpguard.decision.details == [{"id": "mcpguard.deny_shape", "message": "request denied by policy", "detail": "mcp.authz.deny is not a set"}] with input as req with authz.deny as {"a": 1}
}

tools := [
	{"name": "read_critical_data", "annotations": {"readOnlyHint": true, "destructiveHint": false}},
	{"name": "approve_budget", "annotations": {"readOnlyHint": false, "destructiveHint": false}},
	{"name": "admin_operation", "annotations": {"readOnlyHint": false, "destructiveHint": true}},
	{"name": "status_check", "annotations": {"readOnlyHint": true, "destructiveHint": false}},
	{"name": "get_current_user", "annotations": {"readOnlyHint": true, "destructiveHint": false}},
]

candidates := {
	"tools": tools,
	"prompts": [{"name": "summarize_access"}, {"name": "team_prompt"}, {"name": "other"}],
	"resources": [{"uri": "data://server-info"}, {"uri": "team://a"}, {"uri": "data://items/1"}],
	"resource_templates": [{"uriTemplate": "data://items/{item_id}"}, {"uriTemplate": "team://{id}"}],
}

list(who, m) := authz_test.with_mcp(who, {"method": m, "candidates": candidates})

callers := [
	authz_test.user(["data_reader", "finance", "executive", "supervisor"]),
	authz_test.user(["data_reader", "finance", "executive", "admin"]),
	authz_test.app(["data_reader"]),
	authz_test.app(["admin"]),
	authz_test.app(["auditor"]),
]

# Under the team's rules a tool is listed exactly when a call to it with empty
# arguments is allowed; and the samples list some tools and hide others.
listed_and_called := [[c, t.name, t.name in shown, allowed] |
	some c in callers
	who := team(c)
	shown := mcpguard.visible with input as list(who, "tools/list")
	some t in tools
	called := authz_test.with_mcp(who, {"method": "tools/call", "tool": {"name": t.name, "arguments": {}, "annotations": t.annotations}})
	allowed := mcpguard.allow with input as called
]

test_tools_listed_as_called if {
	count(listed_and_called) == count(callers) * count(tools)
	every x in listed_and_called {
		x[2] == x[3]
	}
	mcpguard.visible == {"read_critical_data", "approve_budget", "get_current_user"} with input as list(team(callers[0]), "tools/list")
	mcpguard.visible == {"read_critical_data", "approve_budget", "admin_operation", "get_current_user"} with input as list(team(callers[1]), "tools/list")
	mcpguard.visible == {"read_critical_data", "status_check", "get_current_user"} with input as list(team(callers[2]), "tools/list")
	mcpguard.visible == {"get_current_user"} with input as list(team(callers[4]), "tools/list")
}

# The argument veto refuses the call it is about, and hides nothing.
budget(amount) := authz_test.with_mcp(team(authz_test.user(["finance", "executive"])), {"method": "tools/call", "tool": {
	"name": "approve_budget",
	"arguments": {"amount": amount},
	"annotations": tools[1].annotations,
}})

test_argument_veto if {
	mcpguard.allow with input as budget(500)
	not mcpguard.allow with input as budget(20000)
	mcpguard.decision.reasons == ["approve_budget over 10,000 needs the cfo role"] with input as budget(20000)
}

test_other_lists_as_called if {
	who := team(authz_test.user(["data_reader"]))
	mcpguard.visible == {"team_prompt"} with input as list(who, "prompts/list")
	mcpguard.visible == {"team://a", "data://items/1"} with input as list(who, "resources/list")
	mcpguard.visible == {"team://{id}"} with input as list(who, "resources/templates/list")
	not mcpguard.allow with input as authz_test.prompt(who, "summarize_access")
	mcpguard.allow with input as authz_test.prompt(who, "team_prompt")
	not mcpguard.allow with input as authz_test.read(who, "data://server-info")
	mcpguard.allow with input as authz_test.read(who, "team://a")
	not mcpguard.allow with input as authz_test.complete(who, {"type": "ref/resource", "uri": "data://items/{item_id}"})
	mcpguard.allow with input as authz_test.complete(who, {"type": "ref/resource", "uri": "team://{id}"})

	# Without the team's rules (another caller) the catalog decides alone.
	other := authz_test.user(["data_reader"])
	mcpguard.visible == {"summarize_access"} with input as list(other, "prompts/list")
	mcpguard.visible == {"data://server-info", "data://items/1"} with input as list(other, "resources/list")
	mcpguard.visible == {"data://items/{item_id}"} with input as list(other, "resources/templates/list")
}

# A veto on the list request itself hides everything.
test_list_vetoed if {
	mcpguard.visible == set() with input as list(authz_test.everything, "prompts/list") with authz.deny as {"no"}
}

# The folder's explanation is used only when it is a set; otherwise the
# generic reason stands (sort of a string would fail the evaluation).
test_denial_reasons_not_a_set if {
	req := authz_test.call(authz_test.user([]), "read_critical_data")
	mcpguard.decision.reasons == ["request denied by policy"] with input as req with authz.denial_reasons as "why"
	mcpguard.decision.reasons == ["why"] with input as req with authz.denial_reasons as {"why"}
}

# Reasons as data: a veto may be a string or a record; its message is what a
# caller may see, its detail what the log keeps. A reason of another shape is
# reported as such, never dropped.
test_reasons_as_records if {
	req := authz_test.method(authz_test.user([]), "ping")
	vetoes := {
		"plain",
		{"id": "team.budget", "message": "needs approval", "detail": "amount 20000 over 10000 without cfo"},
		{"message": "closed today"},
		{"message": 7},
		{"message": 8, "detail": "a number for a message"},
		{"id": 7, "message": "bad id"},
		{"message": "bad detail", "detail": ["x"]},
	}
	d := mcpguard.decision with input as req with authz.deny as vetoes
	d.allow == false
	d.details == sort(d.details)
	{x | some x in d.details} == {
		{"detail": "amount 20000 over 10000 without cfo", "id": "team.budget", "message": "needs approval"},
		{"detail": "closed today", "id": "", "message": "closed today"},
		{"detail": "plain", "id": "", "message": "plain"},
		{"detail": `a reason is neither a string nor {"message": string}: {"detail": ["x"], "message": "bad detail"}`, "id": "mcpguard.reason_shape", "message": "request denied by policy"},
		{"detail": `a reason is neither a string nor {"message": string}: {"id": 7, "message": "bad id"}`, "id": "mcpguard.reason_shape", "message": "request denied by policy"},
		{"detail": `a reason is neither a string nor {"message": string}: {"message": 7}`, "id": "mcpguard.reason_shape", "message": "request denied by policy"},
		{"detail": `a reason is neither a string nor {"message": string}: {"detail": "a number for a message", "message": 8}`, "id": "mcpguard.reason_shape", "message": "request denied by policy"},
	}
	d.reasons == ["closed today", "needs approval", "plain", "request denied by policy"]
}

# What tool_allowed opens is shown only in a tools/list that is itself
# allowed, and in no other method's answer.
test_extension_listed_only_in_allowed_lists if {
	who := team(authz_test.app([]))
	"status_check" in mcpguard.visible with input as list(who, "tools/list")
	mcpguard.visible == set() with input as object.union(list(who, "tools/list"), {"version": 2})
	not "status_check" in mcpguard.visible with input as list(who, "prompts/list")
	mcpguard.visible == set() with input as authz_test.with_mcp(who, {"method": "tools/call", "tool": {"name": "status_check"}, "candidates": candidates})
}
