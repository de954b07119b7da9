package mcp.authz_test

import data.mcp.authz
import data.mcpguard

# Each allow body, reason and list rule reads only the part of the input its
# method names. The server fills in only that part, but the policy must not
# rely on it: a document carrying another method's fields (a future server,
# `mcpguard policy eval`, a hand-made input) is decided by its method alone.

# The target of every guarded method, each allowed for user([]).
allowed_stowaways := {
	"tool": {"name": "get_current_user", "arguments": {}},
	"resource": {"uri": "data://server-info"},
	"prompt": {"name": "summarize_access", "arguments": {}},
	"subscriptions": {"resource_uris": ["data://server-info"]},
	"completion": {"ref": {"type": "ref/prompt", "name": "summarize_access", "uri": "data://server-info"}},
}

test_other_methods_fields_allow_nothing if {
	every m in ["sampling/createMessage", "tools/call", "resources/read", "resources/subscribe", "prompts/get", "subscriptions/listen", "completion/complete"] {
		# Each method's own target, made one the catalog refuses.
		req := with_mcp(user([]), object.union(allowed_stowaways, object.union({"method": m}, own_target_refused[m])))
		not mcpguard.allow with input as req
	}
}

own_target_refused := {
	"sampling/createMessage": {},
	"tools/call": {"tool": {"name": "drop_database"}},
	"resources/read": {"resource": {"uri": "nope://x"}},
	"resources/subscribe": {"resource": {"uri": "nope://x"}},
	"prompts/get": {"prompt": {"name": "nope"}},
	"subscriptions/listen": {"subscriptions": {"resource_uris": ["nope://x"]}},
	"completion/complete": {"completion": {"ref": {"type": "ref/tool", "name": "summarize_access"}}},
}

# The same fields, each refused to user([]): the reasons speak of the
# method's own target only.
refused_stowaways := {
	"tool": {"name": "read_critical_data", "arguments": {}},
	"resource": {"uri": "data://items/1"},
	"prompt": {"name": "hidden", "arguments": {}},
	"subscriptions": {"resource_uris": ["data://items/2"]},
	"completion": {"ref": {"type": "ref/prompt", "name": "secret", "uri": "data://items/3"}},
}

test_reasons_speak_of_the_methods_own_target if {
	req := with_mcp(user([]), object.union(refused_stowaways, {"method": "tools/call", "tool": {"name": "drop_database"}}))
	mcpguard.decision.reasons == [`tool "drop_database" is not in the policy catalog`] with input as req
	other := with_mcp(user([]), object.union(refused_stowaways, {"method": "sampling/createMessage"}))
	mcpguard.decision.reasons == [`method "sampling/createMessage" is not allowed`] with input as other

	# A completion ref to a resource, by URI and by template.
	every uri in ["data://items/1", "data://items/{item_id}"] {
		stowaway := {"mcp": {"completion": {"ref": {"type": "ref/resource", "uri": uri}}}}
		mcpguard.decision.reasons == [`tool "drop_database" is not in the policy catalog`] with input as object.union(req, stowaway)
	}
}

# completion/complete: the ref's type says which of its fields is decided.
test_complete_decides_by_ref_type if {
	# A refused target of the named type, an allowed one of the other.
	not mcpguard.allow with input as complete(user([]), {"type": "ref/resource", "uri": "nope://x", "name": "summarize_access"})
	not mcpguard.allow with input as complete(user(["data_reader"]), {"type": "ref/prompt", "name": "hidden", "uri": "data://server-info"})
	not mcpguard.allow with input as complete(user(["data_reader"]), {"type": "ref/prompt", "name": "hidden", "uri": "data://items/{item_id}"})
	not mcpguard.allow with input as complete(everything, {"type": "ref/tool", "name": "summarize_access", "uri": "data://server-info"})

	mcpguard.decision.reasons == [`resource "nope://x" is not in the policy catalog`] with input as complete(user([]), {"type": "ref/resource", "uri": "nope://x", "name": "hidden"})
	mcpguard.decision.reasons == [`prompt "hidden" is not in the policy catalog`] with input as complete(user([]), {"type": "ref/prompt", "name": "hidden", "uri": "data://items/1"})
	mcpguard.decision.reasons == [`prompt "hidden" is not in the policy catalog`] with input as complete(user([]), {"type": "ref/prompt", "name": "hidden", "uri": "data://items/{item_id}"})
}

# subscriptions/listen: resource_uris must be a list. An object's values are
# not subscriptions the server would make.
test_listen_resource_uris_must_be_a_list if {
	every uris in [{"a": "data://server-info"}, "data://server-info", {"data://server-info"}] {
		req := with_mcp(everything, {"method": "subscriptions/listen", "subscriptions": {"resource_uris": uris}})
		not mcpguard.allow with input as req
		mcpguard.decision.reasons == ["subscriptions/listen request does not list its resource subscriptions"] with input as req
	}
}

# Reasons name the refused URIs only, and for each only the templates that
# match it: a URI that one template allows is not reported because another
# matching template refuses it.
two_templates := {"resource_templates": {
	"data://items/{id}": {"match": "data://items/*", "require_role": "data_reader"},
	"data://{kind}/{id}": {"match": "data://*/*", "require_role": "admin"},
	"files://{path}": {"match": "files://*", "require_role": "auditor"},
}}

test_listen_reasons_name_refused_uris_only if {
	req := listen(user(["data_reader"]), ["data://items/1", "data://orders/1"])
	not mcpguard.allow with input as req with data.mcp.catalog as two_templates
	mcpguard.decision.reasons == [`resource "data://orders/1" (template "data://{kind}/{id}") requires role "admin"`] with input as req with data.mcp.catalog as two_templates
}

test_resource_reasons_name_matching_templates_only if {
	mcpguard.decision.reasons == [`resource "data://orders/1" (template "data://{kind}/{id}") requires role "admin"`] with input as read(user([]), "data://orders/1") with data.mcp.catalog as two_templates
}

# An unauthenticated caller is told that, and nothing about the catalog or
# the shape of its request.
test_anonymous_told_only_that_it_is_not_authenticated if {
	every req in [
		object.union(anonymous, {"mcp": {}}),
		with_mcp(anonymous, {"method": "tools/call", "tool": {}}),
		call(anonymous, "read_critical_data"),
		with_mcp(anonymous, {"method": "prompts/get", "prompt": {}}),
		prompt(anonymous, "hidden"),
		with_mcp(anonymous, {"method": "resources/read", "resource": {}}),
		read(anonymous, "data://items/1"),
		listen(anonymous, ["data://items/1"]),
		method(anonymous, "subscriptions/listen"),
		complete(anonymous, {"type": "ref/prompt", "name": "hidden"}),
		complete(anonymous, {"type": "ref/resource", "uri": "data://items/1"}),
		complete(anonymous, {"type": "ref/resource", "uri": "data://items/{item_id}"}),
		method(anonymous, "completion/complete"),
		method(anonymous, "sampling/createMessage"),
	] {
		not mcpguard.allow with input as req
		mcpguard.decision.reasons == ["caller is not authenticated"] with input as req
	}
}

# A method that is not a string is reported missing, not quoted.
test_non_string_method_is_missing if {
	every m in [5, true, null, ["tools/call"]] {
		req := with_mcp(everything, {"method": m})
		not mcpguard.allow with input as req
		mcpguard.decision.reasons == ["request has no MCP method"] with input as req
	}
}

# tools/list shows only the candidates the server registered, never every
# catalog row the caller satisfies.
test_visible_tools_only_among_candidates if {
	req := with_mcp(everything, {"method": "tools/list", "candidates": {"tools": [{"name": "get_current_user"}, {"name": "unlisted_tool"}]}})
	mcpguard.visible == {"get_current_user"} with input as req
}

# Lint: the rows of an unknown section are not read as rows; the section
# itself is the error.
test_catalog_errors_unknown_section_rows_not_linted if {
	authz.catalog_errors == {`catalog has unknown section "tool"`} with data.mcp.catalog as {
		"tools": {},
		"tool": {"x": {"require_rolez": 5}},
	}
}
