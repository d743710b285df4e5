-- Drives the vmlua executable through a real pseudo-terminal (core.spawn with pty),
-- as a user at a terminal would: what it prints is read on the spec's event
-- loop, keys are written to it, Ctrl-C reaches it as SIGINT.
local core = require "vmlua.core"
local task = require "vmlua.task"

local pty = {}

pty.binary = core.realpath(os.getenv("VMLUA_BIN") or "build/bin/vmlua")

-- Keys, as a terminal sends them.
pty.keys = {
  enter = "\r", tab = "\t", ctrl_c = "\3", ctrl_d = "\4", ctrl_p = "\16", ctrl_bracket = "\29",
}

-- The text a terminal shows, roughly: escape sequences, carriage returns
-- and bells removed.
function pty.clean(s)
  return (s:gsub("\27%[[%d;?]*[%a@`]", "")
           :gsub("\27[%(%)][%w]", "")
           :gsub("\27[=>78]", "")
           :gsub("[\r\7]", ""))
end

local Term = {}
Term.__index = Term

-- Starts `vmlua args...` on a new pty, with env (a table of NAME=value
-- strings) added to the environment through env(1).
function pty.spawn(args, env)
  local argv = { "env" }
  for _, e in ipairs(env or {}) do argv[#argv + 1] = e end
  argv[#argv + 1] = pty.binary
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local t = setmetatable({ raw = "", pos = 1, changed = task.condition() }, Term)
  t.proc = assert(core.spawn {
    file = "/usr/bin/env", args = argv, pty = { rows = 24, cols = 100 },
    on_stdout = function(data)
      t.raw = t.raw .. data
      t.changed.notify()
    end,
    on_exit = function(code, signal)
      t.exited, t.code, t.signal = true, code, signal
      t.changed.notify()
    end,
  })
  return t
end

function Term:text()
  return pty.clean(self.raw)
end

-- What was printed after the last expect() match.
function Term:rest()
  return self:text():sub(self.pos)
end

-- Waits until `text` (plain text) shows after the last match; returns the
-- whole output up to it. Fails with what was printed, on timeout or exit.
function Term:expect(text, timeout)
  local i, j
  self.changed.wait(function()
    i, j = self:text():find(text, self.pos, true)
    return i or self.exited
  end, timeout or 15)
  local s = self:text()
  if i then
    self.pos = j + 1
    return s:sub(1, j)
  elseif self.exited then
    error(string.format("vmlua exited (%s) before printing %q; after the last match it printed:\n%s",
                        tostring(self.code or self.signal), text, s:sub(self.pos)), 2)
  end
  error(string.format("timed out waiting for %q; after the last match vmlua printed:\n%s",
                      text, s:sub(self.pos)), 2)
end

function Term:send(keys)
  assert(self.proc:write(keys))
end

-- Types a line and waits for libedit to echo it back.
function Term:line(text)
  self:send(text .. "\r")
  self:expect(text .. "\n")
end

-- Waits for the process to end; returns its exit code (or nil, signal).
function Term:wait_exit(timeout)
  if not self.changed.wait(function() return self.exited end, timeout or 15) then
    error("vmlua did not exit; it printed:\n" .. self:rest(), 2)
  end
  return self.code, self.signal
end

-- Kills the process if it still runs (its QEMU children get SIGTERM from
-- the kernel when it dies); safe to call twice.
function Term:close()
  if self.proc then self.proc:close() end
end

return pty
