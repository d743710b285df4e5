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
  -- Interleaved, so both see the same machine; the first runs only warm up.
  for round = 1, WARMUP + RUNS do
    for _, c in ipairs(cases) do
      c.times = c.times or {}
      local t = lib.time_run(c.args)
      if round > WARMUP then c.times[#c.times + 1] = t * 1000 end
    end
  end
  print(string.format("spawn to exit, %d runs each (after %d warm-up runs)", RUNS, WARMUP))
  print(string.format("  %-36s %8s %8s %8s   %s", "", "median", "min", "p90", "target"))
  for _, c in ipairs(cases) do
    local s = lib.stats(c.times)
    print(string.format("  %-36s %5.1f ms %5.1f ms %5.1f ms   %s", c.label, s.median, s.min, s.p90, c.target or ""))
  end
end)
