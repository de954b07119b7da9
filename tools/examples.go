package tools

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Register adds this package's tools, resources and prompts to s.
func Register(s *mcp.Server) {
	mcp.AddTool(s, &mcp.Tool{
		Name:        "get_current_user",
		Description: "Who is calling: identity, roles, and which example tools the policy lets this caller use.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: ptr(false)},
	}, getCurrentUser)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "read_critical_data",
		Description: "Query the critical on-premise data store (policy: role data_reader).",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: ptr(false)},
	}, readCriticalData)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "approve_budget",
		Description: "Approve a budget request (policy: roles finance and executive).",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
	}, approveBudget)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "admin_operation",
		Description: "Run an administrative operation (policy: role admin or supervisor).",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), OpenWorldHint: ptr(false)},
	}, adminOperation)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "write_api_data",
		Description: "Write a record through the internal API (policy: client role writer on client api).",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(false), OpenWorldHint: ptr(false)},
	}, writeAPIData)

	s.AddResource(&mcp.Resource{
		URI: "data://server-info", Name: "server-info", MIMEType: "application/json",
		Description: "Facts about this server.",
	}, serverInfo)
	s.AddResourceTemplate(&mcp.ResourceTemplate{
		URITemplate: "data://items/{item_id}", Name: "item", MIMEType: "application/json",
		Description: "One item of the critical data store (policy: role data_reader).",
	}, readItem)

	s.AddPrompt(&mcp.Prompt{
		Name:        "summarize_access",
		Description: "Ask the model to explain what the caller may do here.",
		Arguments:   []*mcp.PromptArgument{{Name: "focus", Description: "a tool or topic to focus on"}},
	}, summarizeAccess)
}

func ptr[T any](v T) *T { return &v }

// examples lists the tools get_current_user asks the policy about.
var examples = []string{"read_critical_data", "approve_budget", "admin_operation", "write_api_data"}

// CurrentUser is get_current_user's result.
type CurrentUser struct {
	Caller Caller `json:"caller"`
	// Can says, per example tool, what the policy answers for this caller.
	Can map[string]bool `json:"can"`
}

func getCurrentUser(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, CurrentUser, error) {
	a, err := FromContext(ctx)
	if err != nil {
		return nil, CurrentUser{}, err
	}
	out := CurrentUser{Caller: a.Caller, Can: map[string]bool{}}
	for _, name := range examples {
		out.Can[name] = a.Can(ctx, Question{Method: "tools/call", Name: name, Arguments: map[string]any{}}).Allow
	}
	return nil, out, nil
}

// QueryInput is read_critical_data's input.
type QueryInput struct {
	Query string `json:"query" jsonschema:"what to look up"`
	Limit int    `json:"limit,omitempty" jsonschema:"at most this many records (default 10)"`
}

// QueryResult is read_critical_data's result.
type QueryResult struct {
	Query     string   `json:"query"`
	Records   []string `json:"records"`
	ReadBy    string   `json:"read_by"`
	Timestamp string   `json:"timestamp"`
}

func readCriticalData(ctx context.Context, _ *mcp.CallToolRequest, in QueryInput) (*mcp.CallToolResult, QueryResult, error) {
	a, err := FromContext(ctx)
	if err != nil {
		return nil, QueryResult{}, err
	}
	limit := in.Limit
	if limit <= 0 || limit > 100 {
		limit = 10
	}
	recs := make([]string, 0, 3)
	for i := 1; i <= 3 && i <= limit; i++ {
		recs = append(recs, fmt.Sprintf("record %d matching %q", i, in.Query))
	}
	return nil, QueryResult{Query: in.Query, Records: recs, ReadBy: a.Caller.displayName(), Timestamp: time.Now().UTC().Format(time.RFC3339)}, nil
}

// BudgetInput is approve_budget's input.
type BudgetInput struct {
	Department string  `json:"department" jsonschema:"the department asking"`
	Amount     float64 `json:"amount" jsonschema:"the amount to approve"`
}

// BudgetResult is approve_budget's result.
type BudgetResult struct {
	Approved   bool    `json:"approved"`
	Department string  `json:"department"`
	Amount     float64 `json:"amount"`
	ApprovedBy string  `json:"approved_by"`
}

func approveBudget(ctx context.Context, _ *mcp.CallToolRequest, in BudgetInput) (*mcp.CallToolResult, BudgetResult, error) {
	a, err := FromContext(ctx)
	if err != nil {
		return nil, BudgetResult{}, err
	}
	if in.Amount <= 0 {
		return nil, BudgetResult{}, fmt.Errorf("amount must be positive")
	}
	return nil, BudgetResult{Approved: true, Department: in.Department, Amount: in.Amount, ApprovedBy: a.Caller.displayName()}, nil
}

// AdminInput is admin_operation's input.
type AdminInput struct {
	Operation string `json:"operation" jsonschema:"the operation to run, e.g. rotate-logs"`
}

// AdminResult is admin_operation's result.
type AdminResult struct {
	Operation string `json:"operation"`
	Status    string `json:"status"`
	By        string `json:"by"`
}

func adminOperation(ctx context.Context, _ *mcp.CallToolRequest, in AdminInput) (*mcp.CallToolResult, AdminResult, error) {
	a, err := FromContext(ctx)
	if err != nil {
		return nil, AdminResult{}, err
	}
	return nil, AdminResult{Operation: in.Operation, Status: "completed", By: a.Caller.displayName()}, nil
}

// WriteInput is write_api_data's input.
type WriteInput struct {
	Key   string `json:"key" jsonschema:"the record key"`
	Value string `json:"value" jsonschema:"the value to write"`
}

// WriteResult is write_api_data's result.
type WriteResult struct {
	Key     string `json:"key"`
	Written bool   `json:"written"`
	By      string `json:"by"`
}

func writeAPIData(ctx context.Context, _ *mcp.CallToolRequest, in WriteInput) (*mcp.CallToolResult, WriteResult, error) {
	a, err := FromContext(ctx)
	if err != nil {
		return nil, WriteResult{}, err
	}
	if strings.TrimSpace(in.Key) == "" {
		return nil, WriteResult{}, fmt.Errorf("key is required")
	}
	return nil, WriteResult{Key: in.Key, Written: true, By: a.Caller.displayName()}, nil
}

func (c *Caller) displayName() string {
	switch {
	case c.PreferredUsername != "":
		return c.PreferredUsername
	case c.Name != "":
		return c.Name
	case c.AppID != "":
		return "app:" + c.AppID
	}
	return c.Kind
}

var started = time.Now()

func serverInfo(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	body := fmt.Sprintf(`{"name":"mcpguard","go":%q,"uptime_seconds":%d}`, runtime.Version(), int(time.Since(started).Seconds()))
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "application/json", Text: body}}}, nil
}

func readItem(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	id, ok := strings.CutPrefix(req.Params.URI, "data://items/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return nil, mcp.ResourceNotFoundError(req.Params.URI)
	}
	body := fmt.Sprintf(`{"id":%q,"name":"item %s","classification":"confidential"}`, id, id)
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "application/json", Text: body}}}, nil
}

func summarizeAccess(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	a, err := FromContext(ctx)
	if err != nil {
		return nil, err
	}
	focus := req.Params.Arguments["focus"]
	if focus == "" {
		focus = "all tools"
	}
	text := fmt.Sprintf("I am %s with roles %v. Call get_current_user and explain, focusing on %s, what I may do on this server and why.",
		a.Caller.displayName(), a.Caller.Roles, focus)
	return &mcp.GetPromptResult{
		Description: "Explain the caller's access",
		Messages:    []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: text}}},
	}, nil
}
