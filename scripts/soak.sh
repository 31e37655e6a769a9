#!/usr/bin/env bash
# Soak the randomized differential suite (tests/engine_differential.rs).
#
#   scripts/soak.sh [MINUTES] [SEEDS...]
#
# Runs the suite's scenarios (no faults, engine SIGKILL, server SIGKILL/SIGSTOP, network
# partitions) round-robin at the larger size (CLUSTERSYNC_SIZE=large) for MINUTES
# (default 30), one seed per run: the SEEDS given first, then fresh random seeds. Writes a
# markdown report (default SOAK.md, or $SOAK_REPORT) with every run's seed, operations by
# kind, faults injected, duration and result; the raw JSON lines go next to it (.jsonl).
# SOAK_REPORT_ONLY=1 only rewrites the markdown from the existing .jsonl.
# Replay a run: CLUSTERSYNC_SIZE=large CLUSTERSYNC_SEED=<seed> \
#   cargo test --test engine_differential <scenario> -- --exact --nocapture
set -u
cd "$(dirname "$0")/.."
MINUTES="${1:-30}"
shift || true
SEEDS=("$@")
REPORT="${SOAK_REPORT:-SOAK.md}"
JSONL="${REPORT%.md}.jsonl"
LOGDIR="${SOAK_LOGDIR:-target/soak-logs}"
SCENARIOS=(${SOAK_SCENARIOS:-differential_no_faults fault_engine_sigkill fault_source_sigkill fault_destination_sigkill fault_source_sigstop fault_destination_sigstop fault_source_partition fault_destination_partition})
COMMAND="scripts/soak.sh $MINUTES ${SEEDS[*]:-}"
mkdir -p "$LOGDIR"
if [ -z "${SOAK_REPORT_ONLY:-}" ]; then
: >"$JSONL"

echo "building…"
cargo test --no-run --test engine_differential >/dev/null 2>&1 || {
  echo "build failed" >&2
  exit 2
}

start=$(date +%s)
end=$((start + MINUTES * 60))
i=0
while [ "$(date +%s)" -lt "$end" ]; do
  if [ "$i" -lt "${#SEEDS[@]}" ]; then
    seed="${SEEDS[$i]}"
  else
    seed=$(( (RANDOM << 15 | RANDOM) + 100000 ))
  fi
  scenario="${SCENARIOS[$((i % ${#SCENARIOS[@]}))]}"
  i=$((i + 1))
  echo "[$(date -u +%H:%M:%S)] run $i: $scenario seed $seed"
  CLUSTERSYNC_SIZE=large CLUSTERSYNC_SEED="$seed" CLUSTERSYNC_REPORT="$JSONL" \
    timeout 1200 cargo test -q --test engine_differential "$scenario" -- --exact --nocapture \
    >"$LOGDIR/$i-$scenario-$seed.log" 2>&1
  rc=$?
  if ! grep -q "\"scenario\":\"$scenario\",\"seed\":$seed," "$JSONL" 2>/dev/null; then
    # Killed by the timeout (or crashed) before reporting.
    printf '{"scenario":"%s","seed":%s,"result":"FAIL: no report (exit %s, see %s)","faults":[],"observations":[],"ops_ok":{},"ops_errors":{},"secs":0}\n' \
      "$scenario" "$seed" "$rc" "$LOGDIR/$i-$scenario-$seed.log" >>"$JSONL"
  fi
  echo "    -> $(tail -n1 "$JSONL" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["result"][:200])')"
done
fi

python3 - "$JSONL" "$REPORT" "$COMMAND" "$MINUTES" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys
jsonl, report, command, minutes, head = sys.argv[1:]
runs = []
for l in open(jsonl):
    if not l.strip():
        continue
    r = json.loads(l)
    # A "no report" placeholder right after the run's own report is a duplicate.
    if runs and r["result"].startswith("FAIL: no report") and (runs[-1]["scenario"], runs[-1]["seed"]) == (r["scenario"], r["seed"]):
        continue
    runs.append(r)
passed = sum(1 for r in runs if r["result"] == "PASS")
skipped = sum(1 for r in runs if r["result"].startswith("SKIP"))
out = []
out.append("# Soak report: randomized differential suite\n")
out.append(f"Command: `{command}` (at commit `{head}`; size `CLUSTERSYNC_SIZE=large`, {minutes} minutes)\n")
out.append(f"Runs: {len(runs)}; passed: {passed}; skipped: {skipped}; failed: {len(runs) - passed - skipped}\n")
out.append("Replay one run: `CLUSTERSYNC_SIZE=large CLUSTERSYNC_SEED=<seed> cargo test --test engine_differential <scenario> -- --exact --nocapture`\n")
out.append("| # | scenario | seed | result | duration | faults injected | ops ok / errors |")
out.append("|---|---|---|---|---|---|---|")
def cell(s):
    return str(s).replace("|", "\\|").replace("\n", " ")
for i, r in enumerate(runs, 1):
    ok = sum(r.get("ops_ok", {}).values())
    err = sum(r.get("ops_errors", {}).values())
    res = r["result"].split("\n")[0]
    out.append(f"| {i} | {r['scenario']} | {r['seed']} | {cell(res[:160])} | {r.get('secs', 0):.0f}s | {cell('; '.join(r.get('faults', [])))} | {ok} / {err} |")
out.append("\n## Runs in detail\n")
for i, r in enumerate(runs, 1):
    out.append(f"### {i}. {r['scenario']} seed {r['seed']}: {r['result'].splitlines()[0][:200]}\n")
    out.append(f"- duration: {r.get('secs', 0):.0f}s; logs: `{r.get('logs', '')}`")
    out.append(f"- faults: {r.get('faults', [])}")
    out.append(f"- observations: {r.get('observations', [])}")
    out.append(f"- operations ok by kind: {json.dumps(r.get('ops_ok', {}), sort_keys=True)}")
    out.append(f"- operation errors by kind: {json.dumps(r.get('ops_errors', {}), sort_keys=True)}")
    if r["result"] != "PASS":
        out.append("\n```\n" + r["result"][:6000] + "\n```")
    out.append("")
open(report, "w").write("\n".join(out) + "\n")
print(f"report: {report} ({len(runs)} runs, {passed} passed)")
PY
