package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mcpguard/mcpguard/internal/policy"
)

// exitDiffers is policy replay's status when a decision differs.
const exitDiffers = 3

const replayAbout = `Decides logged decisions again with a policy and shows what differs. A line
is one decision as OPA's decision-log plugin wrote it: a line of its console
log (DECISION_LOGS=console, or console: true in OPA_CONFIG) or one event of
an upload to a decision-log service. Give it as the argument (quoted), or -
to read one per line from standard input (other lines are skipped).
The policy is the folder --policy-dir or a bundle file --bundle (a .tar.gz as
make bundle writes it; its signature is not checked: the file is yours).
The input is decided as logged: what the mask (policies/system_log.rego)
took out or replaced stays so, and a rule that read it may differ for that
alone; the masked paths are listed.
Exit status: 0 every decision the same, 3 one differs, 1 a line that could
not be replayed, 2 a bad command line.
`

// policyReplay is `mcpguard policy replay`.
func policyReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("policy replay", "policy replay [--policy-dir D | --bundle FILE] [--json] LINE|-", replayAbout)
	dir := fs.String("policy-dir", "policies", policyDirUsage)
	bundleFile := fs.String("bundle", "", "a bundle file to replay against instead of the folder")
	asJSON := fs.Bool("json", false, "print each replay as a JSON object, one per line")
	if wantsHelp(args) {
		fmt.Fprint(stdout, flagUsage(fs))
		return nil
	}
	if err := fs.Parse(args); err != nil {
		return &usageError{msg: "policy replay: " + err.Error(), usage: flagUsage(fs)}
	}
	if fs.NArg() != 1 {
		return &usageError{msg: "policy replay: give one decision log line, or - to read them from standard input", usage: flagUsage(fs)}
	}
	var eng *policy.Engine
	var err error
	if *bundleFile != "" {
		eng, err = policy.OpenBundle(ctx, *bundleFile)
	} else {
		eng, err = policy.New(ctx, *dir)
	}
	if err != nil {
		return err
	}
	defer eng.Close(ctx)

	var lines []string
	skipOthers := fs.Arg(0) == "-"
	if skipOthers {
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("policy replay: standard input: %w", err)
		}
	} else {
		lines = []string{fs.Arg(0)}
	}
	status := 0
	replayed := 0
	for _, line := range lines {
		logged, err := policy.ParseLogged([]byte(line))
		if err != nil {
			if skipOthers && strings.TrimSpace(line) != "" && !strings.Contains(line, `"decision_id"`) {
				continue // a log line of another kind
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			fmt.Fprintln(stderr, "policy replay:", err)
			status = max(status, 1)
			continue
		}
		r, err := eng.Replay(ctx, logged)
		if err != nil {
			fmt.Fprintln(stderr, "policy replay:", err)
			status = max(status, 1)
			continue
		}
		replayed++
		if len(r.Differences) > 0 && status == 0 {
			status = exitDiffers
		}
		if *asJSON {
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			fmt.Fprintln(stdout, string(b))
			continue
		}
		printReplay(stdout, r)
	}
	if replayed == 0 && status == 0 {
		fmt.Fprintln(stderr, "policy replay: no decision of mcpguard's in the input")
		status = 1
	}
	if status != 0 {
		return exitError(status)
	}
	return nil
}

func printReplay(w io.Writer, r *policy.Replayed) {
	rev := "revision " + r.Revision
	if r.LoggedRevision != r.Revision {
		rev = fmt.Sprintf("revision logged %s, now %s", orNone(r.LoggedRevision), r.Revision)
	}
	if len(r.Differences) == 0 {
		fmt.Fprintf(w, "%s (%s): same [%s]\n", r.DecisionID, r.Path, rev)
	} else {
		fmt.Fprintf(w, "%s (%s): DIFFERS [%s]\n", r.DecisionID, r.Path, rev)
		for _, d := range r.Differences {
			fmt.Fprintf(w, "  - %s\n", d)
		}
	}
	if len(r.MaskedPaths) > 0 {
		fmt.Fprintf(w, "  (decided as logged, masked: %s)\n", strings.Join(r.MaskedPaths, ", "))
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
