package server

import "testing"

func TestCredentialHeaders(t *testing.T) {
	for name, credential := range map[string]bool{
		"Authorization": true, "Proxy-Authorization": true, "Cookie": true, "Cookie2": true,
		"X-Forwarded-Access-Token": true, "X-Ms-Token-Aad-Id-Token": true, "X-Api-Key": true, "X-Apikey": true,
		"X-Auth-Request-Access-Token": true, "X-Client-Secret": true, "X-Amzn-Oidc-Accesstoken": true,
		// What the SDK and tools legitimately read stays.
		"Content-Type": false, "Accept": false, "Mcp-Session-Id": false, "Mcp-Protocol-Version": false,
		"Last-Event-Id": false, "User-Agent": false, "X-Request-Id": false, "Traceparent": false,
	} {
		if got := isCredentialHeader(name); got != credential {
			t.Errorf("%s: credential=%v, want %v", name, got, credential)
		}
	}
}

func TestAddressedByIP(t *testing.T) {
	for host, ok := range map[string]bool{
		"127.0.0.1:9464": true, "127.0.0.1": true, "[::1]:9464": true, "::1": true, "10.1.2.3:9464": true,
		"localhost:9464": true, "LOCALHOST": true, "[fe80::1%eth0]:9464": true,
		"rebind.attacker.example:9464": false, "localhost.attacker.example": false, "": false, "127.0.0.1.nip.io:9464": false,
	} {
		if got := addressedByIP(host); got != ok {
			t.Errorf("Host %q: served=%v, want %v", host, got, ok)
		}
	}
}
