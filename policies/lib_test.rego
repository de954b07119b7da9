package mcp.lib_test

import data.mcp.lib

# Callers.

user(roles) := {
	"version": 1,
	"identity": {"authenticated": true, "kind": "user", "scopes": ["read", "write"]},
	"authorization": {"source": "keycloak", "roles": roles, "client_roles": {"api": ["writer"]}},
}

# App-only: no scopes; its app roles are its authorization roles.
app(roles) := {
	"version": 1,
	"identity": {"authenticated": true, "kind": "app", "scopes": [], "app_roles": roles},
	"authorization": {"source": "token", "roles": roles, "client_roles": {}},
}

anonymous := {
	"version": 1,
	"identity": {"authenticated": false, "kind": "anonymous"},
	"authorization": {"source": "none", "roles": [], "client_roles": {}},
}

# authenticated, is_user, is_app

test_authenticated if lib.authenticated with input as user([])

test_authenticated_app if lib.authenticated with input as app([])

test_not_authenticated_anonymous if not lib.authenticated with input as anonymous

test_not_authenticated_without_identity if not lib.authenticated with input as {}

test_not_authenticated_truthy_string if not lib.authenticated with input as {"identity": {"authenticated": "true"}}

test_is_user if {
	lib.is_user with input as user([])
	not lib.is_app with input as user([])
}

test_is_app if {
	lib.is_app with input as app([])
	not lib.is_user with input as app([])
}

test_anonymous_is_neither if {
	not lib.is_user with input as anonymous
	not lib.is_app with input as anonymous
}

# The decorators.

test_require_role if lib.require_role("data_reader") with input as user(["data_reader"])

test_require_role_missing if not lib.require_role("data_reader") with input as user(["finance"])

test_require_role_no_roles if not lib.require_role("data_reader") with input as anonymous

test_require_any_role if lib.require_any_role(["admin", "supervisor"]) with input as user(["supervisor"])

test_require_any_role_set if lib.require_any_role({"admin", "supervisor"}) with input as user(["admin"])

test_require_any_role_missing if not lib.require_any_role(["admin", "supervisor"]) with input as user(["finance"])

test_require_any_role_empty if not lib.require_any_role([]) with input as user(["admin"])

test_require_all_roles if lib.require_all_roles(["finance", "executive"]) with input as user(["executive", "x", "finance"])

test_require_all_roles_one_missing if not lib.require_all_roles(["finance", "executive"]) with input as user(["finance"])

test_require_all_roles_empty_is_false if not lib.require_all_roles([]) with input as user(["finance"])

test_require_all_roles_string_is_false if not lib.require_all_roles("finance") with input as user(["finance"])

test_require_all_roles_set if lib.require_all_roles({"finance"}) with input as user(["finance"])

test_require_resource_role if lib.require_resource_role("api", "writer") with input as user([])

test_require_resource_role_wrong_role if not lib.require_resource_role("api", "admin") with input as user([])

test_require_resource_role_wrong_client if not lib.require_resource_role("billing", "writer") with input as user([])

# A realm role of the same name is not a client role.
test_require_resource_role_not_realm if not lib.require_resource_role("api", "writer") with input as app(["writer"])

test_has_scope if lib.has_scope("read") with input as user([])

test_has_scope_missing if not lib.has_scope("admin") with input as user([])

test_app_has_no_scope if not lib.has_scope("read") with input as app(["data_reader"])

# satisfied: each row kind, for the right and the wrong caller.

test_satisfied_allow_authenticated if {
	lib.satisfied({"allow_authenticated": true}) with input as user([])
	lib.satisfied({"allow_authenticated": true}) with input as app([])
	not lib.satisfied({"allow_authenticated": true}) with input as anonymous
}

test_satisfied_allow_authenticated_false if not lib.satisfied({"allow_authenticated": false}) with input as user([])

test_satisfied_allow_authenticated_must_be_boolean if not lib.satisfied({"allow_authenticated": "true"}) with input as user([])

test_satisfied_require_role if {
	lib.satisfied({"require_role": "data_reader"}) with input as user(["data_reader"])
	lib.satisfied({"require_role": "data_reader"}) with input as app(["data_reader"])
	not lib.satisfied({"require_role": "data_reader"}) with input as user(["finance"])
}

test_satisfied_require_any_role if {
	lib.satisfied({"require_any_role": ["admin", "supervisor"]}) with input as user(["admin"])
	not lib.satisfied({"require_any_role": ["admin", "supervisor"]}) with input as user(["finance"])
	not lib.satisfied({"require_any_role": []}) with input as user(["admin"])
	not lib.satisfied({"require_any_role": "admin"}) with input as user(["admin"])
}

test_satisfied_require_all_roles if {
	lib.satisfied({"require_all_roles": ["finance", "executive"]}) with input as user(["finance", "executive"])
	not lib.satisfied({"require_all_roles": ["finance", "executive"]}) with input as user(["executive"])
	not lib.satisfied({"require_all_roles": []}) with input as user(["finance"])
}

test_satisfied_require_resource_role if {
	lib.satisfied({"require_resource_role": {"client": "api", "role": "writer"}}) with input as user([])
	not lib.satisfied({"require_resource_role": {"client": "api", "role": "reader"}}) with input as user([])
	not lib.satisfied({"require_resource_role": {"client": "api", "role": "writer"}}) with input as app(["writer"])
}

test_no_role_row_admits_anonymous if {
	every row in sample_rows {
		not lib.satisfied(row) with input as object.union(anonymous, {"authorization": {"roles": ["data_reader", "admin", "finance", "executive"], "client_roles": {"api": ["writer"]}}})
	}
}

# Deny by default: empty, unknown, ambiguous and non-object rows.

test_satisfied_empty_row if not lib.satisfied({}) with input as user(["admin"])

test_satisfied_unknown_kind if not lib.satisfied({"require_rol": "admin"}) with input as user(["admin"])

test_satisfied_unknown_extra_key if not lib.satisfied({"require_role": "admin", "require_scope": ["write"]}) with input as user(["admin"])

test_satisfied_two_kinds if not lib.satisfied({"require_role": "admin", "allow_authenticated": true}) with input as user(["x"])

test_satisfied_modifier_alone if not lib.satisfied({"require_scopes": ["read"]}) with input as user([])

test_satisfied_not_an_object if {
	not lib.satisfied("admin") with input as user(["admin"])
	not lib.satisfied(["admin"]) with input as user(["admin"])
}

test_satisfied_description_is_ignored if lib.satisfied({"require_role": "admin", "description": "ops"}) with input as user(["admin"])

# require_scopes and deny_apps.

test_require_scopes_user if lib.satisfied({"require_role": "admin", "require_scopes": ["read", "write"]}) with input as user(["admin"])

test_require_scopes_user_missing_scope if not lib.satisfied({"require_role": "admin", "require_scopes": ["read", "admin"]}) with input as user(["admin"])

test_require_scopes_never_app if {
	app_with_scopes := object.union(app(["admin"]), {"identity": {"scopes": ["read"]}})
	not lib.satisfied({"require_role": "admin", "require_scopes": ["read"]}) with input as app_with_scopes
}

test_require_scopes_empty_is_false if not lib.satisfied({"require_role": "admin", "require_scopes": []}) with input as user(["admin"])

test_require_scopes_false_is_absent if lib.satisfied({"require_role": "admin", "require_scopes": false}) with input as user(["admin"])

test_deny_apps if {
	row := {"require_role": "admin", "deny_apps": true}
	lib.satisfied(row) with input as user(["admin"])
	not lib.satisfied(row) with input as app(["admin"])
}

test_deny_apps_false if lib.satisfied({"require_role": "admin", "deny_apps": false}) with input as app(["admin"])

test_deny_apps_not_boolean_denies if not lib.satisfied({"require_role": "admin", "deny_apps": "yes"}) with input as user(["admin"])

# A row and the decorator it stands for agree, for every caller.

test_rows_agree_with_decorators if {
	every who in sample_callers {
		row_and_decorator_agree with input as who
	}
}

# Decorators are undefined when false: compare how often each holds (0 or 1).
row_and_decorator_agree if {
	holds({"require_role": "data_reader"}) == count({1 | lib.require_role("data_reader")})
	holds({"require_any_role": ["admin", "supervisor"]}) == count({1 | lib.require_any_role(["admin", "supervisor"])})
	holds({"require_all_roles": ["finance", "executive"]}) == count({1 | lib.require_all_roles(["finance", "executive"])})
	holds({"require_resource_role": {"client": "api", "role": "writer"}}) == count({1 | lib.require_resource_role("api", "writer")})
}

holds(row) := count({1 | lib.satisfied(row)})

sample_callers := [
	user([]),
	user(["data_reader"]),
	user(["admin"]),
	user(["finance"]),
	user(["finance", "executive"]),
	user(["supervisor", "data_reader", "finance", "executive"]),
	app([]),
	app(["data_reader", "finance", "executive", "admin"]),
]

sample_rows := [
	{"allow_authenticated": true},
	{"require_role": "data_reader"},
	{"require_any_role": ["admin", "supervisor"]},
	{"require_all_roles": ["finance", "executive"]},
	{"require_resource_role": {"client": "api", "role": "writer"}},
	{"require_role": "data_reader", "require_scopes": ["read"]},
	{"require_role": "data_reader", "deny_apps": true},
	{"require_role": "data_reader", "require_scopes": ["nope"]},
	{"allow_authenticated": false},
	{},
	{"require_role": "data_reader", "require_rolez": "x"},
	{"require_role": "data_reader", "require_any_role": ["admin"]},
	{"require_scopes": ["read"]},
	"data_reader",
]

# unmet is empty exactly when satisfied holds, for every caller and row.

test_unmet_empty_iff_satisfied if {
	every who in array.concat(sample_callers, [anonymous]) {
		every row in sample_rows {
			unmet_agrees(row) with input as who
		}
	}
}

unmet_agrees(row) if {
	lib.satisfied(row)
	lib.unmet(row) == set()
}

unmet_agrees(row) if {
	not lib.satisfied(row)
	count(lib.unmet(row)) > 0
}

# unmet messages.

test_unmet_anonymous if lib.unmet({"require_role": "x"}) == {"caller is not authenticated"} with input as anonymous

test_unmet_role if lib.unmet({"require_role": "data_reader"}) == {`requires role "data_reader"`} with input as user([])

test_unmet_any_role if lib.unmet({"require_any_role": ["supervisor", "admin"]}) == {`requires any of roles ["admin","supervisor"]`} with input as user([])

test_unmet_any_role_empty if lib.unmet({"require_any_role": []}) == {`requires any of roles []`} with input as user(["admin"])

test_unmet_all_roles if lib.unmet({"require_all_roles": ["finance", "executive"]}) == {`requires all of roles ["executive","finance"]`} with input as user(["finance"])

test_unmet_resource_role if lib.unmet({"require_resource_role": {"client": "api", "role": "admin"}}) == {`requires role "admin" of client "api"`} with input as user([])

test_unmet_resource_role_incomplete if lib.unmet({"require_resource_role": {"client": "api"}}) == {"has a requirement no caller can meet"} with input as user([])

test_unmet_allow_authenticated_false if lib.unmet({"allow_authenticated": false}) == {"has a requirement no caller can meet"} with input as user([])

test_unmet_scopes if {
	lib.unmet({"require_role": "a", "require_scopes": ["write", "admin"]}) == {`requires scopes ["admin","write"] on a delegated user token`} with input as user(["a"])
}

test_unmet_scopes_and_role if {
	lib.unmet({"require_role": "a", "require_scopes": ["read"]}) == {
		`requires role "a"`,
		`requires scopes ["read"] on a delegated user token`,
	} with input as app([])
}

test_unmet_deny_apps if lib.unmet({"require_role": "a", "deny_apps": true}) == {"does not admit app-only callers"} with input as app(["a"])

test_unmet_malformed if {
	lib.unmet({"require_role": "a", "require_any_role": ["b"]}) == {`has a malformed policy row (it must hold exactly one of ["allow_authenticated","require_all_roles","require_any_role","require_resource_role","require_role"], it holds ["require_any_role","require_role"])`} with input as user(["a"])
}

test_unmet_not_object if lib.unmet("a") == {"has a malformed policy row (the row is not an object)"} with input as user(["a"])

test_unmet_satisfied_is_empty if lib.unmet({"require_role": "a"}) == set() with input as user(["a"])

# row_errors (lint).

test_row_errors_good_rows if {
	every row in [
		{"allow_authenticated": true},
		{"require_role": "a", "description": "why"},
		{"require_any_role": ["a", "b"]},
		{"require_all_roles": ["a"], "require_scopes": ["read"], "deny_apps": true},
		{"require_resource_role": {"client": "api", "role": "writer"}},
		{"require_role": "a", "match": "data://items/*"},
	] {
		lib.row_errors(row) == set()
	}
}

test_row_errors_unknown_key if {
	lib.row_errors({"require_role": "a", "require_scope": ["x"]}) == {`unknown keys ["require_scope"]`}
}

test_row_errors_no_kind if {
	lib.row_errors({}) == {`it must hold exactly one of ["allow_authenticated","require_all_roles","require_any_role","require_resource_role","require_role"], it holds []`}
}

test_row_errors_not_object if lib.row_errors(["a"]) == {"the row is not an object"}

test_row_errors_wrong_types if {
	lib.row_errors({"require_role": ["a"], "deny_apps": "yes", "description": 1}) == {
		"require_role has the wrong type",
		"deny_apps has the wrong type",
		"description has the wrong type",
	}
	lib.row_errors({"require_any_role": []}) == {"require_any_role has the wrong type"}
	lib.row_errors({"require_all_roles": ["a", 1]}) == {"require_all_roles has the wrong type"}
	lib.row_errors({"allow_authenticated": true, "require_scopes": "read"}) == {"require_scopes has the wrong type"}
	lib.row_errors({"require_resource_role": {"client": "api"}}) == {"require_resource_role has the wrong type"}
	lib.row_errors({"require_resource_role": {"client": "api", "role": "w", "x": 1}}) == {"require_resource_role has the wrong type"}
	lib.row_errors({"allow_authenticated": "true"}) == {"allow_authenticated has the wrong type"}
	lib.row_errors({"require_role": "a", "match": 5}) == {"match has the wrong type"}
}
