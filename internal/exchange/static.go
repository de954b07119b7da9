package exchange

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/mcpguard/mcpguard/internal/authn"
)

// Grant is the roles one roles-file entry gives.
type Grant struct {
	RealmRoles  []string            `json:"realm_roles"`
	ClientRoles map[string][]string `json:"client_roles"`
}

// RolesFile maps Entra identities to roles. Every matching entry adds its
// roles: the user's object id (or tenant/oid), each app role in the token
// (from a trusted tenant only: see AppRoleTenants), each group id, and, for
// an app-only caller, its application id.
type RolesFile struct {
	Users    map[string]Grant `json:"users"`
	AppRoles map[string]Grant `json:"app_roles"`
	Groups   map[string]Grant `json:"groups"`
	Apps     map[string]Grant `json:"apps"`
}

// StaticRoles resolves roles from a RolesFile.
type StaticRoles struct {
	file    RolesFile
	tenants AppRoleTenants
}

// LoadStaticRoles reads a roles file; unknown fields are an error, so a typo
// does not silently grant nothing. App roles count from tenants only.
func LoadStaticRoles(path string, tenants AppRoleTenants) (*StaticRoles, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("roles file: %w", err)
	}
	s, err := ParseStaticRoles(data, tenants)
	if err != nil {
		return nil, fmt.Errorf("roles file %s: %w", path, err)
	}
	return s, nil
}

// ParseStaticRoles parses roles-file JSON; app roles count from tenants only.
func ParseStaticRoles(data []byte, tenants AppRoleTenants) (*StaticRoles, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f RolesFile
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	// Object and tenant ids are GUIDs: match them whatever their case.
	users := make(map[string]Grant, len(f.Users))
	for k, g := range f.Users {
		users[strings.ToLower(k)] = g
	}
	f.Users = users
	return &StaticRoles{file: f, tenants: tenants}, nil
}

// Name implements Source.
func (*StaticRoles) Name() string { return "static" }

// Resolve implements Source.
func (s *StaticRoles) Resolve(_ context.Context, id *authn.Identity, _ string) (*Authorization, error) {
	var realm []string
	client := map[string][]string{}
	add := func(g Grant, ok bool) {
		if !ok {
			return
		}
		realm = append(realm, g.RealmRoles...)
		for c, roles := range g.ClientRoles {
			client[c] = append(client[c], roles...)
		}
	}
	g, ok := s.file.Users[strings.ToLower(id.ObjectID)]
	add(g, ok)
	g, ok = s.file.Users[strings.ToLower(id.TenantID+"/"+id.ObjectID)]
	add(g, ok)
	for _, r := range s.tenants.AppRoles(id) {
		g, ok := s.file.AppRoles[r]
		add(g, ok)
	}
	for _, gid := range id.Groups {
		g, ok := s.file.Groups[gid]
		add(g, ok)
	}
	// An app's roles are the app's: a user signed in through that client
	// app (a delegated token with the same azp) is not the app.
	if id.Kind == authn.KindApp && id.AppID != "" {
		g, ok := s.file.Apps[id.AppID]
		add(g, ok)
	}
	return newAuthorization("static", realm, client), nil
}
