package store_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/mcpguard/mcpguard/internal/store"
)

// STORAGE_ENCRYPTION_KEY takes URL-safe base64 without padding too (what
// many key generators print): such a key is read, not refused as "not base64".
func TestParseKeysURLSafe(t *testing.T) {
	k := bytes.Repeat([]byte{0xfb, 0xff}, 16) // encodes to '-' and '_', which standard base64 refuses
	enc := base64.RawURLEncoding.EncodeToString(k)
	if !strings.ContainsAny(enc, "-_") {
		t.Fatalf("test key %q does not exercise the URL-safe alphabet", enc)
	}
	keys, err := store.ParseKeys(enc)
	if err != nil || len(keys) != 1 || !bytes.Equal(keys[0], k) {
		t.Fatalf("URL-safe key: %x, %v", keys, err)
	}
}

// A bad key is named by its place in the list, counted from 1, so that an
// operator with several keys knows which one to fix.
func TestParseKeysNamesTheBadKey(t *testing.T) {
	good := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, c := range []struct{ in, want string }{
		{good + ",!!!", "key 2 is not base64"},
		{"!!!," + good, "key 1 is not base64"},
		{good + "," + good + ",dG9vIHNob3J0", "key 3 has 9 bytes"},
	} {
		_, err := store.ParseKeys(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseKeys(%q) = %v, want an error saying %q", c.in, err, c.want)
		}
	}
}

// Empty entries of the list (a trailing comma, ", ,") are skipped, not the
// end of the list.
func TestParseKeysSkipsEmptyEntries(t *testing.T) {
	a := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	b := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
	keys, err := store.ParseKeys(a + ", ," + b + ",")
	if err != nil || len(keys) != 2 || keys[1][0] != 2 {
		t.Fatalf("%d keys, %v", len(keys), err)
	}
	if _, err := store.ParseKeys(" , "); err == nil {
		t.Fatal("a list of empty entries accepted")
	}
}
