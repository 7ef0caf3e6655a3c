#!/usr/bin/env bash
# Checks the chart's alerting rules exactly as they ship: renders charts/recur with
# prometheusRule.enabled=true (release `recur` in `recur-system`, so the series selector is
# job="recur",namespace="recur-system"), extracts the PrometheusRule's .spec into a Prometheus
# rules file, and runs `promtool check rules` on it and `promtool test rules` on
# tests/alerts/*.test.yaml (each of them reads `rules.yaml`, the rendered file). Also checks that
# every alert has a unit test and a runbook section (docs/runbook.md) its runbook_url points to.
#
# promtool is built from the pinned Prometheus Go module (tests/cluster/prometheus/go.mod) into
# the tool cache by tests/cluster/prometheus.sh, like the control plane (tests/cluster/build.sh);
# a second run builds nothing.
# helm comes from $RECUR_BIN_DIR, else from what tests/cluster/build.sh prints.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
log() { printf '[alerts] %s\n' "$*" >&2; }

bin=${RECUR_BIN_DIR:-}
[ -n "$bin" ] || bin=$("$root/tests/cluster/build.sh")
helm="$bin/helm"
[ -x "$helm" ] || { log "no helm in $bin"; exit 1; }

# --- promtool, keyed by the pinned Prometheus version ------------------------------------------
promtool=$("$root/tests/cluster/prometheus.sh" promtool)
# Beside the other tools too, for people who look there (only when needed: a concurrent run
# never sees it missing).
[ "$(readlink "$bin/promtool" || true)" = "$promtool" ] || ln -sf "$promtool" "$bin/promtool" 2>/dev/null || true

# --- render -------------------------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HELM_CONFIG_HOME="$work/helm/config" HELM_CACHE_HOME="$work/helm/cache" HELM_DATA_HOME="$work/helm/data"

"$helm" template recur "$root/charts/recur" --namespace recur-system \
  --set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml >"$work/rule.yaml"
grep -q '^kind: PrometheusRule$' "$work/rule.yaml" || { log "no PrometheusRule rendered"; exit 1; }

# .spec of the one document: the lines below `spec:`, two spaces less indented (a top-level key
# after it would end .spec; the template has none).
awk '
  /^spec:[[:space:]]*$/ { inspec = 1; next }
  inspec && /^[^[:space:]#-]/ { inspec = 0 }
  inspec { if ($0 ~ /^  / || $0 ~ /^[[:space:]]*$/) print substr($0, 3); else { print "bad line: " $0 > "/dev/stderr"; exit 1 } }
' "$work/rule.yaml" >"$work/rules.yaml"
grep -q '^groups:' "$work/rules.yaml" || { log "the PrometheusRule has no spec.groups"; exit 1; }

# --- completeness: a unit test and a runbook section per alert ----------------------------------
mapfile -t alerts < <(sed -n 's/^ *- alert: *\([A-Za-z0-9_]*\) *$/\1/p' "$work/rules.yaml")
[ "${#alerts[@]}" -gt 0 ] || { log "no alerts in the rendered rules"; exit 1; }
missing=0
for a in "${alerts[@]}"; do
  lower=$(printf '%s' "$a" | tr '[:upper:]' '[:lower:]')
  if ! grep -qE "^ *(- )?alertname: *$a *$" "$here"/*.test.yaml; then
    log "alert $a has no promtool unit test (alertname: $a) in tests/alerts/*.test.yaml"; missing=1
  fi
  if ! grep -qE "runbook_url: .*/docs/runbook\.md#$lower\$" "$work/rules.yaml"; then
    log "alert $a: its runbook_url does not end in docs/runbook.md#$lower"; missing=1
  fi
  if ! grep -qE "^## $a *\$" "$root/docs/runbook.md"; then
    log "alert $a has no section \`## $a\` in docs/runbook.md (anchor #$lower)"; missing=1
  fi
done
[ "$missing" = 0 ] || exit 1

# --- promtool -----------------------------------------------------------------------------------
cp "$here"/*.test.yaml "$work/"
cd "$work"
log "$("$promtool" --version 2>&1 | head -n1)"
log "alerts: ${alerts[*]}"
"$promtool" check rules rules.yaml
"$promtool" test rules ./*.test.yaml
