# The permissions beside the catalog (data.json): this package is the
# security team's. The server does not ask it directly: the built-in module
# mcpguard.rego (package mcpguard) decides every request from the catalog and
# these rules, behind guards no rule here can bypass (input version 1, an
# authenticated caller, no veto). Extension points:
#   tool_allowed, resource_allowed, prompt_allowed, template_allowed
#                         - more bodies extend what the catalog allows;
#   allow                 - methods without a target (housekeeping, lists);
#   deny                  - any element vetoes the request (strings, or
#                           {"id", "message", "detail"} records);
#   denial_reasons        - why a request was refused (shown on a deny);
#   allow_unauthenticated - true admits callers without a token.
# Lists are not decided here: a candidate is listed when a call to it would
# be allowed. See docs/POLICIES.md.
package mcp.authz

import data.mcp.lib
import data.mcpguard

default allow := false

# Methods without a target: protocol housekeeping and the four lists (whose
# results the server filters by what the caller could call), for any caller
# the guards admit. The set is written inline so that OPA indexes it.
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
}

# Extension points for methods with a target: a body added here extends
# what the catalog allows, for calls and lists alike (mcpguard.rego asks
# them beside the catalog; an allow body for such a method is not asked).
default tool_allowed(_) := false

default resource_allowed(_) := false

default prompt_allowed(_) := false

# For resource templates, keyed by the URI template as registered.
default template_allowed(_) := false

# The catalog has a row for key, whatever its value. A direct lookup: reading
# the whole section would copy every row.
has_row(section, key) if {
	_ = data.mcp.catalog[section][key]
}

# Vetoes: any message in deny refuses the request, whatever the catalog
# allows. Argument-level rules go here, each keyed on the method and name it
# is about (input.mcp.tool.name == "..."), so that OPA skips it for others.
# A veto that reads no arguments also hides the tool from tools/list.
# See docs/POLICIES.md.

# Why a request the guards admitted was refused: the permission it lacks.
# (mcpguard.rego reports the guards' own refusals and the vetoes.) Each
# reason is a record: id names the rule, message is what a caller may be
# shown (with DENIAL_DETAIL), detail what the log keeps (the message when
# left out). A veto in deny may be a record too, or a plain string.
# (object.get, because `not is_string(x)` does not hold when x is absent.)
denial_reasons contains {"id": "request.shape", "message": "request has no MCP method"} if {
	not is_string(object.get(input, ["mcp", "method"], null))
}

# Not a guarded method, and still refused: the method is not one the allow
# rules name.
denial_reasons contains {"id": "method", "message": sprintf("method %q is not allowed", [input.mcp.method])} if {
	not allow
	is_string(input.mcp.method)
	not input.mcp.method in mcpguard.targeted_methods
}

denial_reasons contains {"id": "catalog.tools", "message": msg} if {
	input.mcp.method == "tools/call"
	some msg in named_reasons("tool", "tools", input.mcp.tool.name)
}

denial_reasons contains {"id": "request.shape", "message": "tools/call request names no tool"} if {
	input.mcp.method == "tools/call"
	not is_string(object.get(input.mcp, ["tool", "name"], null))
}

denial_reasons contains {"id": "catalog.prompts", "message": msg} if {
	input.mcp.method == "prompts/get"
	some msg in named_reasons("prompt", "prompts", input.mcp.prompt.name)
}

denial_reasons contains {"id": "request.shape", "message": "prompts/get request names no prompt"} if {
	input.mcp.method == "prompts/get"
	not is_string(object.get(input.mcp, ["prompt", "name"], null))
}

denial_reasons contains {"id": "catalog.resources", "message": msg} if {
	input.mcp.method in {"resources/read", "resources/subscribe"}
	some msg in resource_reasons(input.mcp.resource.uri)
}

denial_reasons contains {"id": "catalog.resources", "message": msg} if {
	input.mcp.method == "subscriptions/listen"
	some uri in input.mcp.subscriptions.resource_uris
	not mcpguard.resource_permitted(uri)
	some msg in resource_reasons(uri)
}

denial_reasons contains {"id": "request.shape", "message": "subscriptions/listen request does not list its resource subscriptions"} if {
	input.mcp.method == "subscriptions/listen"
	not is_array(object.get(input.mcp, ["subscriptions", "resource_uris"], null))
}

denial_reasons contains {"id": "catalog.prompts", "message": msg} if {
	input.mcp.method == "completion/complete"
	input.mcp.completion.ref.type == "ref/prompt"
	some msg in named_reasons("prompt", "prompts", input.mcp.completion.ref.name)
}

denial_reasons contains {"id": "catalog.resources", "message": msg} if {
	input.mcp.method == "completion/complete"
	input.mcp.completion.ref.type == "ref/resource"
	uri := input.mcp.completion.ref.uri
	not has_row("resource_templates", uri)
	some msg in resource_reasons(uri)
}

denial_reasons contains {"id": "catalog.resource_templates", "message": sprintf("resource template %q %s", [uri, msg])} if {
	input.mcp.method == "completion/complete"
	input.mcp.completion.ref.type == "ref/resource"
	uri := input.mcp.completion.ref.uri
	some msg in lib.unmet(data.mcp.catalog.resource_templates[uri])
}

denial_reasons contains {"id": "request.shape", "message": "completion/complete request names neither a prompt nor a resource"} if {
	input.mcp.method == "completion/complete"
	not object.get(input.mcp, ["completion", "ref", "type"], null) in {"ref/prompt", "ref/resource"}
}

denial_reasons contains {"id": "request.shape", "message": sprintf("%s request names no resource URI", [input.mcp.method])} if {
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
