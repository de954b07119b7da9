package devidp

import _ "embed"

// RolesJSON is the development roles file used when ROLE_SOURCE=static and
// no ROLES_FILE is given with DEV_IDP=true: alice (data_reader) and bob
// (finance, executive, client role api/writer) by object id, and app roles
// mapped one to one, with api.writer as client role writer on client api.
//
//go:embed roles.json
var RolesJSON []byte
