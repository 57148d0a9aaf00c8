#!/usr/bin/env bash
# Demo: bring the local Ocean sandbox up and run the example DAG end to end with `airflow dags test`.
# Set OCEAN_DEMO_KEEP=1 to leave the sandbox running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/bootstrap.sh
VENV="${OCEAN_VENV:-$ROOT/.venv}"
export PATH="$VENV/bin:$PATH"
export OCEAN_SANDBOX_DIR="${OCEAN_SANDBOX_DIR:-$ROOT/.sandbox}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
RESULTS="${OCEAN_RESULTS_DIR:-$ROOT/.demo-results}"

started=$(date +%s)
echo "== 1/3 sandbox: ganache + Ocean v4 contracts + sandbox Provider"
ocean-sandbox up --detach
if [ "${OCEAN_DEMO_KEEP:-0}" != "1" ]; then
  trap 'ocean-sandbox down >/dev/null 2>&1 || true' EXIT
fi
eval "$(python - <<'PY'
import json, os, shlex, subprocess
info = json.loads(subprocess.check_output(["ocean-sandbox", "info"]))
exports = {
    "AIRFLOW_CONN_OCEAN_DEFAULT": info["conn_json"],
    "AIRFLOW_VAR_OCEAN_DATASET_DID": info["assets"]["dataset"]["did"],
    "AIRFLOW_VAR_OCEAN_ALGORITHM_DID": info["assets"]["algorithm"]["did"],
}
for key, value in exports.items():
    print(f"export {key}={shlex.quote(value)}")
PY
)"
export AIRFLOW_VAR_OCEAN_RESULTS_DIR="$RESULTS"

echo "== 2/3 Airflow metadata DB ($AIRFLOW_HOME)"
mkdir -p "$AIRFLOW_HOME"; airflow db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/migrate.log"; exit 1; }

echo "== 3/3 airflow dags test ocean_compute_example"
log="$AIRFLOW_HOME/demo-dag-test.log"
if ! airflow dags test ocean_compute_example >"$log" 2>&1; then
  tail -60 "$log"; echo "demo: the DAG run failed (full log: $log)"; exit 1
fi
grep -E "Paid:|Started:|status [0-9]+|Finished|Wrote |Results written|DagRun Finished" "$log" \
  | sed -E 's/^[0-9T:.-]+Z \[[a-z]+ *\] //; s/ \[[a-z_.]+\.[A-Za-z]+\] loc=.*$//; s/ \[airflow[^]]*\].*$//' || true
run_dir=$(ls -td "$RESULTS"/*/ | head -1)
echo
echo "Results of this run are in: $run_dir"
ls -l "$run_dir"
echo
echo "--- summary.csv ---"
cat "$run_dir/summary.csv"
echo
echo "Demo finished in $(( $(date +%s) - started )) s."
if [ "${OCEAN_DEMO_KEEP:-0}" = "1" ]; then
  echo "The sandbox is still running (ocean-sandbox status / ocean-sandbox down)."
fi
