package oauthproxy_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// sdkFetcher is the user's part of the Go SDK's flow: open the URL in the
// browser, approve, and hand the SDK what came back.
func sdkFetcher(t *testing.T) auth.AuthorizationCodeFetcher {
	return func(_ context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		b := newBrowser(t)
		form := b.get(args.URL).consent(t)
		pg := b.post(form.action, form.values("approve"), nil)
		if pg.back == nil {
			t.Fatalf("not sent back to the client: %+v", pg)
		}
		q := pg.back.Query()
		return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
	}
}

// sdkAuthorize runs the SDK's handler as a client does on a 401 from the
// MCP endpoint, then calls the endpoint with the token it got.
func sdkAuthorize(t *testing.T, r *rig, h *auth.AuthorizationCodeHandler) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.resource, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated call: %d", resp.StatusCode)
	}
	if err := h.Authorize(context.Background(), req, resp); err != nil {
		t.Fatalf("the Go SDK's authorization flow: %v", err)
	}
	ts, _ := h.TokenSource(context.Background())
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	req, _ = http.NewRequest(http.MethodGet, r.resource, nil)
	tok.SetAuthHeader(req)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("call with the SDK's token: %d", resp.StatusCode)
	}
}

func TestGoSDKClientWithRegistration(t *testing.T) {
	r := newRig(t, rigOptions{resourceServer: true})
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			RedirectURIs: []string{clientRedirect}, ClientName: "Go SDK", GrantTypes: []string{"authorization_code", "refresh_token"},
		}},
		AuthorizationCodeFetcher: sdkFetcher(t),
		RequestRefreshToken:      true,
	})
	if err != nil {
		t.Fatal(err)
	}
	sdkAuthorize(t, r, h)
}

func TestGoSDKClientWithMetadataDocument(t *testing.T) {
	d := newDocServer(t)
	id := d.document("/go-sdk.json", nil)
	r := newRig(t, rigOptions{resourceServer: true, mutate: trusting(d, true)})
	h, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		ClientIDMetadataDocumentConfig: &auth.ClientIDMetadataDocumentConfig{URL: id},
		RedirectURL:                    clientRedirect,
		AuthorizationCodeFetcher:       sdkFetcher(t),
		RequestRefreshToken:            true,
	})
	if err != nil {
		t.Fatal(err)
	}
	sdkAuthorize(t, r, h)
	if r.refusals("invalid_client") != 0 {
		t.Fatal("the SDK's token request was refused first")
	}
}
