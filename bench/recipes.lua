-- How long `vmlua plan` of a recipe takes: a recipe with 10 parameters, the
-- last of 5 directories on VMLUA_PATH, given 3 of them on the command line,
-- next to `vmlua plan` of a plain definition of the same VM. Both run
-- through env(1), process start included.
--   build/bin/vmlua bench/recipes.lua [RUNS]
package.path = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/?.lua;" .. package.path
local lib = require "benchlib"
local core = require "vmlua.core"
local lfs = require "lfs"

local RUNS = tonumber(arg[1]) or 50
local WARMUP = 3

local VM = [[
  vmlua.vm { name = "bench", cpus = %s, memory = %s,
             boot = vmlua.linux { kernel = "%s", cmdline = { "quiet" } } }
]]

local function write(file, text)
  local f = assert(io.open(file, "w"))
  f:write(text)
  f:close()
end

lib.main(function()
  local dir = os.tmpname()
  os.remove(dir)
  assert(core.mkdir_private(dir))
  local kernel = dir .. "/vmlinuz" -- plan reads no kernel: any file will do
  write(kernel, "not a kernel\n")
  local dirs = {}
  for i = 1, 5 do
    dirs[i] = dir .. "/d" .. i
    assert(lfs.mkdir(dirs[i]))
    for j = 1, 8 do write(string.format("%s/other%d.lua", dirs[i], j), "return nil\n") end -- others on the path
  end
  local params = {}
  for i = 1, 8 do params[#params + 1] = string.format('    p%d = { type = "string", default = "v%d" },', i, i) end
  write(dirs[5] .. "/bench.lua", table.concat({
    'local vmlua = require "vmlua"',
    "return vmlua.recipe {",
    '  description = "ten parameters",',
    "  params = {",
    '    cpus = { type = "integer", default = 1 },',
    '    memory = { type = "size", default = "256M" },',
    table.concat(params, "\n"),
    "  },",
    "  define = function(p)",
    "    return " .. VM:format("p.cpus", "p.memory", kernel),
    "  end,",
    "}",
  }, "\n") .. "\n")
  write(dir .. "/plain.lua", 'local vmlua = require "vmlua"\n' .. VM:format("1", '"256M"', kernel))
  local env = "VMLUA_PATH=" .. table.concat(dirs, ";")
  local cases = {
    { label = "vmlua plan bench cpus=1 p1=a p2=b", target = "< 20 ms",
      args = { "/usr/bin/env", env, lib.vmlua, "plan", "bench", "cpus=1", "p1=a", "p2=b" } },
    { label = "vmlua plan plain.lua", args = { "/usr/bin/env", env, lib.vmlua, "plan", dir .. "/plain.lua" } },
  }
  lib.spawn_to_exit(cases, RUNS, WARMUP, "; the recipe is in the 5th of 5 directories on VMLUA_PATH")
  os.execute("rm -rf '" .. dir .. "'")
end)
