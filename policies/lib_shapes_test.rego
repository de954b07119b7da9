package mcp.lib_test

import data.mcp.lib

# Arguments and rows of the wrong shape hold for nobody, and the reasons and
# lint messages about them name no requirement the row does not make.

# require_all_roles: only a non-empty list or set. An object's values, or an
# empty set, must not make `every` hold.
test_require_all_roles_object_or_empty_set_is_false if {
	not lib.require_all_roles({"a": "finance"}) with input as user(["finance"])
	not lib.require_all_roles(set()) with input as user(["finance"])
	not lib.non_empty_list({"a": "finance"})
	not lib.non_empty_list(set())
	not lib.non_empty_list("finance")
}

# The row's require_all_roles must be a list too: an object's values do not
# count as the roles it requires.
test_satisfied_require_all_roles_object_is_false if {
	not lib.satisfied({"require_all_roles": {"a": "finance"}}) with input as user(["finance"])
	not lib.satisfied({"require_all_roles": {"a": "finance"}, "description": "d"}) with input as user(["finance"])
}

# satisfied checks authentication itself, for a row of several keys as for a
# row of one: a team rule calling it need not check again.
test_satisfied_multi_key_row_refuses_anonymous if {
	not lib.satisfied({"allow_authenticated": true, "description": "d"}) with input as anonymous
	not lib.satisfied({"require_role": "data_reader", "deny_apps": false}) with input as object.union(anonymous, {"authorization": {"roles": ["data_reader"]}})
	lib.satisfied({"allow_authenticated": true, "description": "d"}) with input as user([])
}

# A requirement whose value is false (or otherwise unusable) is reported as
# one no caller can meet, not as a requirement of "false".
test_unmet_false_requirement if {
	every row in [
		{"require_role": false},
		{"require_any_role": false},
		{"require_all_roles": false},
		{"require_resource_role": {"client": "api", "role": false}},
		{"require_resource_role": {"client": false, "role": "writer"}},
	] {
		lib.unmet(row) == {"has a requirement no caller can meet"} with input as user([])
	}
}

# A require_any_role that is a single string is quoted as it is: sorting it
# would be a builtin error, which the engine turns into a failed evaluation.
test_unmet_any_role_string if {
	lib.unmet({"require_any_role": "admin"}) == {`requires any of roles "admin"`} with input as user([])
}

# Lint names a require_resource_role whose client or role is not a string,
# and one that is not an object (count on a number would err).
test_row_errors_resource_role_types if {
	every value in [{"client": 5, "role": "w"}, {"client": "api", "role": 5}, 5, "ab", ["a", "b"]] {
		lib.row_errors({"require_resource_role": value}) == {"require_resource_role has the wrong type"}
	}
}

test_row_errors_scalar_rows if {
	every row in [5, "ab", true, null] {
		lib.row_errors(row) == {"the row is not an object"}
	}
}
