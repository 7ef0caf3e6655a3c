// The Argo CD health checks and actions of deploy/argocd/, run as Argo CD runs them (package
// argocd), and kstatus (sigs.k8s.io/cli-utils, what Flux's health checks read) on objects captured
// from the operator: testdata/, or $RECUR_GITOPS_FIXTURES when tests/gitops_fixtures.rs captured
// them just now.
package gitops

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"

	"github.com/recur-dev/recur/tests/gitops/argocd"
)

const deployDir = "../../deploy/argocd"

// What each captured state must read as: Argo CD's health (and a piece of its message), and
// kstatus' status. kstatus reads Stalled=True as Failed, Ready=False (without Stalled) as
// InProgress, Ready=True as Current, and knows nothing of suspension.
var expected = map[string]struct {
	kind    string
	health  string
	message string
	kstatus status.Status
}{
	"task-ready":              {"RecurringTask", "Healthy", "Scheduled", status.CurrentStatus},
	"task-invalid-schedule":   {"RecurringTask", "Degraded", "InvalidSchedule", status.FailedStatus},
	"task-suspended":          {"RecurringTask", "Suspended", "maintenance until Monday", status.CurrentStatus},
	"reminder-pending":        {"Reminder", "Healthy", "Scheduled", status.CurrentStatus},
	"reminder-sent":           {"Reminder", "Healthy", "Sent", status.CurrentStatus},
	"reminder-failed":         {"Reminder", "Degraded", "UserMismatch", status.FailedStatus},
	"reminder-task-not-found": {"Reminder", "Progressing", "TaskNotFound", status.InProgressStatus},
	"reminder-task-suspended": {"Reminder", "Suspended", "TaskSuspended", status.CurrentStatus},
	"reminder-skipped":        {"Reminder", "Healthy", "OccurrenceChanged", status.CurrentStatus},
	"backfill-complete":       {"Backfill", "Healthy", "Complete", status.CurrentStatus},
	"backfill-failed":         {"Backfill", "Degraded", "TooManyOccurrences", status.FailedStatus},
	"backfill-running":        {"Backfill", "Progressing", "Backfilling", status.InProgressStatus},
	"backfill-task-suspended": {"Backfill", "Suspended", "TaskSuspended", status.InProgressStatus},
}

func fixtureDir() string {
	if dir := os.Getenv("RECUR_GITOPS_FIXTURES"); dir != "" {
		return dir
	}
	return "testdata"
}

func load(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir(), name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	// As the API machinery decodes it for Argo CD and kstatus: integers are int64.
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	return u.Object
}

// bumpGeneration adds one to metadata.generation (int64 from load, float64 from an action).
func bumpGeneration(obj map[string]any) {
	meta := obj["metadata"].(map[string]any)
	switch g := meta["generation"].(type) {
	case int64:
		meta["generation"] = g + 1
	case float64:
		meta["generation"] = g + 1
	}
}

func script(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func healthScript(t *testing.T, kind string) string {
	for _, h := range argocd.HealthScripts {
		if h.Kind == kind {
			return script(t, h.File)
		}
	}
	t.Fatalf("no health script for %s", kind)
	return ""
}

func kstatusOf(t *testing.T, obj map[string]any) *status.Result {
	t.Helper()
	res, err := status.Compute(&unstructured.Unstructured{Object: deepCopy(obj)})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func deepCopy(obj map[string]any) map[string]any {
	b, _ := json.Marshal(obj)
	u := &unstructured.Unstructured{}
	_ = u.UnmarshalJSON(b)
	return u.Object
}

// Every fixture is there, and no fixture lacks an expectation.
func TestFixturesAreComplete(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(fixtureDir(), "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		seen[name] = true
		if _, ok := expected[name]; !ok {
			t.Errorf("fixture %s has no expectation", name)
		}
	}
	for name := range expected {
		if !seen[name] {
			t.Errorf("fixture %s is missing from %s", name, fixtureDir())
		}
	}
}

func TestHealthAndKstatusOnCapturedObjects(t *testing.T) {
	for name, want := range expected {
		t.Run(name, func(t *testing.T) {
			obj := load(t, name)
			if obj["kind"] != want.kind {
				t.Fatalf("kind %v, want %s", obj["kind"], want.kind)
			}
			h, err := argocd.HealthOf(obj, healthScript(t, want.kind))
			if err != nil {
				t.Fatal(err)
			}
			if h.Status != want.health || !strings.Contains(h.Message, want.message) {
				t.Errorf("Argo CD: %s %q, want %s with %q", h.Status, h.Message, want.health, want.message)
			}
			k := kstatusOf(t, obj)
			if k.Status != want.kstatus {
				t.Errorf("kstatus: %s %q, want %s", k.Status, k.Message, want.kstatus)
			}
			t.Logf("Argo CD %s %q | kstatus %s %q", h.Status, h.Message, k.Status, k.Message)
		})
	}
}

// A generation recur has not observed yet (synthesized from each captured object by bumping
// metadata.generation: the operator observes a new one within milliseconds, too fast to
// capture): Progressing for Argo CD, InProgress for kstatus, whatever the status says.
func TestAnUnobservedGenerationIsProgressing(t *testing.T) {
	for name, want := range expected {
		t.Run(name, func(t *testing.T) {
			obj := load(t, name)
			bumpGeneration(obj)
			h, err := argocd.HealthOf(obj, healthScript(t, want.kind))
			if err != nil {
				t.Fatal(err)
			}
			if h.Status != "Progressing" {
				t.Errorf("Argo CD: %s %q, want Progressing", h.Status, h.Message)
			}
			if k := kstatusOf(t, obj); k.Status != status.InProgressStatus {
				t.Errorf("kstatus: %s %q, want InProgress", k.Status, k.Message)
			}
		})
	}
}

// An object recur has not seen at all (no status): Progressing for Argo CD. kstatus finds no
// observedGeneration and no conditions, and says Current: it cannot tell a resource without a
// controller from one whose controller is late.
func TestAnObjectWithoutStatus(t *testing.T) {
	for name, want := range expected {
		t.Run(name, func(t *testing.T) {
			obj := load(t, name)
			delete(obj, "status")
			h, err := argocd.HealthOf(obj, healthScript(t, want.kind))
			if err != nil {
				t.Fatal(err)
			}
			if h.Status != "Progressing" {
				t.Errorf("Argo CD: %s %q, want Progressing", h.Status, h.Message)
			}
			if k := kstatusOf(t, obj); k.Status != status.CurrentStatus {
				t.Errorf("kstatus: %s %q, want Current", k.Status, k.Message)
			}
		})
	}
}

var token = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)

func TestActions(t *testing.T) {
	discovery := script(t, "actions/discovery.lua")
	argocd.Now = func() time.Time { return time.Date(2026, 5, 1, 9, 30, 5, 0, time.UTC) }
	defer func() { argocd.Now = time.Now }()

	ready := load(t, "task-ready")
	actions, err := argocd.Discover(ready, discovery)
	if err != nil {
		t.Fatal(err)
	}
	for name, disabled := range map[string]bool{"run-now": false, "suspend": false, "resume": true} {
		if a, ok := actions[name]; !ok || a.Disabled != disabled {
			t.Errorf("on a running task, %s: %+v (present %v), want disabled=%v", name, a, ok, disabled)
		}
	}
	paused := load(t, "task-suspended")
	actions, err = argocd.Discover(paused, discovery)
	if err != nil {
		t.Fatal(err)
	}
	for name, disabled := range map[string]bool{"run-now": true, "suspend": true, "resume": false} {
		if a, ok := actions[name]; !ok || a.Disabled != disabled {
			t.Errorf("on a suspended task, %s: %+v (present %v), want disabled=%v", name, a, ok, disabled)
		}
	}

	// run-now: a fresh, valid token; pressed again in the same second, another one.
	out, err := argocd.Act(ready, script(t, "actions/run-now/action.lua"))
	if err != nil {
		t.Fatal(err)
	}
	first := annotation(out, "recur.dev/run-now")
	if first != "argocd-20260501-093005" || !token.MatchString(first) {
		t.Errorf("run-now token %q", first)
	}
	again, err := argocd.Act(out, script(t, "actions/run-now/action.lua"))
	if err != nil {
		t.Fatal(err)
	}
	if second := annotation(again, "recur.dev/run-now"); second == first || !token.MatchString(second) {
		t.Errorf("run-now pressed twice in a second: %q then %q", first, second)
	}
	assertOnlyChanged(t, ready, out, "metadata")
	assertPatch(t, ready, out, `{"metadata":{"annotations":{"recur.dev/run-now":"argocd-20260501-093005"}}}`)
	writePatch(t, "run-now", ready, out)

	// suspend, then resume: spec.suspend flips, suspendReason set then cleared.
	out, err = argocd.Act(ready, script(t, "actions/suspend/action.lua"))
	if err != nil {
		t.Fatal(err)
	}
	spec := out["spec"].(map[string]any)
	if spec["suspend"] != true || spec["suspendReason"] != "suspended from Argo CD on 2026-05-01T09:30:05Z" {
		t.Errorf("suspend: %v", spec)
	}
	assertOnlyChanged(t, ready, out, "spec")
	assertPatch(t, ready, out, `{"spec":{"suspend":true,"suspendReason":"suspended from Argo CD on 2026-05-01T09:30:05Z"}}`)
	writePatch(t, "suspend", ready, out)
	out, err = argocd.Act(paused, script(t, "actions/resume/action.lua"))
	if err != nil {
		t.Fatal(err)
	}
	spec = out["spec"].(map[string]any)
	if _, has := spec["suspendReason"]; spec["suspend"] != false || has {
		t.Errorf("resume: %v", spec)
	}
	assertOnlyChanged(t, paused, out, "spec")
	assertPatch(t, paused, out, `{"spec":{"suspend":false,"suspendReason":null}}`)
	writePatch(t, "resume", paused, out)
	// What resume leaves reads as an unobserved generation until recur catches up, then healthy.
	bumpGeneration(out)
	if h, _ := argocd.HealthOf(out, healthScript(t, "RecurringTask")); h.Status != "Progressing" {
		t.Errorf("after resume: %+v", h)
	}
}

// With $RECUR_GITOPS_PATCHES set (tests/gitops_fixtures.rs), the merge patches of the actions
// are written there for the Rust test to apply to a live task.
func writePatch(t *testing.T, name string, live, updated map[string]any) {
	dir := os.Getenv("RECUR_GITOPS_PATCHES")
	if dir == "" {
		return
	}
	p, err := argocd.MergePatch(live, updated)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".json"), []byte(p), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The merge patch Argo CD sends for the action's result is exactly `want`.
func assertPatch(t *testing.T, live, updated map[string]any, want string) {
	t.Helper()
	got, err := argocd.MergePatch(live, updated)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("merge patch %s, want %s", got, want)
	}
}

func annotation(obj map[string]any, key string) string {
	meta, _ := obj["metadata"].(map[string]any)
	ann, _ := meta["annotations"].(map[string]any)
	s, _ := ann[key].(string)
	return s
}

// Only the top-level field `changed` differs between before and after (the rest, status
// included, makes it through Lua and back to JSON unchanged).
func assertOnlyChanged(t *testing.T, before, after map[string]any, changed string) {
	t.Helper()
	for k, v := range before {
		if k == changed {
			continue
		}
		a, _ := json.Marshal(v)
		b, _ := json.Marshal(after[k])
		if string(a) != string(b) {
			t.Errorf("the action changed %s:\n%s\n%s", k, a, b)
		}
	}
}

// The health status Argo CD accepts, checked against a script returning another.
func TestAnInvalidStatusIsUnknown(t *testing.T) {
	h, err := argocd.HealthOf(map[string]any{}, `return {status = "Fine"}`)
	if err != nil || h.Status != "Unknown" {
		t.Errorf("%+v %v", h, err)
	}
}

// Argo CD's VM has no string library: a script using it fails (ours do not).
func TestTheStringLibraryIsClosed(t *testing.T) {
	if _, err := argocd.HealthOf(map[string]any{}, `return {status = string.lower("Healthy")}`); err == nil {
		t.Error("string.lower worked: the VM has more libraries than Argo CD's")
	}
}

// deploy/argocd/argocd-cm.yaml is what the generator makes of the scripts today.
func TestArgoCDConfigMapIsCurrent(t *testing.T) {
	want, err := argocd.RenderConfigMap(deployDir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(deployDir, "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Error("deploy/argocd/argocd-cm.yaml is stale: run (cd tests/gitops && go run ./cmd/argocd-cm)")
	}
}

// The scripts inlined in argocd-cm.yaml, read back as Argo CD reads the keys, are the files.
func TestArgoCDConfigMapInlinesTheFiles(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	for _, h := range argocd.HealthScripts {
		key := "resource.customizations.health.recur.dev_" + h.Kind
		if cm.Data[key] != script(t, h.File) {
			t.Errorf("%s differs from %s", key, h.File)
		}
	}
	// The actions key holds YAML, as Argo CD's ResourceActions.
	var actions struct {
		Discovery   string `json:"discovery.lua"`
		Definitions []struct {
			Name   string `json:"name"`
			Action string `json:"action.lua"`
		} `json:"definitions"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["resource.customizations.actions.recur.dev_RecurringTask"]), &actions); err != nil {
		t.Fatal(err)
	}
	if actions.Discovery != script(t, "actions/discovery.lua") {
		t.Error("discovery.lua differs")
	}
	if len(actions.Definitions) != len(argocd.ActionNames) {
		t.Fatalf("%d definitions", len(actions.Definitions))
	}
	for i, name := range argocd.ActionNames {
		d := actions.Definitions[i]
		if d.Name != name || d.Action != script(t, filepath.Join("actions", name, "action.lua")) {
			t.Errorf("definition %d (%s) differs from actions/%s/action.lua", i, d.Name, name)
		}
	}
}
