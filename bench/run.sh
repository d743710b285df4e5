#!/bin/sh
# The benchmarks (make bench): vmlua plan's start-up time, then boot to
# prompt through vmlua against QEMU run directly, vmlua's footprint while
# its guest idles, console throughput through vmlua against QEMU
# writing the console to a file, restore from a snapshot against a cold
# boot, the Debian guest's boot to ssh with vmlua's footprint while it
# idles, boot and stop through libvirt (vmlua's backend, virsh, QEMU by
# hand) and a command through the guest agent (needs root, for a private
# libvirtd). They print tables; they never fail on timing.
set -eu
cd "$(dirname "$0")/.."
VMLUA=build/bin/vmlua
echo "== vmlua plan: start-up, process start included"
"$VMLUA" bench/plan.lua 50
echo
echo "== vmlua plan of a recipe (10 parameters, 5 directories on VMLUA_PATH) against a plain definition"
"$VMLUA" bench/recipes.lua 50
echo
echo "== boot to prompt, and vmlua while its guest idles"
"$VMLUA" bench/boot.lua -n 5 -i 10 x86_64 aarch64
echo
echo "== console throughput: a guest flooding its console, through vmlua and to a file"
"$VMLUA" bench/console.lua -n 3 -b 4M x86_64
echo
echo "== restore from a snapshot against a cold boot, to a shell that answers; the saved state's size"
"$VMLUA" bench/restore.lua -n 5 x86_64
echo
echo "== the Debian guest: boot to ssh through vmlua against QEMU run directly; vmlua while it idles"
"$VMLUA" bench/debian.lua -n 3 -i 30
echo
echo "== through libvirt: boot to prompt and stop, vmlua's backend against virsh create and QEMU by hand"
"$VMLUA" bench/libvirt.lua -n 5
echo
echo "== a command through the guest agent: vm:run on libvirt, virsh qemu-agent-command, vm:run on QEMU"
"$VMLUA" bench/agent.lua -n 20
