#!/usr/bin/env bash
# Soak benchmark: the release daemon against `modbus-sim --realistic` at 9600 baud on a private
# dbus-daemon, for a long time, with the Growatt going to sleep and waking every few minutes and
# the meter dropping out now and then. Samples the daemon's VmRSS, VmHWM, open fds and CPU every
# 10 s and prints, after a warm-up: RSS/HWM/fd growth per hour (least-squares fit and first/last),
# CPU seconds per hour, requests per second to the sleeping inverter, and the longest gap between
# two grid /Ac/Power updates on D-Bus.
#
#   scripts/soak.sh                      # 1 h (the default)
#   SOAK_SECONDS=86400 scripts/soak.sh   # 24 h: run it under nohup, figures at the end
#   SOAK_SECONDS=300 SOAK_WARMUP=60 scripts/soak.sh   # a quick look
#   SOAK_SECONDS=900 SOAK_WARMUP=300 SOAK_AWAKE=8 SOAK_ASLEEP=7 SOAK_METER_EVERY=30 \
#     SOAK_METER_DOWN=7 scripts/soak.sh   # many sleep/wake cycles quickly (leak hunting)
#
# RSS settles in 4 kB steps over the first ~16 Growatt sleep/wake cycles (allocator warm-up;
# heaptrack shows a flat 182 kB heap peak): judge growth after that, e.g. SOAK_WARMUP=7200 for
# a 24 h run with the default 4-minute cycle.
#
# Other knobs: SOAK_OUT (directory for the raw samples and logs, default a new /tmp dir, kept),
# SOAK_AWAKE/SOAK_ASLEEP (Growatt cycle, s; default 150/90), SOAK_METER_EVERY/SOAK_METER_DOWN
# (meter drop-outs, s; default 420/10), SOAK_SKIP_BUILD=1 (use the existing release build).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${SOAK_SECONDS:-3600}
warmup=${SOAK_WARMUP:-600}
awake=${SOAK_AWAKE:-150}
asleep=${SOAK_ASLEEP:-90}
meter_every=${SOAK_METER_EVERY:-420}
meter_down=${SOAK_METER_DOWN:-10}
sample=10
[ "$warmup" -lt "$duration" ] || { echo "soak: SOAK_WARMUP must be below SOAK_SECONDS" >&2; exit 2; }

if [ -z "${SOAK_SKIP_BUILD:-}" ]; then
  scripts/setup.sh
  # The workspace: modbus-sim is a crate of its own (sim/).
  cargo build --release --workspace --bins --examples -q
fi
bin=$PWD/target/release
out=${SOAK_OUT:-$(mktemp -d /tmp/soak.XXXXXX)}
mkdir -p "$out"
echo "soak: ${duration}s (warm-up ${warmup}s), raw data in $out"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM

dbus-daemon --session --nofork --print-address=3 --address="unix:path=$out/bus" 3>"$out/address" &
pids+=($!)
for _ in $(seq 50); do [ -s "$out/address" ] && break; sleep 0.1; done
DBUS_SESSION_BUS_ADDRESS=$(head -n1 "$out/address")
export DBUS_SESSION_BUS_ADDRESS

# Grid /Ac/Power updates: the owner of com.victronenergy.grid.* is followed through
# NameOwnerChanged (it re-registers after a drop-out); one epoch time per ItemsChanged of that
# owner that carries /Ac/Power.
dbus-monitor --session "type='signal',member='ItemsChanged'" \
  "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'" 2>/dev/null |
  awk '
    /^signal / {
      t = ""; s = ""; m = ""; n = 0; done = 0
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^time=/) t = substr($i, 6)
        if ($i ~ /^sender=/) s = substr($i, 8)
        if ($i ~ /^member=/) m = substr($i, 8)
      }
      next
    }
    m == "NameOwnerChanged" && /^ *string "/ {
      n++; v = $0; sub(/^ *string "/, "", v); sub(/"$/, "", v)
      if (n == 1) name = v
      if (n == 3 && name ~ /^com\.victronenergy\.grid\./) grid = v
      next
    }
    m == "ItemsChanged" && s == grid && !done && /^ *string "\/Ac\/Power"$/ {
      print t; fflush(); done = 1
    }' >"$out/grid_power_times" &
pids+=($!)

"$bin/examples/fake-settings" >"$out/settings.log" 2>&1 &
pids+=($!)
mkfifo "$out/sim.in"
"$bin/modbus-sim" --link "$out/tty" --baud 9600 --realistic <"$out/sim.in" >"$out/sim.log" 2>&1 &
pids+=($!)
exec 4>"$out/sim.in"
for _ in $(seq 50); do [ -e "$out/tty" ] && break; sleep 0.1; done
sleep 1 # dbus-monitor's match rules in place before the first registration

# -d: every failed transaction is logged, which counts the requests to the sleeping inverter.
"$bin/dbus-modbus-client" -s "$out/tty" -r 9600 --dbus session -d >"$out/daemon.log" 2>&1 &
daemon=$!
pids+=("$daemon")

# The meter's power moves every 0.25 s, so every publish of the grid service carries /Ac/Power.
(
  w=300
  while true; do
    w=$(((w * 7 + 13) % 2000 - 500))
    echo "set 2 power $w" >&4
    sleep 0.25
  done
) &
pids+=($!)

hz=$(getconf CLK_TCK)
failed_unit1() { grep -c ': unit 1 read .* failed\|probe of unit 1 failed' "$out/daemon.log" || true; }
echo "t rss_kb hwm_kb fds cpu_ticks" >"$out/samples"
: >"$out/meter_down"
start=$SECONDS
next_sample=0
growatt_state=awake
growatt_since=0
meter_next=$meter_every
meter_up_at=-1
sleep_requests=0
sleep_seconds=0
sleep_mark=0
while true; do
  t=$((SECONDS - start))
  [ "$t" -le "$duration" ] || break
  if ! kill -0 "$daemon" 2>/dev/null; then
    echo "soak: the daemon died at ${t}s" >&2
    tail -n 20 "$out/daemon.log" >&2
    exit 1
  fi
  if [ "$growatt_state" = awake ] && [ $((t - growatt_since)) -ge "$awake" ]; then
    echo "fault 1 offline" >&4
    growatt_state=asleep growatt_since=$t sleep_mark=$(failed_unit1)
  elif [ "$growatt_state" = asleep ] && [ $((t - growatt_since)) -ge "$asleep" ]; then
    echo "fault 1 none" >&4
    sleep_requests=$((sleep_requests + $(failed_unit1) - sleep_mark))
    sleep_seconds=$((sleep_seconds + t - growatt_since))
    growatt_state=awake growatt_since=$t
  fi
  if [ "$t" -ge "$meter_next" ]; then
    echo "fault 2 offline" >&4
    echo "$(date +%s.%N) start" >>"$out/meter_down"
    meter_up_at=$((t + meter_down)) meter_next=$((t + meter_every))
  fi
  if [ "$meter_up_at" -ge 0 ] && [ "$t" -ge "$meter_up_at" ]; then
    echo "fault 2 none" >&4
    echo "$(date +%s.%N) end" >>"$out/meter_down"
    meter_up_at=-1
  fi
  if [ "$t" -ge "$next_sample" ]; then
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$daemon/status")
    hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$daemon/status")
    fds=$(find "/proc/$daemon/fd" -mindepth 1 -maxdepth 1 | wc -l)
    cpu=$(sed 's/.*) //' "/proc/$daemon/stat" | awk '{ print $12 + $13 }')
    echo "$t $rss $hwm $fds $cpu" >>"$out/samples"
    next_sample=$((next_sample + sample))
  fi
  sleep 1
done
[ "$meter_up_at" -lt 0 ] || echo "$(date +%s.%N) end" >>"$out/meter_down"

echo
echo "== soak results (${duration}s, warm-up ${warmup}s, sample every ${sample}s)"
awk -v w="$warmup" -v hz="$hz" '
  NR == 1 { next }
  $1 >= w {
    n++; x = $1 / 3600
    sx += x; sxx += x * x
    for (c = 2; c <= 5; c++) { sy[c] += $c; sxy[c] += x * $c; if (!(c in first)) first[c] = $c; last[c] = $c }
    t0 = (n == 1) ? $1 : t0; t1 = $1
  }
  END {
    if (n < 3) { print "too few samples after the warm-up"; exit 1 }
    h = (t1 - t0) / 3600
    split("x rss_kb hwm_kb fds cpu", name)
    for (c = 2; c <= 4; c++) {
      slope = (n * sxy[c] - sx * sy[c]) / (n * sxx - sx * sx)
      printf "%-7s first %8d  last %8d  growth: fit %+.1f /h, first-last %+.1f /h\n", name[c], first[c], last[c], slope, (last[c] - first[c]) / h
    }
    printf "cpu     %.2f s per hour (%.3f %% of one core)\n", (last[5] - first[5]) / hz / h, (last[5] - first[5]) / hz / (t1 - t0) * 100
  }' "$out/samples"
if [ "$sleep_seconds" -gt 0 ]; then
  awk -v r="$sleep_requests" -v s="$sleep_seconds" \
    'BEGIN { printf "sleeping inverter: %d requests in %d s asleep = %.2f requests/s\n", r, s, r / s }'
fi
awk '
  FNR == NR { if ($2 == "start") ds[++nd] = $1; else de[nd] = $1; next }
  {
    if (p != "") {
      gap = $1 - p
      if (gap > all) { all = gap; at = p }
      hit = 0
      for (i = 1; i <= nd; i++) if (p < de[i] + 10 && $1 > ds[i]) hit = 1
      if (!hit && gap > clean) clean = gap
    }
    p = $1; n++
  }
  END {
    printf "grid /Ac/Power: %d updates; longest gap %.3f s overall (meter drop-outs included), %.3f s outside the drop-outs\n", n, all, clean
  }' "$out/meter_down" "$out/grid_power_times"
echo "meter drop-outs: $(grep -c start "$out/meter_down" || true); daemon alive: $(kill -0 "$daemon" 2>/dev/null && echo yes || echo no); panics: $(grep -c panicked "$out/daemon.log" || true)"
