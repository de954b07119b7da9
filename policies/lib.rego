# The seed's authorization decorators as Rego functions over the input
# document, and the reading of one catalog row (data.mcp.catalog). The
# decision package (mcp.authz) and any rule a security team adds use these.
package mcp.lib

# The caller presented a verified token. Every other check assumes it.
authenticated if input.identity.authenticated == true

# A delegated (user) token: it carries scopes.
is_user if input.identity.kind == "user"

# An app-only token (client credentials, managed identity): no scopes, its
# permissions arrive as app roles.
is_app if input.identity.kind == "app"

# @require_role("x")
require_role(role) if role in input.authorization.roles

# @require_any_role(["a", "b"]). An empty list holds for nobody.
require_any_role(roles) if {
	some role in roles
	role in input.authorization.roles
}

# @require_all_roles(["a", "b"]). An empty or non-list argument holds for
# nobody (fail closed rather than vacuously true).
require_all_roles(roles) if {
	non_empty_list(roles)
	every role in roles {
		role in input.authorization.roles
	}
}

# @require_resource_role("api", "writer"): a client role from Keycloak.
require_resource_role(client, role) if role in input.authorization.client_roles[client]

# The delegated token carries this scope (scp).
has_scope(scope) if scope in input.identity.scopes

non_empty_list(x) if {
	is_array(x)
	count(x) > 0
}

non_empty_list(x) if {
	is_set(x)
	count(x) > 0
}

# The requirement kinds of a catalog row; a row holds exactly one of them.
requirement_kinds := {
	"allow_authenticated",
	"require_role",
	"require_any_role",
	"require_all_roles",
	"require_resource_role",
}

# Every key a row may carry. Any other key (a typo such as "require_scope")
# makes the row malformed, and a malformed row allows nobody.
row_keys := {
	"allow_authenticated",
	"require_role",
	"require_any_role",
	"require_all_roles",
	"require_resource_role",
	"require_scopes",
	"deny_apps",
	"match",
	"description",
}

# satisfied(row) holds when the caller meets everything the catalog row asks.
# An empty, unknown or malformed row is not satisfied (deny by default).
satisfied(row) if {
	# The common row has one key. requirement_met holds only when that key is
	# a requirement kind, so such a row is well formed whenever this holds.
	# (is_object first: count errs on a row of true or null, and the engine
	# fails every evaluation that hits a builtin error.)
	is_object(row)
	count(row) == 1
	requirement_met(row)
	authenticated
}

satisfied(row) if {
	is_object(row)
	count(row) > 1
	well_formed(row)
	requirement_met(row)
	scopes_met(row)
	apps_met(row)
	authenticated
}

well_formed(row) if {
	is_object(row)
	count(object.filter(row, requirement_kinds)) == 1
	count(object.remove(row, row_keys)) == 0
}

# The same tests as the decorators above, written out rather than called:
# each function call is an evaluation frame on the hot path.
# lib_test.rego checks that the two agree.
requirement_met(row) if row.allow_authenticated == true

requirement_met(row) if row.require_role in input.authorization.roles

requirement_met(row) if {
	some role in row.require_any_role
	role in input.authorization.roles
}

requirement_met(row) if {
	is_array(row.require_all_roles)
	count(row.require_all_roles) > 0
	every role in row.require_all_roles {
		role in input.authorization.roles
	}
}

requirement_met(row) if {
	row.require_resource_role.role in input.authorization.client_roles[row.require_resource_role.client]
}

# require_scopes: a delegated token holding every listed scope. App-only
# tokens carry no scopes, so such a row never admits an app.
scopes_met(row) if not row.require_scopes

scopes_met(row) if {
	non_empty_list(row.require_scopes)
	is_user
	every scope in row.require_scopes {
		has_scope(scope)
	}
}

# deny_apps: only delegated (user) tokens.
apps_met(row) if not row.deny_apps

apps_met(row) if {
	row.deny_apps == true
	is_user
}

# unmet(row) says, one string per missing piece, why the caller does not
# satisfy the row; it is empty exactly when satisfied(row) holds. Only
# denials pay for it.
unmet(row) := {"caller is not authenticated"} if {
	not authenticated
} else := {sprintf("has a malformed policy row (%s)", [concat("; ", sort(shape_errors(row)))])} if {
	not well_formed(row)
} else := requirement_unmet(row) if {
	count(row) == 1
} else := (requirement_unmet(row) | scopes_unmet(row)) | apps_unmet(row)

requirement_unmet(row) := set() if {
	requirement_met(row)
} else := {sprintf("requires role %q", [row.require_role])} if {
	row.require_role
} else := {sprintf("requires any of roles %s", [sorted_json(row.require_any_role)])} if {
	row.require_any_role
} else := {sprintf("requires all of roles %s", [sorted_json(row.require_all_roles)])} if {
	row.require_all_roles
} else := {sprintf("requires role %q of client %q", [row.require_resource_role.role, row.require_resource_role.client])} if {
	row.require_resource_role.role
	row.require_resource_role.client
} else := {"has a requirement no caller can meet"}

scopes_unmet(row) := set() if {
	scopes_met(row)
} else := {sprintf("requires scopes %s on a delegated user token", [sorted_json(row.require_scopes)])}

apps_unmet(row) := set() if {
	apps_met(row)
} else := {"does not admit app-only callers"}

sorted_json(x) := json.marshal(sort(x)) if {
	non_empty_list(x)
} else := json.marshal(x)

# row_errors(row) lists what is wrong with a catalog row; empty for a good
# row. data.mcp.authz.catalog_errors (lint) reports them for the catalog.
row_errors(row) := shape_errors(row) | value_errors(row)

# What makes well_formed(row) fail.
shape_errors(row) := {"the row is not an object"} if {
	not is_object(row)
} else := kind_errors(row) | key_errors(row)

kind_errors(row) := set() if {
	count(object.filter(row, requirement_kinds)) == 1
} else := {sprintf("it must hold exactly one of %s, it holds %s", [
	json.marshal(sort(requirement_kinds)),
	json.marshal(sort(object.keys(object.filter(row, requirement_kinds)))),
])}

key_errors(row) := {sprintf("unknown keys %s", [json.marshal(sort(unknown))])} if {
	unknown := object.keys(object.remove(row, row_keys))
	count(unknown) > 0
} else := set()

# Values of the wrong shape never match anybody; lint names them.
value_errors(row) := {sprintf("%s has the wrong type", [key]) |
	is_object(row)
	some key, value in row
	key in row_keys
	not value_ok(key, value)
}

value_ok("allow_authenticated", value) if is_boolean(value)

value_ok("deny_apps", value) if is_boolean(value)

value_ok("require_role", value) if is_string(value)

value_ok("match", value) if is_string(value)

value_ok("description", value) if is_string(value)

value_ok("require_any_role", value) if string_list(value)

value_ok("require_all_roles", value) if string_list(value)

value_ok("require_scopes", value) if string_list(value)

value_ok("require_resource_role", value) if {
	is_object(value)
	count(value) == 2
	is_string(value.client)
	is_string(value.role)
}

string_list(x) if {
	non_empty_list(x)
	every v in x {
		is_string(v)
	}
}
