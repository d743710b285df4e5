-- Runs the vmlua executable of the build tree as a child process, on the
-- same event loop as the spec, so a spec can signal it while it runs.
local core = require "vmlua.core"
local task = require "vmlua.task"

local cli = {}

cli.binary = core.realpath(os.getenv("VMLUA_BIN") or "build/bin/vmlua")

-- Starts `vmlua args...`; returns a handle with out, err, and wait().
function cli.spawn(args, env_path)
  local h = { out = "", err = "", changed = task.condition() }
  local argv = { "vmlua" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local file = cli.binary
  if env_path then -- run under a different PATH through env(1)
    file = "/usr/bin/env"
    table.insert(argv, 1, "PATH=" .. env_path)
    table.insert(argv, 1, "env")
    argv[3] = cli.binary
  end
  h.process = assert(core.spawn {
    file = file, args = argv,
    on_stdout = function(d) h.out = h.out .. d; h.changed.notify() end,
    on_stderr = function(d) h.err = h.err .. d; h.changed.notify() end,
    on_exit = function(code, signal) h.code, h.signal = code, signal; h.changed.notify() end,
  })
  -- Waits until pred(h) holds, at most timeout seconds.
  function h.until_(pred, timeout)
    if not h.changed.wait(function() return pred(h) end, timeout or 120) then
      error("timed out; stdout:\n" .. h.out .. "\nstderr:\n" .. h.err, 2)
    end
  end
  function h.wait(timeout)
    h.until_(function() return h.code ~= nil or h.signal ~= nil end, timeout)
    return h.code, h.out, h.err
  end
  return h
end

-- Runs `vmlua args...` to the end: exit code, stdout, stderr.
function cli.run(args, timeout, env_path)
  return cli.spawn(args, env_path).wait(timeout)
end

-- Writes a Lua file into dir and returns its path.
function cli.write(dir, name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

return cli
