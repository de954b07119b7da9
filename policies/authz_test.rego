package mcp.authz_test

import data.mcp.authz
import data.mcpguard

# Callers, shaped like the input document the server builds.

user(roles) := {
	"version": 1,
	"identity": {
		"authenticated": true, "kind": "user",
		"issuer": "https://login.microsoftonline.com/t/v2.0", "tenant_id": "t",
		"object_id": "o", "subject": "s", "app_id": "client",
		"name": "Ada", "email": "ada@example.com", "preferred_username": "ada@example.com",
		"scopes": ["read", "write"], "app_roles": [], "groups": [], "claims": {},
	},
	"authorization": {
		"source": "keycloak", "roles": roles, "realm_roles": roles,
		"client_roles": {}, "claims": {},
	},
	"request": {"time_ns": weekday_morning_ns, "remote_addr": "127.0.0.1", "transport": "http", "host": "localhost"},
}

# An app-only caller (client credentials / managed identity): no scopes; its
# Entra app roles are its authorization roles (ROLE_SOURCE=token).
app(roles) := {
	"version": 1,
	"identity": {
		"authenticated": true, "kind": "app", "tenant_id": "t", "object_id": "sp",
		"app_id": "agent", "scopes": [], "app_roles": roles, "groups": [], "claims": {},
	},
	"authorization": {"source": "token", "roles": roles, "realm_roles": [], "client_roles": {}, "claims": {}},
	"request": {"time_ns": weekday_morning_ns, "transport": "http"},
}

anonymous := {
	"version": 1,
	"identity": {"authenticated": false, "kind": "anonymous"},
	"authorization": {"source": "none", "roles": [], "realm_roles": [], "client_roles": {}},
	"request": {"time_ns": weekday_morning_ns, "transport": "stdio"},
}

writer := object.union(user([]), {"authorization": {"client_roles": {"api": ["writer"]}}})

everything := object.union(user(["data_reader", "finance", "executive", "admin", "supervisor"]), {"authorization": {"client_roles": {"api": ["writer"]}}})

# Requests.

with_mcp(who, mcp) := object.union(who, {"mcp": object.union({"session_id": "sess", "protocol_version": "2025-11-25", "client": {"name": "test", "version": "1"}}, mcp)})

call(who, tool) := with_mcp(who, {"method": "tools/call", "tool": {
	"name": tool,
	"arguments": {},
	"annotations": object.get(tool_annotations, tool, default_annotations),
}})

# The registered tools' annotations as the server puts them in the input (the
# protocol's defaults applied; `mcpguard policy catalog`, test/policy/
# catalog.json, which a Go test keeps this table equal to), so that a veto on
# annotations ("destructive tools only for admins") meets in these tests what
# it meets in the server.
tool_annotations := {
	"admin_operation": {"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false, "openWorldHint": false},
	"approve_budget": {"readOnlyHint": false, "destructiveHint": false, "idempotentHint": false, "openWorldHint": false},
	"get_current_user": {"readOnlyHint": true, "destructiveHint": true, "idempotentHint": true, "openWorldHint": false},
	"read_critical_data": {"readOnlyHint": true, "destructiveHint": true, "idempotentHint": false, "openWorldHint": false},
	"write_api_data": {"readOnlyHint": false, "destructiveHint": false, "idempotentHint": false, "openWorldHint": false},
}

# A tool the server does not register: the protocol's defaults.
default_annotations := {"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false, "openWorldHint": true}

# Wed 2026-03-04 10:00 UTC: inside any working-hours window, so that a time
# rule does not break the tests of other rules.
weekday_morning_ns := 1772618400000000000

read(who, uri) := with_mcp(who, {"method": "resources/read", "resource": {"uri": uri}})

subscribe(who, uri) := with_mcp(who, {"method": "resources/subscribe", "resource": {"uri": uri}})

prompt(who, name) := with_mcp(who, {"method": "prompts/get", "prompt": {"name": name, "arguments": {}}})

method(who, m) := with_mcp(who, {"method": m})

# tools/call, against policies/data.json.

test_get_current_user_any_authenticated if {
	mcpguard.allow with input as call(user([]), "get_current_user")
	mcpguard.allow with input as call(app([]), "get_current_user")
}

test_read_critical_data if {
	mcpguard.allow with input as call(user(["data_reader"]), "read_critical_data")
	not mcpguard.allow with input as call(user(["finance"]), "read_critical_data")
	not mcpguard.allow with input as call(user([]), "read_critical_data")
}

test_approve_budget_needs_both_roles if {
	mcpguard.allow with input as call(user(["finance", "executive"]), "approve_budget")
	not mcpguard.allow with input as call(user(["finance"]), "approve_budget")
	not mcpguard.allow with input as call(user(["executive"]), "approve_budget")
}

test_admin_operation_either_role if {
	mcpguard.allow with input as call(user(["admin"]), "admin_operation")
	mcpguard.allow with input as call(user(["supervisor"]), "admin_operation")
	not mcpguard.allow with input as call(user(["data_reader"]), "admin_operation")
}

test_write_api_data_needs_client_role if {
	mcpguard.allow with input as call(writer, "write_api_data")
	not mcpguard.allow with input as call(user(["writer"]), "write_api_data")
	not mcpguard.allow with input as call(object.union(user([]), {"authorization": {"client_roles": {"other": ["writer"]}}}), "write_api_data")
}

test_app_only_caller_uses_app_roles if {
	mcpguard.allow with input as call(app(["data_reader"]), "read_critical_data")
	mcpguard.allow with input as call(app(["finance", "executive"]), "approve_budget")
	not mcpguard.allow with input as call(app(["finance"]), "approve_budget")
	not mcpguard.allow with input as call(app(["data_reader"]), "admin_operation")
}

test_unknown_tool_denied if {
	not mcpguard.allow with input as call(everything, "drop_database")
	mcpguard.decision.reasons == [`tool "drop_database" is not in the policy catalog`] with input as call(everything, "drop_database")
}

test_tools_call_without_name_denied if {
	req := with_mcp(everything, {"method": "tools/call", "tool": {"arguments": {}}})
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["tools/call request names no tool"] with input as req
}

# Anonymous callers get nothing, not even housekeeping.

test_anonymous_denied_everything if {
	every req in [
		method(anonymous, "initialize"),
		method(anonymous, "ping"),
		method(anonymous, "tools/list"),
		call(anonymous, "get_current_user"),
		read(anonymous, "data://server-info"),
		prompt(anonymous, "summarize_access"),
	] {
		not mcpguard.allow with input as req
		mcpguard.decision.reasons == ["caller is not authenticated"] with input as req
	}
}

test_anonymous_even_with_roles_denied if {
	not mcpguard.allow with input as call(object.union(anonymous, {"authorization": {"roles": ["data_reader"]}}), "read_critical_data")
}

test_missing_identity_denied if {
	not mcpguard.allow with input as {"version": 1, "mcp": {"method": "ping"}}
}

test_contradictory_identity_denied if {
	req := method(object.union(anonymous, {"identity": {"authenticated": true}}), "ping")
	not mcpguard.allow with input as req
	mcpguard.decision.details == [{
		"id": "mcpguard.identity",
		"message": "request denied by policy",
		"detail": "identity is marked authenticated but its kind is anonymous",
	}] with input as req
}

# Methods.

test_housekeeping_allowed if {
	every m in [
		"initialize", "server/discover",
		"notifications/initialized", "notifications/cancelled",
		"notifications/progress", "notifications/roots/list_changed", "ping",
		"logging/setLevel", "resources/unsubscribe",
		"tools/list", "resources/list", "resources/templates/list", "prompts/list",
	] {
		mcpguard.allow with input as method(user([]), m)
		mcpguard.allow with input as method(app([]), m)
		mcpguard.decision.reasons == [] with input as method(user([]), m)
	}
}

# subscriptions/listen: the resource subscriptions it carries are decided
# like resources/subscribe; list-change notifications need no role.

listen(who, uris) := with_mcp(who, {"method": "subscriptions/listen", "subscriptions": {
	"resource_uris": uris, "tools_list_changed": true,
	"prompts_list_changed": false, "resources_list_changed": false,
}})

test_listen_without_resources_allowed if {
	mcpguard.allow with input as listen(user([]), [])
	mcpguard.allow with input as listen(app([]), [])
}

test_listen_to_allowed_resources if {
	mcpguard.allow with input as listen(user(["data_reader"]), ["data://items/7", "data://server-info"])
}

test_listen_to_a_forbidden_resource_denied if {
	req := listen(user([]), ["data://server-info", "data://items/7"])
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["resource \"data://items/7\" (template \"data://items/{item_id}\") requires role \"data_reader\""] with input as req
}

test_listen_without_subscriptions_denied if {
	req := method(user(["data_reader"]), "subscriptions/listen")
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["subscriptions/listen request does not list its resource subscriptions"] with input as req
}

test_listen_anonymous_denied if {
	not mcpguard.allow with input as listen(anonymous, [])
}

# completion/complete: decided like a use of its ref.

complete(who, ref) := with_mcp(who, {"method": "completion/complete", "completion": {"ref": ref, "argument": {"name": "a", "value": "v"}}})

test_complete_prompt if {
	mcpguard.allow with input as complete(user([]), {"type": "ref/prompt", "name": "summarize_access"})
	req := complete(user([]), {"type": "ref/prompt", "name": "hidden"})
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["prompt \"hidden\" is not in the policy catalog"] with input as req
}

test_complete_resource_template if {
	ref := {"type": "ref/resource", "uri": "data://items/{item_id}"}
	mcpguard.allow with input as complete(user(["data_reader"]), ref)
	not mcpguard.allow with input as complete(user([]), ref)
	mcpguard.decision.reasons == ["resource template \"data://items/{item_id}\" requires role \"data_reader\""] with input as complete(user([]), ref)
}

test_complete_resource if {
	mcpguard.allow with input as complete(user(["data_reader"]), {"type": "ref/resource", "uri": "data://items/3"})
	not mcpguard.allow with input as complete(user([]), {"type": "ref/resource", "uri": "data://items/3"})
	mcpguard.decision.reasons == ["resource \"data://items/3\" (template \"data://items/{item_id}\") requires role \"data_reader\""] with input as complete(user([]), {"type": "ref/resource", "uri": "data://items/3"})
	mcpguard.decision.reasons == ["resource \"nope://x\" is not in the policy catalog"] with input as complete(user([]), {"type": "ref/resource", "uri": "nope://x"})
}

test_complete_without_ref_denied if {
	req := method(everything, "completion/complete")
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["completion/complete request names neither a prompt nor a resource"] with input as req
	not mcpguard.allow with input as complete(everything, {"type": "ref/tool", "name": "x"})
}

test_unknown_method_denied if {
	every m in ["foo/bar", "sampling/createMessage", "elicitation/create", "roots/list", "tools/Call", ""] {
		not mcpguard.allow with input as method(everything, m)
		mcpguard.decision.reasons == [sprintf("method %q is not allowed", [m])] with input as method(everything, m)
	}
}

test_missing_method_denied if {
	not mcpguard.allow with input as object.union(everything, {"mcp": {}})
	mcpguard.decision.reasons == ["request has no MCP method"] with input as object.union(everything, {"mcp": {}})
}

test_other_input_version_denied if {
	req := object.union(call(everything, "get_current_user"), {"version": 2})
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["input document version 2 is not supported (these policies read version 1)"] with input as req
}

test_missing_input_version_denied if {
	req := object.remove(method(everything, "ping"), ["version"])
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["input document version null is not supported (these policies read version 1)"] with input as req
}

# resources/read: exact rows and template globs.

test_resource_exact if {
	mcpguard.allow with input as read(user([]), "data://server-info")
	mcpguard.allow with input as read(app([]), "data://server-info")
}

test_resource_template if {
	mcpguard.allow with input as read(user(["data_reader"]), "data://items/42")
	mcpguard.allow with input as read(app(["data_reader"]), "data://items/abc-1")
	not mcpguard.allow with input as read(user([]), "data://items/42")
	mcpguard.decision.reasons == [`resource "data://items/42" (template "data://items/{item_id}") requires role "data_reader"`] with input as read(user([]), "data://items/42")
}

test_resource_template_star_stays_in_segment if {
	every uri in ["data://items/1/secret", "data://itemsX", "data://items", "data://itemsX/1", "data://other/1", "file:///etc/passwd"] {
		not mcpguard.allow with input as read(everything, uri)
		mcpguard.decision.reasons == [sprintf("resource %q is not in the policy catalog", [uri])] with input as read(everything, uri)
	}
}

test_resource_read_without_uri_denied if {
	req := with_mcp(everything, {"method": "resources/read", "resource": {}})
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["resources/read request names no resource URI"] with input as req
}

test_resource_exact_row_decides_alone if {
	catalog := {
		"resources": {"data://items/admin": {"require_role": "admin"}},
		"resource_templates": {"data://items/{id}": {"match": "data://items/*", "require_role": "data_reader"}},
	}
	not mcpguard.allow with input as read(user(["data_reader"]), "data://items/admin") with data.mcp.catalog as catalog
	mcpguard.allow with input as read(user(["admin"]), "data://items/admin") with data.mcp.catalog as catalog
	mcpguard.allow with input as read(user(["data_reader"]), "data://items/7") with data.mcp.catalog as catalog
	mcpguard.decision.reasons == [`resource "data://items/admin" requires role "admin"`] with input as read(user(["data_reader"]), "data://items/admin") with data.mcp.catalog as catalog
}

test_resource_exact_row_of_any_value_decides_alone if {
	catalog := {
		"resources": {"data://items/x": false},
		"resource_templates": {"data://items/{id}": {"match": "data://items/*", "allow_authenticated": true}},
	}
	not mcpguard.allow with input as read(everything, "data://items/x") with data.mcp.catalog as catalog
	mcpguard.decision.reasons == [`resource "data://items/x" has a malformed policy row (the row is not an object)`] with input as read(everything, "data://items/x") with data.mcp.catalog as catalog
}

test_resource_any_matching_template_allows if {
	catalog := {"resource_templates": {
		"data://items/{id}": {"match": "data://items/*", "require_role": "data_reader"},
		"data://{kind}/{id}": {"match": "data://*/*", "require_role": "admin"},
	}}
	mcpguard.allow with input as read(user(["data_reader"]), "data://items/1") with data.mcp.catalog as catalog
	mcpguard.allow with input as read(user(["admin"]), "data://items/1") with data.mcp.catalog as catalog
	not mcpguard.allow with input as read(user(["data_reader"]), "data://orders/1") with data.mcp.catalog as catalog
	mcpguard.decision.reasons == [
		`resource "data://items/1" (template "data://items/{id}") requires role "data_reader"`,
		`resource "data://items/1" (template "data://{kind}/{id}") requires role "admin"`,
	] with input as read(user([]), "data://items/1") with data.mcp.catalog as catalog
}

test_resource_double_star_crosses_segments if {
	catalog := {"resource_templates": {"files://{+path}": {"match": "files://**", "require_role": "data_reader"}}}
	mcpguard.allow with input as read(user(["data_reader"]), "files://a/b/c.txt") with data.mcp.catalog as catalog
}

# resources/subscribe: only what the caller may read. unsubscribe: always.

test_subscribe_follows_read if {
	mcpguard.allow with input as subscribe(user(["data_reader"]), "data://items/42")
	not mcpguard.allow with input as subscribe(user([]), "data://items/42")
	mcpguard.decision.reasons == [`resource "data://items/42" (template "data://items/{item_id}") requires role "data_reader"`] with input as subscribe(user([]), "data://items/42")
	mcpguard.allow with input as with_mcp(user([]), {"method": "resources/unsubscribe", "resource": {"uri": "data://items/42"}})
}

test_subscribe_without_uri_denied if {
	req := method(everything, "resources/subscribe")
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["resources/subscribe request names no resource URI"] with input as req
}

# prompts/get.

test_prompt if {
	mcpguard.allow with input as prompt(user([]), "summarize_access")
	mcpguard.allow with input as prompt(app([]), "summarize_access")
	not mcpguard.allow with input as prompt(everything, "leak_secrets")
	mcpguard.decision.reasons == [`prompt "leak_secrets" is not in the policy catalog`] with input as prompt(everything, "leak_secrets")
}

test_prompt_role if {
	catalog := {"prompts": {"p": {"require_role": "a"}}}
	mcpguard.allow with input as prompt(user(["a"]), "p") with data.mcp.catalog as catalog
	mcpguard.decision.reasons == [`prompt "p" requires role "a"`] with input as prompt(user([]), "p") with data.mcp.catalog as catalog
}

test_prompt_without_name_denied if {
	req := with_mcp(everything, {"method": "prompts/get", "prompt": {}})
	not mcpguard.allow with input as req
	mcpguard.decision.reasons == ["prompts/get request names no prompt"] with input as req
}

# Rows in the catalog: scopes, apps, malformed rows, an empty catalog.

test_row_with_scopes_and_deny_apps if {
	catalog := {"tools": {
		"t_scoped": {"require_role": "a", "require_scopes": ["write"]},
		"t_users": {"allow_authenticated": true, "deny_apps": true},
	}}
	mcpguard.allow with input as call(user(["a"]), "t_scoped") with data.mcp.catalog as catalog
	not mcpguard.allow with input as call(app(["a"]), "t_scoped") with data.mcp.catalog as catalog
	mcpguard.allow with input as call(user([]), "t_users") with data.mcp.catalog as catalog
	not mcpguard.allow with input as call(app([]), "t_users") with data.mcp.catalog as catalog
	mcpguard.decision.reasons == [`tool "t_users" does not admit app-only callers`] with input as call(app([]), "t_users") with data.mcp.catalog as catalog
}

test_malformed_rows_deny if {
	catalog := {"tools": {
		"two_kinds": {"require_role": "a", "allow_authenticated": true},
		"typo": {"require_role": "a", "require_scope": ["write"]},
		"empty": {},
		"not_object": true,
		"null_row": null,
	}}
	every tool in ["two_kinds", "typo", "empty", "not_object", "null_row"] {
		not mcpguard.allow with input as call(everything, tool) with data.mcp.catalog as catalog
		count(mcpguard.decision.reasons) > 0 with input as call(everything, tool) with data.mcp.catalog as catalog
	}
	mcpguard.decision.reasons == [`tool "typo" has a malformed policy row (unknown keys ["require_scope"])`] with input as call(everything, "typo") with data.mcp.catalog as catalog
}

# The engine fails an evaluation on any builtin error (a type error denies),
# so a malformed row must not make the rules over the whole catalog err: the
# other rows keep deciding, and lint still names the bad one.
test_malformed_row_leaves_others_deciding if {
	catalog := {
		"tools": {"good": {"allow_authenticated": true}, "bool_row": true, "null_row": null, "number_row": 5},
		"resources": {"data://bool": false},
		"resource_templates": {
			"bad_match": {"match": 5, "allow_authenticated": true},
			"not_object": "data://items/*",
			"good": {"match": "data://items/*", "allow_authenticated": true},
		},
		"prompts": {"p": []},
	}
	candidates := {"tools": [{"name": "good"}, {"name": "bool_row"}, {"name": "null_row"}, {"name": "number_row"}]}
	mcpguard.visible == {"good"} with input as with_mcp(user([]), {"method": "tools/list", "candidates": candidates}) with data.mcp.catalog as catalog
	mcpguard.allow with input as read(user([]), "data://items/1") with data.mcp.catalog as catalog
	mcpguard.decision.reasons == [`resource "data://other" is not in the policy catalog`] with input as read(user([]), "data://other") with data.mcp.catalog as catalog
	authz.catalog_errors == {
		`catalog.tools["bool_row"]: the row is not an object`,
		`catalog.tools["null_row"]: the row is not an object`,
		`catalog.tools["number_row"]: the row is not an object`,
		`catalog.resources["data://bool"]: the row is not an object`,
		`catalog.resource_templates["bad_match"]: match has the wrong type`,
		`catalog.resource_templates["bad_match"]: match must be a glob string`,
		`catalog.resource_templates["not_object"]: the row is not an object`,
		`catalog.prompts["p"]: the row is not an object`,
	} with data.mcp.catalog as catalog
}

test_empty_catalog_denies if {
	not mcpguard.allow with input as call(everything, "get_current_user") with data.mcp.catalog as {}
	not mcpguard.allow with input as read(everything, "data://server-info") with data.mcp.catalog as {}
	not mcpguard.allow with input as prompt(everything, "summarize_access") with data.mcp.catalog as {}
	mcpguard.decision.reasons == [`tool "get_current_user" is not in the policy catalog`] with input as call(everything, "get_current_user") with data.mcp.catalog as {}
	mcpguard.decision.reasons == [`resource "data://server-info" is not in the policy catalog`] with input as read(everything, "data://server-info") with data.mcp.catalog as {}
}

# Vetoes override the catalog.

test_veto_denies_an_allowed_call if {
	req := call(everything, "read_critical_data")
	mcpguard.allow with input as req
	not mcpguard.allow with input as req with authz.deny as {"no reading today"}
	mcpguard.decision.reasons == ["no reading today"] with input as req with authz.deny as {"no reading today"}
	not mcpguard.allow with input as method(everything, "ping") with authz.deny as {"x"}
}

# Reasons: sorted, empty on allow, never empty on deny, built per missing piece.

test_reasons_for_approve_budget if {
	msg := `tool "approve_budget" requires all of roles ["executive","finance"]`
	mcpguard.decision == {
		"allow": false,
		"reasons": [msg],
		"details": [{"id": "catalog.tools", "message": msg, "detail": msg}],
		"obligations": [],
	} with input as call(user(["finance"]), "approve_budget")
}

test_reasons_empty_on_allow if {
	mcpguard.decision == {"allow": true, "reasons": [], "details": [], "obligations": []} with input as call(user(["finance", "executive"]), "approve_budget")
}

test_reasons_sorted if {
	catalog := {"tools": {"t": {"require_role": "z", "require_scopes": ["write"]}}}
	reasons := mcpguard.decision.reasons with input as call(app([]), "t") with data.mcp.catalog as catalog
	reasons == [`tool "t" requires role "z"`, `tool "t" requires scopes ["write"] on a delegated user token`]
	reasons == sort(reasons)
}

test_reasons_fallback if {
	mcpguard.decision.reasons == ["request denied by policy"] with input as call(everything, "x") with authz.denial_reasons as set()
}

# decision.allow always equals allow; reasons are empty exactly on allow.

test_decision_agrees_with_allow if {
	every req in sample_requests {
		decision_consistent with input as req
	}
}

decision_consistent if {
	mcpguard.allow
	mcpguard.decision.allow == true
	mcpguard.decision.reasons == []
	mcpguard.decision.obligations == []
}

decision_consistent if {
	not mcpguard.allow
	mcpguard.decision.allow == false
	count(mcpguard.decision.reasons) > 0
	mcpguard.decision.obligations == []
}

sample_callers := [
	anonymous, user([]), user(["data_reader"]), user(["finance"]), user(["finance", "executive"]),
	user(["admin"]), user(["supervisor"]), writer, everything, app([]), app(["data_reader"]),
	app(["finance", "executive", "admin"]),
]

sample_requests := [req |
	some who in sample_callers
	some req in array.concat(
		[call(who, tool) | some tool in ["get_current_user", "read_critical_data", "approve_budget", "admin_operation", "write_api_data", "nope"]],
		array.concat(
			[read(who, uri) | some uri in ["data://server-info", "data://items/1", "data://items/1/secret", "data://itemsX", "x"]],
			array.concat(
				[prompt(who, name) | some name in ["summarize_access", "nope"]],
				[method(who, m) | some m in ["initialize", "ping", "tools/list", "foo/bar", "sampling/createMessage"]],
			),
		),
	)
]

test_sample_requests_cover_both_outcomes if {
	some req in sample_requests
	mcpguard.allow with input as req
	some other in sample_requests
	not mcpguard.allow with input as other
}

# visible: the same rules as the calls, for each list method.

all_candidates := {
	"tools": [
		{"name": "get_current_user", "annotations": {}},
		{"name": "read_critical_data", "annotations": {"readOnlyHint": true}},
		{"name": "approve_budget", "annotations": {}},
		{"name": "admin_operation", "annotations": {}},
		{"name": "write_api_data", "annotations": {}},
		{"name": "unlisted_tool", "annotations": {}},
	],
	"resources": [{"uri": "data://server-info"}, {"uri": "data://items/1"}, {"uri": "data://items/1/secret"}, {"uri": "data://other"}],
	"resource_templates": [{"uriTemplate": "data://items/{item_id}"}, {"uriTemplate": "data://unknown/{id}"}],
	"prompts": [{"name": "summarize_access"}, {"name": "unlisted_prompt"}],
}

list(who, m) := with_mcp(who, {"method": m, "candidates": all_candidates})

test_visible_tools if {
	mcpguard.visible == {"get_current_user", "read_critical_data"} with input as list(user(["data_reader"]), "tools/list")
	mcpguard.visible == {"get_current_user", "approve_budget"} with input as list(app(["finance", "executive"]), "tools/list")
	mcpguard.visible == {"get_current_user", "read_critical_data", "approve_budget", "admin_operation", "write_api_data"} with input as list(everything, "tools/list")
}

test_visible_resources if {
	mcpguard.visible == {"data://server-info"} with input as list(user([]), "resources/list")
	mcpguard.visible == {"data://server-info", "data://items/1"} with input as list(user(["data_reader"]), "resources/list")
}

test_visible_resource_templates if {
	mcpguard.visible == set() with input as list(user([]), "resources/templates/list")
	mcpguard.visible == {"data://items/{item_id}"} with input as list(app(["data_reader"]), "resources/templates/list")
}

test_visible_prompts if {
	mcpguard.visible == {"summarize_access"} with input as list(user([]), "prompts/list")
}

test_visible_empty_for_anonymous if {
	every m in ["tools/list", "resources/list", "resources/templates/list", "prompts/list"] {
		mcpguard.visible == set() with input as list(anonymous, m)
	}
}

test_visible_empty_for_other_methods if {
	mcpguard.visible == set() with input as object.union(call(everything, "get_current_user"), {"mcp": {"candidates": all_candidates}})
}

test_visible_empty_when_vetoed if {
	mcpguard.visible == set() with input as list(everything, "tools/list") with authz.deny as {"x"}
}

test_visible_matches_calls if {
	every who in sample_callers {
		every candidate in all_candidates.tools {
			visible_iff_allowed(candidate.name) with input as list(who, "tools/list")
		}
	}
}

# A tool is listed exactly when calling it would be allowed.
visible_iff_allowed(name) if {
	name in mcpguard.visible
	mcpguard.allow with input as call_of(name)
}

visible_iff_allowed(name) if {
	not name in mcpguard.visible
	not mcpguard.allow with input as call_of(name)
}

call_of(name) := object.union(object.remove(input, ["mcp"]), {"mcp": {"method": "tools/call", "tool": {"name": name}}})

# The shipped catalog is clean, and lint catches what it should.

test_shipped_catalog_has_no_errors if count(authz.catalog_errors) == 0

test_catalog_errors if {
	authz.catalog_errors == {
		`catalog.tools["a"]: unknown keys ["require_rolez"]`,
		`catalog.tools["b"]: match is only for resource_templates`,
		`catalog.resource_templates["c"]: match must be a glob string`,
		`catalog.prompts["d"]: require_role has the wrong type`,
		`catalog has unknown section "tool"`,
	} with data.mcp.catalog as {
		"tools": {
			"a": {"require_role": "x", "require_rolez": "y"},
			"b": {"allow_authenticated": true, "match": "x"},
		},
		"resource_templates": {"c": {"require_role": "x"}},
		"prompts": {"d": {"require_role": 5}},
		"tool": {},
	}
}

test_complete_template_whose_glob_misses_its_own_text if {
	catalog := {"resource_templates": {"db://{table}": {"match": "db://t_*", "require_role": "dba"}}}
	ref := {"type": "ref/resource", "uri": "db://{table}"}
	mcpguard.allow with input as complete(user(["dba"]), ref) with data.mcp.catalog as catalog
	not mcpguard.allow with input as complete(user([]), ref) with data.mcp.catalog as catalog
}
