package main

import (
	"context"
	"encoding/json"
	"io"

	"github.com/mcpguard/mcpguard/internal/server"
)

const catalogAbout = `Prints what the server registers (the tools/ package), as JSON: tools,
resources, resource_templates and prompts, each keyed as data.mcp.catalog keys its
rows (tool name, URI, URI template, prompt name), with the fields MCP lists for
it (description, inputSchema, arguments, ...). A tool's annotations are those the
policy reads in input.mcp.tool.annotations, the protocol's defaults applied.
It reads no configuration and no policy. test/policy/catalog.json is this output
(go test ./cmd/mcpguard fails when it is stale).
`

// policyCatalog is `mcpguard policy catalog`.
func policyCatalog(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("policy catalog", "policy catalog", catalogAbout)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	c, err := server.ReadCatalog(ctx, nil)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}
