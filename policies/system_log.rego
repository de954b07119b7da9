# What a decision log may keep of a request. OPA's decision-log plugin asks
# data.system.log.mask before it prints or uploads a decision (mcpguard logs
# every one: allows, denies and list filters) and applies the changes it
# names to the event; its input is the event, whose input is the request's
# input document. The input document carries no token; these rules take out
# what could still say too much:
#   - of the claims of the verified token (identity.claims) and of the
#     exchanged one (authorization.claims), only kept_claims stay: who
#     issued it, for which tenant and app, of which kind, with which scopes
#     and roles; identity's own fields (object_id, name, …) say who called;
#   - the values of tool, prompt and completion arguments (the names stay:
#     they say what was asked, the values may be anybody's data);
#   - the session id, which a client presents to resume its session.
# Edit kept_claims, or add rules, to log more or less; `mcpguard policy
# replay` decides a masked log line as logged.
package system.log

# The claims a log keeps.
kept_claims := {"aud", "azp", "appid", "idtyp", "iss", "roles", "scp", "tid", "ver"}

# What a masked value reads as.
masked_value := "**masked**"

mask contains {"op": "upsert", "path": "/input/identity/claims", "value": _kept(input.input.identity.claims)}

mask contains {"op": "upsert", "path": "/input/authorization/claims", "value": _kept(input.input.authorization.claims)}

mask contains {"op": "upsert", "path": "/input/mcp/tool/arguments", "value": _masked(input.input.mcp.tool.arguments)}

mask contains {"op": "upsert", "path": "/input/mcp/prompt/arguments", "value": _masked(input.input.mcp.prompt.arguments)}

mask contains {"op": "upsert", "path": "/input/mcp/completion/context/arguments", "value": _masked(input.input.mcp.completion.context.arguments)}

mask contains {"op": "upsert", "path": "/input/mcp/completion/argument/value", "value": masked_value} if {
	input.input.mcp.completion.argument.value
}

mask contains "/input/mcp/session_id" if input.input.mcp.session_id

_kept(claims) := {name: value | some name, value in claims; name in kept_claims}

_masked(arguments) := {name: masked_value | some name, _ in arguments}
