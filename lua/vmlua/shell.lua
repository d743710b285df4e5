--- Driving the guest through its console: expect, send, run (a shell
-- command) and the terminal attach. Methods of the VM object, which
-- machine.lua installs; the life cycle stays there.
-- @module vmlua.shell
local core = require "vmlua.core"
local console = require "vmlua.console"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local task = require "vmlua.task"

local shell = {}
local methods = {}
local machine -- vmlua.machine, set by shell.install

function methods:_check_console(what)
  -- a paused guest reads nothing: fail now rather than wait out the timeout
  if self.state == "paused" or self.state == "pausing" then
    errors.raise(string.format("vm %s is paused, so it cannot %s; vm:resume() first", self.name, what), 3)
  end
  if not self.serial or machine.ENDED[self.state] or self.state == "starting" then
    errors.raise(self:_failure(string.format("cannot %s: it is %s", what, self.state)), 3)
  end
end

-- Waits on the console: the match or captures, or false and a failure message.
function methods:_console_expect(pattern, timeout, what)
  local result = table.pack(self.serial:expect(pattern, timeout))
  if result[1] == nil then
    if result[2] == "timeout" then
      return false, self:_failure(string.format("timed out after %g s waiting for %s", timeout, what))
    end
    return false, self:_failure(self:_why_closed("the console closed") .. " while waiting for " .. what)
  end
  return table.unpack(result, 1, result.n)
end

--- Attaches the terminal to the console until Ctrl-] (see vmlua.attach).
-- @treturn string why it ended: detached, or the VM's end
function methods:console()
  return require("vmlua.attach").console(self)
end

--- Waits for console output matching a Lua pattern; returns the match or captures.
-- @tparam string pattern a Lua pattern
-- @tparam[opt] table opts `timeout`: seconds (60)
-- @return the match, or its captures
function methods:expect(pattern, opts)
  local _, bad = console.pattern(pattern)
  if bad and type(pattern) ~= "string" then
    errors.raise(string.format("vm %s: expect: the pattern must be a string, got %s", self.name,
                               fields.describe(pattern)), 2)
  elseif bad then
    errors.raise(string.format("vm %s: expect: bad pattern %q: %s", self.name, pattern, bad), 2)
  end
  opts = machine.options(self, "expect", opts, machine.TIMEOUT_ONLY)
  if machine.dry_run then return "" end
  self:_check_console("expect")
  local result = table.pack(self:_console_expect(pattern, opts.timeout or machine.expect_timeout,
                                                 string.format("console output matching %q", pattern)))
  if result[1] == false then errors.raise(result[2], 2) end
  return table.unpack(result, 1, result.n)
end

--- Types text into the console ("root\n"); returns at once.
-- @tparam string text what to type
-- @return the VM
function methods:send(text)
  if type(text) ~= "string" then
    errors.raise(string.format("vm %s: send: the text must be a string, got %s", self.name,
                               fields.describe(text)), 2)
  end
  if machine.dry_run then return self end
  self:_check_console("send")
  self.serial:send(text)
  return self
end

--- Runs a shell command in the guest through its console (a POSIX shell must
-- be reading the console), or through the guest agent of a VM with
-- `agent = true`, whichever answers first. Returns its output (stderr
-- merged into it) and exit status. Each command runs in a subshell, so
-- `exit` or `cd` do not change the console's shell; commands on one VM run
-- one at a time, and the timeout counts the wait for an earlier run too.
-- A command that times out is interrupted (through the agent: killed).
-- @tparam string command a shell command
-- @tparam[opt] table opts `timeout`: seconds (60)
-- @treturn string its output
-- @treturn integer its exit status
function methods:run(command, opts)
  if type(command) ~= "string" then
    errors.raise(string.format("vm %s: run: the command must be a string, got %s", self.name,
                               fields.describe(command)), 2)
  end
  opts = machine.options(self, "run", opts, machine.TIMEOUT_ONLY)
  if machine.dry_run then return "", 0 end
  self:_check_console("run")
  local serial = self.serial
  if serial.lost then errors.raise(self:_failure("cannot run a command: " .. serial.lost), 2) end
  local timeout = opts.timeout or machine.expect_timeout
  local what = string.format("the command %q", command)
  local deadline = core.now() + timeout
  -- The lock: the owner hands it to the next in line when it is done.
  local queue = self.run_queue or {}
  self.run_queue = queue
  if queue.busy then
    local wake_me
    local got = task.await(function(wake)
      wake_me = wake
      queue[#queue + 1] = wake
      return function()
        for k, w in ipairs(queue) do if w == wake_me then table.remove(queue, k) break end end
      end
    end, timeout)
    if not got then
      errors.raise(self:_failure(string.format("timed out after %g s waiting for %s (queued behind another run)",
                                               timeout, what)), 2)
    end
  end
  queue.busy = true
  local ok, out, status = pcall(self._run_any, self, command, deadline, timeout, what)
  local next_run = table.remove(queue, 1)
  if next_run then next_run(true) else queue.busy = false end
  if not ok then error(out, 0) end -- interrupted (Ctrl-C at the prompt), or a bug
  if out == nil then errors.raise(status, 2) end
  return out, status
end

-- Types the command line and collects its output: output, status or nil
-- and the failure message.
function methods:_run(command, deadline, timeout, what)
  local serial = self.serial
  self.runs = self.runs + 1
  local id = string.format("%x%x%04x", core.getpid(), self.runs, math.random(0, 0xffff))
  -- One line, so the shell echoes all of it before any output. The markers
  -- are printed through %s, so the echo never contains them.
  serial:send(string.format("printf '\\n<<vmlua:%%s:begin>>\\n' %s; (eval '%s'); " ..
                            "printf '\\n<<vmlua:%%s:end:%%d>>\\n' %s \"$?\"\n",
                            id, (command:gsub("'", "'\\''")), id))
  local function left() return math.max(0, deadline - core.now()) end
  local began
  local done, text, status, why = pcall(function()
    local out, err = serial:read_until("<<vmlua:" .. id .. ":begin>>", left())
    began = out ~= nil
    if began then self:_answered().shell = true end
    if out then out, err = serial:read_until("<<vmlua:" .. id .. ":end:", left()) end
    if not out then return nil, nil, err end
    local code, cerr = serial:expect("^(%d+)>>", left())
    return out, code, cerr
  end)
  if not done then -- interrupted: stop the command too, and pass the error on
    serial:send("\003")
    error(text, 0)
  end
  if status then
    -- The markers sit on lines of their own: drop the line ends around the output.
    local first = text:sub(1, 2) == "\r\n" and 3 or text:sub(1, 1) == "\n" and 2 or 1
    local last = text:sub(-2) == "\r\n" and #text - 2 or text:sub(-1) == "\n" and #text - 1 or #text
    return (text:sub(first, last):gsub("\r\n", "\n")), tonumber(status)
  end
  if why ~= "timeout" then
    return nil, self:_failure(self:_why_closed("the console closed") .. " while waiting for " .. what)
  elseif not began and not self:_answered().shell then -- no shell read it: clear the line it waits in
    serial:send("\003")
    return nil, self:_neither(timeout, what)
  end
  return nil, self:_failure(string.format("timed out after %g s waiting for %s; %s", timeout, what,
                                          self:_interrupt_run(command)))
end

-- After a run timed out: Ctrl-C (then Ctrl-\) on the console, until the
-- shell answers again. Says what happened; when the shell does not answer,
-- later runs fail at once.
function methods:_interrupt_run(command)
  local serial = self.serial
  for _, key in ipairs { { "\003", "Ctrl-C" }, { "\028", "Ctrl-\\" } } do
    if serial.ended then break end
    serial:send(key[1])
    self.runs = self.runs + 1
    local id = string.format("%x%x%04x", core.getpid(), self.runs, math.random(0, 0xffff))
    serial:send(string.format("printf '\\n<<vmlua:%%s:ready>>\\n' %s\n", id))
    if serial:read_until("<<vmlua:" .. id .. ":ready>>", machine.interrupt_timeout) then
      return "interrupted it with " .. key[2]
    end
  end
  if serial.ended then return "the console closed" end
  serial.lost = string.format("the shell on the console has not answered since the command %q timed out " ..
                              "and was sent Ctrl-C and Ctrl-\\", command)
  return "it did not stop on Ctrl-C or Ctrl-\\, so later runs on this console fail at once"
end

-- Adds the methods to the VM class of `machine_module`.
function shell.install(VM, machine_module)
  machine = machine_module
  for name, fn in pairs(methods) do VM[name] = fn end
end

return shell
