package mcp.authz_test

import data.mcp.authz
import data.mcpguard

# The fixed guards of every allow body (input version 1, an authenticated
# caller, no veto) hold whatever the permission rules say. A team extends
# tool_allowed, resource_allowed, prompt_allowed or the catalog, and may do so
# without lib.satisfied (which checks authentication again): here every
# permission rule is replaced by one that allows everything, so that only the
# guards can refuse.

# One request per allow body, each naming something the catalog does not
# allow: only the replaced permission rules let it through.
guarded_requests := [
	call(user([]), "drop_database"),
	read(user([]), "nope://x"),
	subscribe(user([]), "nope://x"),
	prompt(user([]), "nope"),
	listen(user([]), ["nope://x"]),
	complete(user([]), {"type": "ref/prompt", "name": "nope"}),
	complete(user([]), {"type": "ref/resource", "uri": "nope://x"}),
]

# mcpguard.allow with every permission rule allowing.
allowed_whatever_the_permissions(req) if {
	mcpguard.allow with input as req
		with authz.tool_allowed as true
		with authz.resource_allowed as true
		with authz.prompt_allowed as true
		with authz.template_allowed as true
		with authz.completion_ref_allowed as true
}

# Without this the refusals below would prove nothing.
test_guarded_requests_allowed_when_permissions_allow if {
	every req in guarded_requests {
		allowed_whatever_the_permissions(req)
		not mcpguard.allow with input as req
	}
}

test_guards_refuse_other_input_versions if {
	every req in guarded_requests {
		not allowed_whatever_the_permissions(object.union(req, {"version": 2}))
		not allowed_whatever_the_permissions(object.union(req, {"version": "1"}))
		not allowed_whatever_the_permissions(object.remove(req, ["version"]))
	}
}

test_guards_refuse_unauthenticated_callers if {
	every req in guarded_requests {
		not allowed_whatever_the_permissions(object.union(req, {"identity": {"authenticated": false}}))
		not allowed_whatever_the_permissions(object.remove(req, ["identity"]))
	}
}

# A veto a team adds (authz.deny replaced), and the shipped one (a
# contradictory identity), refuse every method.
test_guards_refuse_a_veto if {
	every req in guarded_requests {
		not allowed_whatever_the_permissions(req) with authz.deny as {"vetoed"}
		not allowed_whatever_the_permissions(object.union(req, {"identity": {"kind": "anonymous"}}))
	}
}

# The same with the shipped catalog and a caller it allows: the version and
# the veto refuse each guarded method, with the reason.
allowed_requests := [
	call(everything, "read_critical_data"),
	read(everything, "data://items/1"),
	subscribe(everything, "data://items/1"),
	prompt(everything, "summarize_access"),
	listen(everything, ["data://items/1"]),
	complete(everything, {"type": "ref/prompt", "name": "summarize_access"}),
	complete(everything, {"type": "ref/resource", "uri": "data://items/{item_id}"}),
]

test_allowed_requests_refused_by_version_and_veto if {
	every req in allowed_requests {
		mcpguard.allow with input as req
		not mcpguard.allow with input as object.union(req, {"version": 2})
		mcpguard.decision.reasons == ["input document version 2 is not supported (these policies read version 1)"] with input as object.union(req, {"version": 2})
		not mcpguard.allow with input as req with authz.deny as {"no access today"}
		mcpguard.decision.reasons == ["no access today"] with input as req with authz.deny as {"no access today"}
	}
}

# A refused list request shows nothing, whatever the caller could see.
test_visible_empty_when_list_refused if {
	every m in ["tools/list", "resources/list", "resources/templates/list", "prompts/list"] {
		count(mcpguard.visible) > 0 with input as list(everything, m)
		mcpguard.visible == set() with input as object.union(list(everything, m), {"version": 2})
		mcpguard.visible == set() with input as list(everything, m) with authz.deny as {"x"}
		mcpguard.visible == set() with input as object.union(list(everything, m), {"identity": {"kind": "anonymous"}})
	}
}
