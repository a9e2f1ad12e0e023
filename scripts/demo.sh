#!/usr/bin/env bash
# The main job on an embedded default, no hardware needed: a private dbus-daemon, the simulated
# SDM230 (unit 2) and Growatt (unit 1) on a pseudo-terminal at 9600 baud with realistic timing,
# the test-support settings service, and the daemon publishing both devices. Shows the published
# values (GetText on / of each service, read with Debian's dbus-send) until Ctrl-C.
#   DEMO_SECONDS=N  stop by itself after N seconds (used by the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# The workspace: modbus-sim is a crate of its own (sim/).
cargo build --release --workspace --bins --examples -q
bin=target/release

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

dbus-daemon --session --nofork --print-address=3 --address="unix:path=$work/bus" 3>"$work/address" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/address" ] && break; sleep 0.1; done
DBUS_SESSION_BUS_ADDRESS=$(head -n1 "$work/address")
export DBUS_SESSION_BUS_ADDRESS

"$bin/examples/fake-settings" >"$work/settings.log" 2>&1 &
pids+=($!)
# The simulator reads commands on stdin: a fifo held open by this script feeds it a house load
# profile (base load, fridge, kettle) under a sunny sky.
mkfifo "$work/sim.in"
"$bin/modbus-sim" --link "$work/tty" --baud 9600 --realistic --plant <"$work/sim.in" >"$work/sim.log" 2>&1 &
pids+=($!)
exec 4>"$work/sim.in"
echo "plant 450 3800" >&4
for _ in $(seq 50); do [ -e "$work/tty" ] && break; sleep 0.1; done

"$bin/dbus-modbus-client" -s "$work/tty" -r 9600 --dbus session >"$work/daemon.log" 2>&1 &
pids+=($!)

# Turn the generation limiter on, as a user would in the settings: the simulated meter's
# consumption (import - export) is ~914 kWh, so a target of 950 kWh is in the limiting range.
setting() {
  dbus-send --print-reply --dest=com.victronenergy.settings "$1" \
    com.victronenergy.BusItem.SetValue "variant:int32:$2" >/dev/null 2>&1 || true
}
loads=(450 550 2450 2550 650 450 1300 450)
load=450

show() {
  local svc
  for svc in $(dbus-send --print-reply --dest=org.freedesktop.DBus / org.freedesktop.DBus.ListNames |
    grep -o 'com\.victronenergy\.\(grid\|pvinverter\)\.[A-Za-z0-9_]*' | sort); do
    echo "== $svc"
    dbus-send --print-reply --dest="$svc" / com.victronenergy.BusItem.GetText 2>/dev/null |
      awk '/string "/ { gsub(/^ *string "|"$/, ""); if (k == "") { k = $0 } else { printf "  /%-32s %s\n", k, $0; k = "" } }' |
      grep -E 'Ac/(Power|L1/(Power|Voltage|Current)|Frequency|Energy/(Forward|Reverse)|MaxPower|PowerLimit)|DeviceInstance|ProductName|Serial|StatusCode|dynamicGeneration' || true
  done
}

end=$((SECONDS + ${DEMO_SECONDS:-1000000000}))
tick=0
while [ $SECONDS -lt $end ]; do
  if [ $tick -eq 3 ]; then
    setting /Settings/DynamicGeneration/energyDifference 950
    setting /Settings/DynamicGeneration/derateGeneration 1
  fi
  if [ $((tick % 4)) -eq 0 ]; then
    load=${loads[$(((tick / 4) % ${#loads[@]}))]}
    echo "plant $load 3800" >&4
  fi
  tick=$((tick + 1))
  out=$(show)
  [ -t 1 ] && clear
  date '+%H:%M:%S  (Ctrl-C to stop)'
  if [ -n "$out" ]; then echo "$out"; else echo "waiting for the services..."; tail -n 3 "$work/daemon.log"; fi
  echo "  house load ${load:-450} W, PV available 3800 W (simulated); last HR3 writes (%):" \
    "$(grep -o 'hr 3 = [0-9]*' "$work/sim.log" | tail -n 4 | cut -d' ' -f4 | tr '\n' ' ')"
  sleep 1
done
