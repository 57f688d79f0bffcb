#!/usr/bin/env bash
# The jobs example's page in a real browser (headless Chromium), and the
# example's command-line bad input.
#
# Installs Debian's chromium and chromium-driver if missing (as root, with
# apt-get), builds the example and tests/browser.rs, starts the example and
# chromedriver on free ports, runs tests/browser.rs against them
# (TASKGROUP_BROWSER=1), and stops both on exit. Screenshots go to
# target/browser/ (after-cancel.png, no-context.png and
# cancel-vs-no-context.png, the README's picture). The last line is
# `N passed, M failed`; the exit code is non-zero on any failure.
#
#   scripts/browser-check.sh
#
# JOBS_MB (default 64) and JOBS_CHUNK_DELAY_MS (default 40) size the file
# and pace the job: 64 chunks of 1 MiB, 40 ms apart, run about 3 s — long
# enough to click Cancel, short enough for CI. TASKGROUP_CANCEL_RUNS
# (default 5) is how many times Cancel is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

target_dir=${CARGO_TARGET_DIR:-target}
out=$target_dir/browser
mkdir -p "$out"
mb=${JOBS_MB:-64}
delay=${JOBS_CHUNK_DELAY_MS:-40}

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok      $*"; }
fail() { failed=$((failed + 1)); echo "FAILED  $*"; }

server_pid=
driver_pid=
profile=
cleanup() {
  # Only the processes this script started, by their ids. (`|| true`: a
  # killed process's status must not become the script's under `set -e`.)
  # SIGTERM: the example stops its jobs and removes its temp dir; after
  # 10 s of waiting, SIGKILL.
  local pid i state
  for pid in $server_pid $driver_pid; do
    kill "$pid" 2>/dev/null || continue
    for ((i = 0; i < 100; i++)); do
      # Gone, or exited and waiting to be reaped (a zombie: Z).
      state=$(ps -o stat= -p "$pid") || break
      [[ $state == Z* ]] && break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n $profile ]]; then rm -rf "$profile"; fi
}
trap cleanup EXIT

# A port nobody listens on: the kernel's pick, released at once.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits up to $2 seconds for $1 (a command) to succeed.
wait_until() {
  local deadline=$((SECONDS + $2))
  until eval "$1"; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.1
  done
}

if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  echo "== installing chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >"$out/apt.log" 2>&1
  apt-get install -y -q chromium chromium-driver >>"$out/apt.log" 2>&1 ||
    { tail -20 "$out/apt.log"; echo "0 passed, 1 failed"; exit 1; }
fi
for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is needed"; echo "0 passed, 1 failed"; exit 1; }
done

echo "== build the example and the browser test (dev profile)"
cargo build --example jobs
cargo test --test browser --no-run
jobs_bin=$target_dir/debug/examples/jobs

echo "== the example's command-line bad input"
# Runs the example with "$@"; sets $rc and $err (its stderr).
try_jobs() {
  set +e
  err=$(timeout 20 "$jobs_bin" "$@" 2>&1 >/dev/null)
  rc=$?
  set -e
}
try_jobs --port 0 --mb 0
if [[ $rc == 2 && $err == *"--mb must be at least 1"* ]]; then pass "--mb 0: exit 2, says why"
else fail "--mb 0: exit $rc: $err"; fi
try_jobs --port 0 --mb lots
if [[ $rc == 2 && $err == *'not a number: "lots"'* ]]; then pass "--mb lots: exit 2, says why"
else fail "--mb lots: exit $rc: $err"; fi

echo "== start the example"
port=$(free_port)
"$jobs_bin" --port "$port" --mb "$mb" --chunk-delay-ms "$delay" >"$out/jobs.log" 2>&1 &
server_pid=$!
if ! wait_until "grep -qs 'jobs: ready' '$out/jobs.log'" 60; then
  cat "$out/jobs.log"; echo "0 passed, 1 failed"; exit 1
fi
cat "$out/jobs.log"
try_jobs --port "$port" --mb 1
if [[ $rc == 1 && $err == *"port $port is already in use"* ]]; then pass "a port in use: exit 1, names port $port"
else fail "a port in use: exit $rc: $err"; fi

echo "== start chromedriver"
driver_port=$(free_port)
profile=$(mktemp -d)
/usr/bin/chromedriver --port="$driver_port" >"$out/chromedriver.log" 2>&1 &
driver_pid=$!
if ! wait_until "curl -sf http://127.0.0.1:$driver_port/status >/dev/null" 30; then
  cat "$out/chromedriver.log"; echo "$passed passed, $((failed + 1)) failed"; exit 1
fi

echo "== the page in headless Chromium (tests/browser.rs)"
set +e
TASKGROUP_BROWSER=1 \
  TASKGROUP_JOBS_URL="http://127.0.0.1:$port" \
  TASKGROUP_WEBDRIVER="http://127.0.0.1:$driver_port" \
  TASKGROUP_CHROME_PROFILE="$profile" \
  TASKGROUP_BROWSER_OUT="$out" \
  cargo test --test browser 2>&1 | tee "$out/browser.log"
set -e
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out/browser.log" | tail -1 || true)
if [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  passed=$((passed + BASH_REMATCH[1]))
  failed=$((failed + BASH_REMATCH[2]))
else
  fail "tests/browser.rs gave no summary"
fi

echo "$passed passed, $failed failed"
((failed == 0))
