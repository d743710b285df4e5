-- How long `vmlua plan examples/dev.lua` takes, process start included,
-- next to a bare `lua5.4 -e ''` (what starting a process alone costs).
--   build/bin/vmlua bench/plan.lua [RUNS]      (or lua5.4 bench/plan.lua)
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require "benchlib"

local RUNS = tonumber(arg[1]) or 50
local WARMUP = 3

lib.main(function()
  local cases = {
    { label = "vmlua plan examples/dev.lua", args = { lib.vmlua, "plan", lib.root .. "/examples/dev.lua" },
      target = "< 20 ms" },
    { label = "lua5.4 -e ''  (process start only)",
      args = { require("vmlua.host").which("lua5.4") or error("lua5.4 is not on PATH"), "-e", "" } },
  }
  lib.spawn_to_exit(cases, RUNS, WARMUP)
end)
