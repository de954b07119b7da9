package server

import (
	"context"
	"fmt"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// catalog is what the server offers, read once at start through an
// in-memory MCP client, with each tool's annotations converted for the policy.
type catalog struct {
	tools           []*mcp.Tool
	resources       []*mcp.Resource
	templates       []*mcp.ResourceTemplate
	prompts         []*mcp.Prompt
	toolAnnotations map[string]*policy.Fragment
}

func readCatalog(ctx context.Context, s *mcp.Server) (*catalog, error) {
	ct, st := mcp.NewInMemoryTransports()
	ss, err := s.Connect(ctx, st, nil)
	if err != nil {
		return nil, err
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "mcpguard-catalog"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		return nil, err
	}
	defer cs.Close()
	c := &catalog{toolAnnotations: map[string]*policy.Fragment{}}
	caps := cs.InitializeResult().Capabilities
	if caps.Tools != nil {
		for t, err := range cs.Tools(ctx, nil) {
			if err != nil {
				return nil, err
			}
			c.tools = append(c.tools, t)
			ann := map[string]any{}
			if t.Annotations != nil {
				f, err := policy.NewFragment(t.Annotations)
				if err != nil {
					return nil, fmt.Errorf("tool %s annotations: %w", t.Name, err)
				}
				c.toolAnnotations[t.Name] = f
				continue
			}
			c.toolAnnotations[t.Name] = policy.MustFragment(ann)
		}
	}
	if caps.Resources != nil {
		for r, err := range cs.Resources(ctx, nil) {
			if err != nil {
				return nil, err
			}
			c.resources = append(c.resources, r)
		}
		for r, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				return nil, err
			}
			c.templates = append(c.templates, r)
		}
	}
	if caps.Prompts != nil {
		for p, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				return nil, err
			}
			c.prompts = append(c.prompts, p)
		}
	}
	return c, nil
}

func (c *catalog) toolCandidates(ts []*mcp.Tool) []policy.Candidate {
	out := make([]policy.Candidate, len(ts))
	for i, t := range ts {
		out[i] = policy.Candidate{Name: t.Name, Annotations: c.toolAnnotations[t.Name]}
	}
	return out
}

// Unreachable is a registered item no caller could ever be allowed.
type Unreachable struct {
	Kind string // tool, resource, resource_template, prompt
	Name string
}

// Unreachable lists registered tools, resources and prompts that no rule of
// the policy can ever allow, whoever the caller (found by partially
// evaluating allow with the caller, roles and arguments unknown).
func (s *Server) Unreachable(ctx context.Context) ([]Unreachable, error) {
	var out []Unreachable
	check := func(kind, name string, in *policy.Input) error {
		ok, err := s.engine.CanAllow(ctx, in)
		if err != nil {
			return fmt.Errorf("%s %s: %w", kind, name, err)
		}
		if !ok {
			out = append(out, Unreachable{Kind: kind, Name: name})
		}
		return nil
	}
	for _, t := range s.catalog.tools {
		in := &policy.Input{}
		in.MCP.Method = "tools/call"
		in.MCP.Tool = &policy.Tool{Name: t.Name, Annotations: s.catalog.toolAnnotations[t.Name]}
		if err := check("tool", t.Name, in); err != nil {
			return nil, err
		}
	}
	for _, r := range s.catalog.resources {
		in := &policy.Input{}
		in.MCP.Method, in.MCP.ResourceURI = "resources/read", r.URI
		if err := check("resource", r.URI, in); err != nil {
			return nil, err
		}
	}
	for _, p := range s.catalog.prompts {
		in := &policy.Input{}
		in.MCP.Method, in.MCP.Prompt = "prompts/get", &policy.Prompt{Name: p.Name}
		if err := check("prompt", p.Name, in); err != nil {
			return nil, err
		}
	}
	return out, nil
}
