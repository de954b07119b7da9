package oauthproxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mcpguard/mcpguard/internal/store"
)

// refreshAhead: an upstream token closer than this to expiry is refreshed
// before it is handed on.
const refreshAhead = time.Minute

// Resolve turns a proxy access token into the caller's upstream Entra access
// token, refreshed upstream when it expires within a minute. The server
// verifies that Entra token as any other; the proxy token never goes further.
//
// ErrNotProxyToken: not a token this proxy issued (another issuer, not a
// compact JWS): the server may try it as an Entra token. ErrInvalidToken
// (wrapped): a token of this proxy's that is bad, expired, for another
// resource, or revoked. ErrUnavailable (wrapped): store or Entra unreachable.
func (p *Proxy) Resolve(ctx context.Context, token string) (string, error) {
	now := p.now()
	c, err := p.keys.verify(token, p.cfg.Issuer, p.cfg.Resource, now)
	if err != nil {
		if errors.Is(err, ErrNotProxyToken) {
			return "", err
		}
		reason := "token_invalid"
		switch {
		case errors.Is(err, errAudience):
			reason = "token_audience"
		case errors.Is(err, errExpired):
			reason = "token_expired"
		}
		p.refuse(ctx, reason, err.Error())
		return "", err
	}
	var mark used
	switch err := p.get(ctx, key(kindRevokedJTI, c.ID), &mark); {
	case err == nil:
		p.refuse(ctx, "token_revoked", "access token revoked", "client_id", c.ClientID)
		return "", fmt.Errorf("%w: revoked", ErrInvalidToken)
	case !errors.Is(err, store.ErrNotFound):
		return "", err
	}
	var fam family
	if err := p.get(ctx, key(kindFamily, c.Session), &fam); err != nil || fam.Revoked || !now.Before(fam.Expires) || fam.ClientID != c.ClientID {
		if errors.Is(err, ErrUnavailable) {
			return "", err
		}
		p.refuse(ctx, "token_revoked", "the token's sign-in is revoked or ended", "client_id", c.ClientID)
		return "", fmt.Errorf("%w: sign-in revoked or ended", ErrInvalidToken)
	}
	var ut upstreamTokens
	if err := p.get(ctx, key(kindUpstream, c.Session), &ut); err != nil {
		if errors.Is(err, ErrUnavailable) {
			return "", err
		}
		p.refuse(ctx, "token_revoked", "the sign-in's upstream tokens are gone", "client_id", c.ClientID)
		return "", fmt.Errorf("%w: upstream tokens gone", ErrInvalidToken)
	}
	if ut.Expires.Sub(now) > refreshAhead {
		return ut.AccessToken, nil
	}
	return p.refreshUpstream(ctx, c.Session, fam, ut)
}

// upstreamLockTTL bounds how long one refresh may hold the family's lock.
const upstreamLockTTL = 30 * time.Second

// refreshUpstream refreshes a family's Entra token, once across replicas: the
// holder of the lock refreshes; the others use the current token while it
// lasts, or wait (bounded) for the new one.
func (p *Proxy) refreshUpstream(ctx context.Context, famID string, fam family, ut upstreamTokens) (string, error) {
	if ut.RefreshToken == "" {
		if p.now().Before(ut.Expires) {
			return ut.AccessToken, nil
		}
		p.refuse(ctx, "upstream_expired", "upstream token expired and there is no refresh token", "client_id", fam.ClientID)
		return "", fmt.Errorf("%w: upstream sign-in expired", ErrInvalidToken)
	}
	lock := key(kindUpstreamLock, famID)
	won, err := p.claim(ctx, lock, used{}, upstreamLockTTL)
	if err != nil {
		return "", err
	}
	if !won {
		for range 20 {
			if p.now().Before(ut.Expires) {
				return ut.AccessToken, nil
			}
			select {
			case <-ctx.Done():
				return "", fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
			if err := p.get(ctx, key(kindUpstream, famID), &ut); err != nil {
				if errors.Is(err, ErrUnavailable) {
					return "", err
				}
				return "", fmt.Errorf("%w: upstream tokens gone during refresh", ErrInvalidToken)
			}
		}
		return "", fmt.Errorf("%w: upstream refresh in progress elsewhere", ErrUnavailable)
	}
	defer p.del(context.WithoutCancel(ctx), lock)
	// Another replica may have refreshed between our read and our lock.
	var fresh upstreamTokens
	if err := p.get(ctx, key(kindUpstream, famID), &fresh); err == nil && fresh.Expires.Sub(p.now()) > refreshAhead {
		return fresh.AccessToken, nil
	}
	nt, err := p.upstreamRefresh(ctx, ut.RefreshToken, fam.Scopes)
	if err != nil {
		if errors.Is(err, errUpstreamGrant) {
			p.refuse(ctx, "upstream_refresh", err.Error(), "client_id", fam.ClientID)
			_ = p.revokeFamily(ctx, famID, "upstream refresh refused") // refused either way; a failure is logged
			return "", fmt.Errorf("%w: upstream sign-in ended", ErrInvalidToken)
		}
		p.logger.Warn("upstream refresh failed", "error", err, "client_id", fam.ClientID)
		if p.now().Before(ut.Expires) {
			return ut.AccessToken, nil
		}
		return "", err
	}
	if nt.RefreshToken == "" {
		nt.RefreshToken = ut.RefreshToken
	}
	if err := p.put(ctx, key(kindUpstream, famID), nt, fam.Expires.Sub(p.now())); err != nil {
		return "", err
	}
	// A revocation may have landed while Entra answered: do not keep tokens
	// for a revoked sign-in.
	var again family
	if err := p.get(ctx, key(kindFamily, famID), &again); err != nil || again.Revoked {
		p.del(ctx, key(kindUpstream, famID))
		return "", fmt.Errorf("%w: sign-in revoked", ErrInvalidToken)
	}
	return nt.AccessToken, nil
}

// errUpstreamGrant: Entra refused the refresh token itself (invalid_grant):
// the user must sign in again.
var errUpstreamGrant = errors.New("the identity provider refused the refresh token")

// upstreamRefresh is Entra's refresh_token grant. It is written out rather
// than left to oauth2's TokenSource because Entra's v2 endpoint wants the
// scope on refresh, which TokenSource does not send.
func (p *Proxy) upstreamRefresh(ctx context.Context, refreshToken string, scopes []string) (*upstreamTokens, error) {
	form := url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
		"client_id":     {p.oauth.ClientID},
		"client_secret": {p.oauth.ClientSecret},
		"scope":         {strings.Join(p.upstreamScopes(scopes), " ")},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.oauth.Endpoint.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := p.upstream.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: upstream token endpoint: %v", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: upstream token endpoint: %v", ErrUnavailable, err)
	}
	var tr struct {
		AccessToken  string          `json:"access_token"`
		RefreshToken string          `json:"refresh_token"`
		ExpiresIn    json.RawMessage `json:"expires_in"`
		Error        string          `json:"error"`
	}
	_ = json.Unmarshal(body, &tr)
	if resp.StatusCode != http.StatusOK || tr.AccessToken == "" {
		if tr.Error == "invalid_grant" {
			return nil, fmt.Errorf("%w (status %d)", errUpstreamGrant, resp.StatusCode)
		}
		return nil, fmt.Errorf("%w: upstream token endpoint: status %d %s", ErrUnavailable, resp.StatusCode, tr.Error)
	}
	secs, err := strconv.ParseInt(strings.Trim(string(tr.ExpiresIn), `"`), 10, 64)
	if err != nil || secs <= 0 {
		secs = 3600
	}
	return &upstreamTokens{AccessToken: tr.AccessToken, RefreshToken: tr.RefreshToken, Expires: p.now().Add(time.Duration(secs) * time.Second)}, nil
}
