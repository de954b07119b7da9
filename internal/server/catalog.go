package server

import (
	"context"

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
			c.toolAnnotations[t.Name] = toolHints(t.Annotations).Fragment()
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

// toolHints reads a tool's annotations; a tool without any gets the
// protocol's defaults, as one that left each hint out.
func toolHints(a *mcp.ToolAnnotations) policy.ToolHints {
	if a == nil {
		return policy.ToolHints{}
	}
	return policy.ToolHints{Title: a.Title, ReadOnly: a.ReadOnlyHint, Destructive: a.DestructiveHint,
		Idempotent: a.IdempotentHint, OpenWorld: a.OpenWorldHint}
}

// toolNames are the registered tools' names.
func (c *catalog) toolNames() []string {
	names := make([]string, len(c.tools))
	for i, t := range c.tools {
		names[i] = t.Name
	}
	return names
}

func (c *catalog) toolCandidates(ts []*mcp.Tool) []policy.Candidate {
	out := make([]policy.Candidate, len(ts))
	for i, t := range ts {
		out[i] = policy.Candidate{Name: t.Name, Annotations: c.toolAnnotations[t.Name]}
	}
	return out
}
