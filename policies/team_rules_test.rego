# Rules a security team might add, for the tests of the decision module
# (mcpguard_test.rego). They are in package mcp.authz like a team's own, in a
# test file so that the server never loads them, and each applies to the
# caller "team-rules" alone, so that no other test sees them.
package mcp.authz

import data.mcp.lib

# Destructive tools only for admins: it reads no arguments, so it also hides
# such tools from tools/list.
deny contains sprintf("%s is destructive: admins only", [input.mcp.tool.name]) if {
	input.identity.object_id == "team-rules"
	input.mcp.method == "tools/call"
	input.mcp.tool.annotations.destructiveHint == true
	not lib.require_role("admin")
}

# An argument veto: it never fires on a call with empty arguments, so the
# tool stays listed.
deny contains "approve_budget over 10,000 needs the cfo role" if {
	input.identity.object_id == "team-rules"
	input.mcp.tool.name == "approve_budget"
	input.mcp.tool.arguments.amount > 10000
	not lib.require_role("cfo")
}

deny contains "summarize_access is closed to the team" if {
	input.identity.object_id == "team-rules"
	input.mcp.prompt.name == "summarize_access"
}

deny contains "data://server-info is closed to the team" if {
	input.identity.object_id == "team-rules"
	input.mcp.resource.uri == "data://server-info"
}

deny contains "completing data://items/{item_id} is closed to the team" if {
	input.identity.object_id == "team-rules"
	input.mcp.completion.ref.uri == "data://items/{item_id}"
}

# Permissions beside the catalog, one per kind of target.
tool_allowed("status_check") if {
	input.identity.object_id == "team-rules"
	lib.is_app
}

prompt_allowed("team_prompt") if input.identity.object_id == "team-rules"

resource_allowed(uri) if {
	input.identity.object_id == "team-rules"
	startswith(uri, "team://")
}

template_allowed("team://{id}") if input.identity.object_id == "team-rules"

# A call's input is a call's: the same session and client as the list
# request, and no list. Rules that read them see in a list what a call sees.
deny contains "calls carry their session" if {
	input.identity.object_id == "team-rules"
	input.mcp.method == "tools/call"
	not input.mcp.session_id
}

deny contains "calls carry no candidates" if {
	input.identity.object_id == "team-rules"
	input.mcp.method == "tools/call"
	input.mcp.candidates
}

# A veto on a tool that only tool_allowed opens: it hides the tool too.
deny contains "status_check is closed to auditors" if {
	input.identity.object_id == "team-rules"
	input.mcp.tool.name == "status_check"
	lib.require_role("auditor")
}
