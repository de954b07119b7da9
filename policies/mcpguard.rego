# METADATA
# title: mcpguard's decision
# description: |
#   The rules the server asks, owned by mcpguard and built into it: the server
#   compiles this module with every policy folder and refuses to start when a
#   folder carries a different one (edit mcp.authz and data.json, never this
#   file). It composes fixed guards with the permissions of package mcp.authz
#   and the catalog (data.mcp.catalog):
#     - the input document is version 1;
#     - the caller is authenticated, unless mcp.authz sets
#       allow_unauthenticated to true;
#     - the request is permitted: for a method with a target (a tool, a
#       resource, a prompt), by its catalog row or an mcp.authz rule
#       tool_allowed / resource_allowed / prompt_allowed / template_allowed;
#       for any other method, by mcp.authz.allow;
#     - no veto: mcp.authz.deny is empty (and a set).
#   No rule added to mcp.authz can pass a request these guards refuse, and a
#   list shows exactly what the caller could call.
package mcpguard

import data.mcp.authz
import data.mcp.lib

# METADATA
# description: The request may pass. The hot path asks for this alone.
# entrypoint: true
default allow := false

allow if {
	input.version == 1
	admitted
	permitted
	count(vetoes) == 0
}

# A verified token, or a policy that admits callers without one (a server
# run with ENABLE_AUTH=false on its own machine).
admitted if input.identity.authenticated == true

admitted if {
	input.identity.authenticated == false
	authz.allow_unauthenticated == true
}

# Methods with a target, which the catalog and the *_allowed rules decide;
# mcp.authz.allow decides the others and is not asked for these.
targeted_methods := {"tools/call", "resources/read", "resources/subscribe", "prompts/get", "subscriptions/listen", "completion/complete"}

# Each body is keyed on input.mcp.method so that OPA evaluates only the one
# that can apply.
permitted if {
	input.mcp.method == "tools/call"
	tool_permitted(input.mcp.tool.name)
}

permitted if {
	input.mcp.method == "resources/read"
	resource_permitted(input.mcp.resource.uri)
}

# Subscribing streams the resource's change notifications: only for callers
# who may read it.
permitted if {
	input.mcp.method == "resources/subscribe"
	resource_permitted(input.mcp.resource.uri)
}

permitted if {
	input.mcp.method == "prompts/get"
	prompt_permitted(input.mcp.prompt.name)
}

# subscriptions/listen (2026-07-28) opens a stream of notifications; the
# resource updates it asks for are subscriptions the server makes past its
# request check, so each URI is decided like resources/subscribe.
permitted if {
	input.mcp.method == "subscriptions/listen"
	is_array(input.mcp.subscriptions.resource_uris)
	every uri in input.mcp.subscriptions.resource_uris {
		resource_permitted(uri)
	}
}

# completion/complete suggests values of a prompt's or a resource
# template's argument: decided like a use of what its ref names.
permitted if {
	input.mcp.method == "completion/complete"
	completion_ref_permitted
}

permitted if {
	is_string(input.mcp.method)
	not input.mcp.method in targeted_methods
	authz.allow == true
}

completion_ref_permitted if {
	input.mcp.completion.ref.type == "ref/prompt"
	prompt_permitted(input.mcp.completion.ref.name)
}

completion_ref_permitted if {
	input.mcp.completion.ref.type == "ref/resource"
	resource_permitted(input.mcp.completion.ref.uri)
}

completion_ref_permitted if {
	input.mcp.completion.ref.type == "ref/resource"
	template_permitted(input.mcp.completion.ref.uri)
}

# The catalog's row, or a rule of mcp.authz. A call and a list decide
# through these same functions.
tool_permitted(name) if lib.satisfied(data.mcp.catalog.tools[name])

tool_permitted(name) if authz.tool_allowed(name) == true

prompt_permitted(name) if lib.satisfied(data.mcp.catalog.prompts[name])

prompt_permitted(name) if authz.prompt_allowed(name) == true

# An exact row in resources decides alone. Without one, the URI is allowed
# when a resource_templates row whose match glob fits it is satisfied.
# In match, * stays within one path segment ("/"); ** crosses segments.
resource_permitted(uri) if lib.satisfied(data.mcp.catalog.resources[uri])

resource_permitted(uri) if {
	not has_row("resources", uri)
	some row in data.mcp.catalog.resource_templates
	is_string(row.match) # glob.match errs on another type
	glob.match(row.match, ["/"], uri)
	lib.satisfied(row)
}

resource_permitted(uri) if authz.resource_allowed(uri) == true

# resources/templates/list and completions: keyed by the URI template as
# registered.
template_permitted(template) if lib.satisfied(data.mcp.catalog.resource_templates[template])

template_permitted(template) if authz.template_allowed(template) == true

# The catalog has a row for key, whatever its value. A direct lookup: reading
# the whole section would copy every row.
has_row(section, key) if {
	_ = data.mcp.catalog[section][key]
}

# Any veto refuses the request, whatever mcp.authz.allow says.
vetoes contains msg if {
	is_set(authz.deny)
	some msg in authz.deny
}

# deny := true, or an object: a veto the team meant, in a shape the guard
# cannot read. Refused rather than ignored.
vetoes contains {"id": "mcpguard.deny_shape", "message": "request denied by policy", "detail": "mcp.authz.deny is not a set"} if {
	d := authz.deny
	not is_set(d)
}

# An input document that claims a verified token for an anonymous caller is
# contradictory: refuse it rather than guess.
vetoes contains {"id": "mcpguard.identity", "message": "request denied by policy", "detail": "identity is marked authenticated but its kind is anonymous"} if {
	input.identity.kind == "anonymous"
	input.identity.authenticated == true
}

# METADATA
# description: |
#   {"allow", "reasons", "details", "obligations"}, on a deny only (the server
#   asks for it only when allow is false): details are the reasons as
#   records {"id", "message", "detail"} - the rule that refused, the text a
#   caller may be shown, the text for the log - sorted and never empty;
#   reasons are their messages.
# entrypoint: true
decision := {"allow": allow, "reasons": reasons, "details": details, "obligations": []}

reasons := [] if {
	allow
} else := sort({r.message | some r in details})

details := [] if {
	allow
} else := sort({reason(r) | some r in guard_reasons}) if {
	count(guard_reasons) > 0
} else := sort({reason(r) | some r in authz.denial_reasons}) if {
	is_set(authz.denial_reasons)
	count(authz.denial_reasons) > 0
} else := [reason("request denied by policy")]

# A reason as a record. A rule may give a string (the message and the detail
# both) or an object with a message and, optionally, an id and a detail.
reason(r) := {"id": "", "message": r, "detail": r} if {
	is_string(r)
} else := {"id": id, "message": r.message, "detail": detail} if {
	is_string(r.message)
	id := object.get(r, "id", "")
	is_string(id)
	detail := object.get(r, "detail", r.message)
	is_string(detail)
} else := {"id": "mcpguard.reason_shape", "message": "request denied by policy", "detail": sprintf("a reason is neither a string nor {\"message\": string}: %v", [r])}

# Why a guard refused. When none did, mcp.authz.denial_reasons explains the
# permission that was missing.
guard_reasons contains {
	"id": "mcpguard.version",
	"message": sprintf("input document version %v is not supported (these policies read version 1)", [version]),
} if {
	not input.version == 1
	version := object.get(input, "version", null)
}

guard_reasons contains {"id": "mcpguard.unauthenticated", "message": "caller is not authenticated"} if not admitted

guard_reasons contains msg if some msg in vetoes

# METADATA
# description: |
#   For a list method, the names (tools, prompts), URIs (resources) or URI
#   templates (resource templates) of input.mcp.candidates the caller may see:
#   exactly those a call with empty arguments would be allowed, mcp.authz's
#   rules and vetoes included. Empty for a refused list and any other method.
# entrypoint: true
visible contains name if {
	input.mcp.method == "tools/list"
	allow
	some candidate in input.mcp.candidates.tools
	name := candidate.name
	data.mcp.catalog.tools[name] in satisfied_tool_rows
	not tool_vetoed(candidate)
}

visible contains name if {
	input.mcp.method == "tools/list"
	allow
	tool_extensions
	some candidate in input.mcp.candidates.tools
	name := candidate.name
	authz.tool_allowed(name) == true
	not tool_vetoed(candidate)
}

tool_vetoed(candidate) if {
	deny_rules
	call_vetoed({"method": "tools/call", "tool": {
		"name": candidate.name,
		"arguments": {},
		"annotations": object.get(candidate, "annotations", {}),
	}})
}

# mcp.authz has tool_allowed bodies besides its default. The server says
# which in data.mcpguard.folder (generated when it loads the folder); where
# that is absent (stock opa), every candidate is asked.
tool_extensions if not data.mcpguard.folder.tool_extensions == false

# A long list is decided row by row, not tool by tool: tools share catalog
# rows (one per role, typically), and each distinct row is judged once.
satisfied_tool_rows contains row if {
	input.mcp.method == "tools/list"
	some row in {r | some r in data.mcp.catalog.tools}
	lib.satisfied(row)
}

visible contains name if {
	input.mcp.method == "prompts/list"
	allow
	some candidate in input.mcp.candidates.prompts
	name := candidate.name
	prompt_permitted(name)
	not prompt_vetoed(name)
}

visible contains uri if {
	input.mcp.method == "resources/list"
	allow
	some candidate in input.mcp.candidates.resources
	uri := candidate.uri
	resource_permitted(uri)
	not resource_vetoed(uri)
}

# A template is not read itself: it is listed when completing its arguments
# (completion/complete with a ref/resource naming it) would be allowed.
visible contains template if {
	input.mcp.method == "resources/templates/list"
	allow
	some candidate in input.mcp.candidates.resource_templates
	template := candidate.uriTemplate
	template_permitted(template)
	not template_vetoed(template)
}

prompt_vetoed(name) if {
	deny_rules
	call_vetoed({"method": "prompts/get", "prompt": {"name": name, "arguments": {}}})
}

resource_vetoed(uri) if {
	deny_rules
	call_vetoed({"method": "resources/read", "resource": {"uri": uri}})
}

template_vetoed(template) if {
	deny_rules
	call_vetoed({"method": "completion/complete", "completion": {"ref": {"type": "ref/resource", "uri": template}}})
}

# mcp.authz has deny rules. Without any, a call meets no veto but the
# guard's own, which read the caller alone and passed for the list request.
deny_rules if _ = authz.deny

# A veto the call would meet. The vetoes are evaluated on the call's input:
# the list request's, its method and target replaced (same caller, session
# and transport). Built from the request's own parts without its candidates,
# so that each candidate does not copy the list.
call_vetoed(call) if {
	call_input := object.union(call_base, {"mcp": object.union(call_mcp_base, call)})
	count(vetoes) > 0 with input as call_input
}

call_base := {k: v | some k, v in input; k != "mcp"}

call_mcp_base := {k: v | some k, v in input.mcp; not k in {"method", "candidates"}}
