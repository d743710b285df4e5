#!/bin/sh
# The benchmarks (make bench): vmlua plan's start-up time, then boot to
# prompt through vmlua against QEMU run directly, and vmlua's footprint
# while its guest idles. They print tables; they never fail on timing.
set -eu
cd "$(dirname "$0")/.."
VMLUA=build/bin/vmlua
echo "== vmlua plan: start-up, process start included"
"$VMLUA" bench/plan.lua 50
echo
echo "== boot to prompt, and vmlua while its guest idles"
"$VMLUA" bench/boot.lua -n 5 -i 10 x86_64 aarch64
