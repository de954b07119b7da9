# The decision on every MCP request. The server asks for:
#   allow    - the boolean alone (the hot path; builds no messages)
#   decision - {"allow", "reasons", "obligations"}; reasons only on a deny
#   visible  - for a list method, the candidates the caller may see
# Undefined, an evaluation error or a timeout is a deny (the server fails closed).
package mcp.authz

import data.mcp.lib

default allow := false

# One body per kind of method, each keyed on input.mcp.method so that OPA
# evaluates only the body that can apply. Every body also requires input
# document version 1 (the field names these policies read), an authenticated
# caller, and no veto.

# Protocol housekeeping and the four lists (whose results the server filters
# by visible): any authenticated caller. The set is written inline so that
# OPA indexes it.
allow if {
	input.mcp.method in {
		"initialize",
		# The 2026-07-28 protocol's capability discovery and notification stream.
		"server/discover",
		"notifications/initialized",
		"notifications/cancelled",
		"notifications/progress",
		"notifications/roots/list_changed",
		"ping",
		"logging/setLevel",
		# Dropping a subscription reveals nothing, and must work after a role is revoked.
		"resources/unsubscribe",
		"tools/list",
		"resources/list",
		"resources/templates/list",
		"prompts/list",
	}
	input.version == 1
	lib.authenticated
	count(deny) == 0
}

allow if {
	input.mcp.method == "tools/call"
	input.version == 1
	lib.authenticated
	tool_allowed(input.mcp.tool.name)
	count(deny) == 0
}

allow if {
	input.mcp.method == "resources/read"
	input.version == 1
	lib.authenticated
	resource_allowed(input.mcp.resource.uri)
	count(deny) == 0
}

# Subscribing streams the resource's change notifications: only for callers
# who may read it.
allow if {
	input.mcp.method == "resources/subscribe"
	input.version == 1
	lib.authenticated
	resource_allowed(input.mcp.resource.uri)
	count(deny) == 0
}

allow if {
	input.mcp.method == "prompts/get"
	input.version == 1
	lib.authenticated
	prompt_allowed(input.mcp.prompt.name)
	count(deny) == 0
}

# subscriptions/listen (2026-07-28) opens a stream of notifications; the
# resource updates it asks for are subscriptions the server makes past its
# request check, so each URI is decided here like resources/subscribe.
allow if {
	input.mcp.method == "subscriptions/listen"
	input.version == 1
	lib.authenticated
	is_array(input.mcp.subscriptions.resource_uris)
	every uri in input.mcp.subscriptions.resource_uris {
		resource_allowed(uri)
	}
	count(deny) == 0
}

# completion/complete suggests values of a prompt's or a resource
# template's argument: decided like a use of what its ref names.
allow if {
	input.mcp.method == "completion/complete"
	input.version == 1
	lib.authenticated
	completion_ref_allowed
	count(deny) == 0
}

completion_ref_allowed if {
	input.mcp.completion.ref.type == "ref/prompt"
	prompt_allowed(input.mcp.completion.ref.name)
}

completion_ref_allowed if {
	input.mcp.completion.ref.type == "ref/resource"
	resource_allowed(input.mcp.completion.ref.uri)
}

completion_ref_allowed if {
	input.mcp.completion.ref.type == "ref/resource"
	template_allowed(input.mcp.completion.ref.uri)
}

# Methods whose target the catalog decides (the other allow bodies).
guarded_methods := {"tools/call", "resources/read", "resources/subscribe", "prompts/get", "subscriptions/listen", "completion/complete"}

# The shared rules: a call and a list decide through the same functions.

tool_allowed(name) if lib.satisfied(data.mcp.catalog.tools[name])

prompt_allowed(name) if lib.satisfied(data.mcp.catalog.prompts[name])

# An exact row in resources decides alone. Without one, the URI is allowed
# when a resource_templates row whose match glob fits it is satisfied.
# In match, * stays within one path segment ("/"); ** crosses segments.
resource_allowed(uri) if lib.satisfied(data.mcp.catalog.resources[uri])

resource_allowed(uri) if {
	not has_row("resources", uri)
	some row in data.mcp.catalog.resource_templates
	is_string(row.match) # glob.match errs on another type
	glob.match(row.match, ["/"], uri)
	lib.satisfied(row)
}

# The catalog has a row for key, whatever its value. A direct lookup: reading
# the whole section would copy every row.
has_row(section, key) if {
	_ = data.mcp.catalog[section][key]
}

# resources/templates/list: keyed by the URI template as registered.
template_allowed(template) if lib.satisfied(data.mcp.catalog.resource_templates[template])

# Vetoes: any message in deny refuses the request, whatever the catalog
# allows. Argument-level rules go here, each keyed on the method and name it
# is about (input.mcp.tool.name == "..."), so that OPA skips it for others.
# See docs/POLICIES.md.

# An input document that claims a verified token for an anonymous caller is
# contradictory: refuse it rather than guess.
deny contains "identity is marked authenticated but its kind is anonymous" if {
	input.identity.kind == "anonymous"
	input.identity.authenticated == true
}

# visible: for a list method, the names (tools, prompts), URIs (resources)
# or URI templates (resource templates) of input.mcp.candidates the caller
# may see. Empty for a refused list request and for any other method.

visible contains name if {
	input.mcp.method == "tools/list"
	allow
	some candidate in input.mcp.candidates.tools
	name := candidate.name
	data.mcp.catalog.tools[name] in satisfied_tool_rows
}

# The distinct catalog rows of tools this caller satisfies: tools share rows
# (one per role, typically), so a long list is decided row by row, not tool
# by tool. The same lib.satisfied as tool_allowed decides each row.
satisfied_tool_rows contains row if {
	input.mcp.method == "tools/list"
	some row in {r | some r in data.mcp.catalog.tools}
	lib.satisfied(row)
}

visible contains uri if {
	input.mcp.method == "resources/list"
	allow
	some candidate in input.mcp.candidates.resources
	uri := candidate.uri
	resource_allowed(uri)
}

visible contains template if {
	input.mcp.method == "resources/templates/list"
	allow
	some candidate in input.mcp.candidates.resource_templates
	template := candidate.uriTemplate
	template_allowed(template)
}

visible contains name if {
	input.mcp.method == "prompts/list"
	allow
	some candidate in input.mcp.candidates.prompts
	name := candidate.name
	prompt_allowed(name)
}

decision := {"allow": allow, "reasons": reasons, "obligations": []}

# Sorted; empty on allow, never empty on a deny. Messages are built only here.
reasons := [] if {
	allow
} else := sort(denial_reasons) if {
	count(denial_reasons) > 0
} else := ["request denied by policy"]

denial_reasons contains msg if some msg in deny

denial_reasons contains sprintf("input document version %v is not supported (these policies read version 1)", [version]) if {
	not input.version == 1
	version := object.get(input, "version", null)
}

denial_reasons contains "caller is not authenticated" if not lib.authenticated

# (object.get, because `not is_string(x)` does not hold when x is absent.)
denial_reasons contains "request has no MCP method" if {
	lib.authenticated
	not is_string(object.get(input, ["mcp", "method"], null))
}

# Authenticated, version 1, no veto, not a guarded method, and still refused:
# the method is not one the allow rules name.
denial_reasons contains sprintf("method %q is not allowed", [input.mcp.method]) if {
	not allow
	is_string(input.mcp.method)
	not input.mcp.method in guarded_methods
	input.version == 1
	lib.authenticated
	count(deny) == 0
}

denial_reasons contains msg if {
	lib.authenticated
	input.mcp.method == "tools/call"
	some msg in named_reasons("tool", "tools", input.mcp.tool.name)
}

denial_reasons contains "tools/call request names no tool" if {
	lib.authenticated
	input.mcp.method == "tools/call"
	not is_string(object.get(input.mcp, ["tool", "name"], null))
}

denial_reasons contains msg if {
	lib.authenticated
	input.mcp.method == "prompts/get"
	some msg in named_reasons("prompt", "prompts", input.mcp.prompt.name)
}

denial_reasons contains "prompts/get request names no prompt" if {
	lib.authenticated
	input.mcp.method == "prompts/get"
	not is_string(object.get(input.mcp, ["prompt", "name"], null))
}

denial_reasons contains msg if {
	lib.authenticated
	input.mcp.method in {"resources/read", "resources/subscribe"}
	some msg in resource_reasons(input.mcp.resource.uri)
}

denial_reasons contains msg if {
	lib.authenticated
	input.mcp.method == "subscriptions/listen"
	some uri in input.mcp.subscriptions.resource_uris
	not resource_allowed(uri)
	some msg in resource_reasons(uri)
}

denial_reasons contains "subscriptions/listen request does not list its resource subscriptions" if {
	lib.authenticated
	input.mcp.method == "subscriptions/listen"
	not is_array(object.get(input.mcp, ["subscriptions", "resource_uris"], null))
}

denial_reasons contains msg if {
	lib.authenticated
	input.mcp.method == "completion/complete"
	input.mcp.completion.ref.type == "ref/prompt"
	some msg in named_reasons("prompt", "prompts", input.mcp.completion.ref.name)
}

denial_reasons contains msg if {
	lib.authenticated
	input.mcp.method == "completion/complete"
	input.mcp.completion.ref.type == "ref/resource"
	uri := input.mcp.completion.ref.uri
	not has_row("resource_templates", uri)
	some msg in resource_reasons(uri)
}

denial_reasons contains sprintf("resource template %q %s", [uri, msg]) if {
	lib.authenticated
	input.mcp.method == "completion/complete"
	input.mcp.completion.ref.type == "ref/resource"
	uri := input.mcp.completion.ref.uri
	some msg in lib.unmet(data.mcp.catalog.resource_templates[uri])
}

denial_reasons contains "completion/complete request names neither a prompt nor a resource" if {
	lib.authenticated
	input.mcp.method == "completion/complete"
	not object.get(input.mcp, ["completion", "ref", "type"], null) in {"ref/prompt", "ref/resource"}
}

denial_reasons contains sprintf("%s request names no resource URI", [input.mcp.method]) if {
	lib.authenticated
	input.mcp.method in {"resources/read", "resources/subscribe"}
	not is_string(object.get(input.mcp, ["resource", "uri"], null))
}

# Why the tool or prompt a request names is refused.
named_reasons(kind, section, name) := {sprintf("%s %q is not in the policy catalog", [kind, name])} if {
	not has_row(section, name)
} else := {sprintf("%s %q %s", [kind, name, msg]) | some msg in lib.unmet(data.mcp.catalog[section][name])}

# Why a resource URI is refused: its exact row, else each matching template.
resource_reasons(uri) := {sprintf("resource %q %s", [uri, msg]) | some msg in lib.unmet(data.mcp.catalog.resources[uri])} if {
	has_row("resources", uri)
} else := reasons if {
	matched := {template |
		some template, row in data.mcp.catalog.resource_templates
		is_string(row.match)
		glob.match(row.match, ["/"], uri)
	}
	count(matched) > 0
	reasons := {sprintf("resource %q (template %q) %s", [uri, template, msg]) |
		some template in matched
		some msg in lib.unmet(data.mcp.catalog.resource_templates[template])
	}
} else := {sprintf("resource %q is not in the policy catalog", [uri])}

# Lint: every problem of the catalog rows, for `mcpguard policy lint` and for
# the test that keeps policies/data.json clean.
catalog_errors contains sprintf("catalog.%s[%q]: %s", [section, key, err]) if {
	some section in ["tools", "resources", "resource_templates", "prompts"]
	some key, row in data.mcp.catalog[section]
	some err in lib.row_errors(row)
}

catalog_errors contains sprintf("catalog.resource_templates[%q]: match must be a glob string", [key]) if {
	some key, row in data.mcp.catalog.resource_templates
	is_object(row) # object.get errs on another type; row_errors names the row
	not is_string(object.get(row, "match", null))
}

catalog_errors contains sprintf("catalog.%s[%q]: match is only for resource_templates", [section, key]) if {
	some section in ["tools", "resources", "prompts"]
	some key, row in data.mcp.catalog[section]
	is_object(row)
	"match" in object.keys(row)
}

catalog_errors contains sprintf("catalog has unknown section %q", [section]) if {
	some section, _ in data.mcp.catalog
	not section in {"tools", "resources", "resource_templates", "prompts"}
}
