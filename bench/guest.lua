-- The benchmark VM: the test guest of scripts/build-guests.sh for an
-- architecture, with one CPU and 256 MiB.
local guest = {}

-- Where the guest files of `arch` are.
function guest.dir(arch)
  return require("vmlua.runtime").cache() .. "/guests/" .. arch .. "/"
end

-- The vmlua.vm spec of the benchmark VM for `arch`.
function guest.spec(vmlua, arch)
  local dir = guest.dir(arch)
  return {
    name = "bench-" .. arch, arch = arch, cpus = 1, memory = "256M",
    boot = vmlua.linux { kernel = dir .. "vmlinuz", initrd = dir .. "initrd.img" },
  }
end

return guest
