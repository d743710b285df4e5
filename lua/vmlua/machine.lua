-- The VM object: a validated configuration and a life cycle modelled on
-- VZVirtualMachine: observable states, and operations that are allowed only
-- in some of them. The QEMU process is driven over QMP.
local core = require "vmlua.core"
local config = require "vmlua.config"
local console = require "vmlua.console"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local host = require "vmlua.host"
local qemu = require "vmlua.qemu"
local qmp = require "vmlua.qmp"
local runtime = require "vmlua.runtime"
local task = require "vmlua.task"
local validate = require "vmlua.validate"

local machine = {
  defined = {},     -- every VM created, in order (vmlua plan lists them)
  live = {},        -- VMs with a QEMU process
  dry_run = false,  -- vmlua plan: life-cycle calls do nothing
  start_timeout = 30,
  stop_timeout = 15,
  expect_timeout = 60,
  console_lines = 15,
}

local VM = {}
VM.__index = VM

-- Which states each operation may start from.
local ALLOWED = {
  start = { stopped = true, error = true },
  stop = { running = true, paused = true },
  pause = { running = true },
  resume = { paused = true },
}

local ENDED = { stopped = true, error = true }

function machine.notice(message)
  io.stderr:write("vmlua: ", message, "\n")
end

local warned = {}

local function wait_ended(vm, timeout)
  return vm:_wait_until(function(s) return ENDED[s] end, timeout)
end

-- vmlua.vm(spec); `where` is the user's line, even through a tail call.
machine.new = fields.entry(function(where, spec)
  local cfg = config.vm(spec, where)
  local vm = setmetatable({ config = cfg, name = cfg.name, state = "stopped",
                            handlers = {}, changed = task.condition(), runs = 0 }, VM)
  machine.defined[#machine.defined + 1] = vm
  return vm
end)

VM.add = fields.entry(function(where, self, device)
  config.add(self.config, device, where)
  return self
end)

function VM:validate()
  return validate.vm(self.config)
end

function VM:plan()
  return require("vmlua.plan").text(self.config)
end

function VM:__tostring()
  local pid = self.process and self.process:running() and (", pid " .. self.process:pid()) or ""
  return string.format("vm %s (%s%s, %s)", self.name, self.state, pid, self.config.arch)
end

for op, from in pairs(ALLOWED) do
  VM["can_" .. op] = function(self) return from[self.state] == true end
end

function VM:_check(op)
  if not ALLOWED[op][self.state] then
    errors.raise(string.format("vm %s: cannot %s: it is %s", self.name, op, self.state), 3)
  end
end

-- Events: "state" gets (new, old); a state name gets (vm). Handlers run as tasks.
function VM:on(event, fn)
  local list = self.handlers[event] or {}
  self.handlers[event] = list
  list[#list + 1] = fn
  return fn
end

function VM:_emit(event, ...)
  for _, fn in ipairs(self.handlers[event] or {}) do task.spawn(fn, ...) end
end

function VM:_set_state(new, reason)
  local old = self.state
  if reason then self.reason = reason end
  if new == old then return end
  self.state = new
  self.changed.notify()
  self:_emit("state", new, old)
  self:_emit(new, self)
end

-- A run-time failure: names the VM, what it was doing, and the console tail.
function VM:_failure(what)
  local msg = string.format("vm %s: %s", self.name, what)
  if self.reason and not what:find(self.reason, 1, true) then
    msg = msg .. " (" .. self.reason .. ")"
  end
  local tail = self.serial and self.serial:last_lines(machine.console_lines) or ""
  if tail ~= "" then
    msg = msg .. "\n--- last console lines of " .. self.name .. " ---\n" .. tail
  end
  return msg
end

-- Waits until pred(state) holds; nil, "timeout" otherwise.
function VM:_wait_until(pred, timeout)
  return self.changed.wait(function() return pred(self.state) end, timeout)
end

-- vm:wait(state, {timeout=}): waits for a state; raises if it cannot come.
function VM:wait(state, opts)
  if machine.dry_run then return self end
  local timeout = opts and opts.timeout
  local ok = self:_wait_until(function(s) return s == state or ENDED[s] end, timeout)
  if not ok then
    errors.raise(self:_failure(string.format("timed out after %g s waiting for state %s (it is %s)",
                                      timeout, state, self.state)), 2)
  elseif self.state ~= state then
    errors.raise(self:_failure(string.format("it is %s, so it will never be %s", self.state, state)), 2)
  end
  return self
end

-- Starts QEMU and returns when the guest runs; raises with the reason if not.
function VM:start()
  if machine.dry_run then return self end
  self:_check("start")
  local ok, err = validate.vm(self.config)
  if not ok then errors.raise(err) end
  local cfg = self.config
  self.paths = runtime.paths(cfg.name)
  ok, err = runtime.claim(self.paths)
  if not ok then errors.raise(string.format("vm %s: cannot start: %s", self.name, err), 2) end
  self.reason, self.stderr, self.stop_requested, self.panicked = nil, "", false, false
  self.shutdown, self.qmp_lost, self.exit_status, self.forced = nil, false, nil, nil
  self.process, self.qmp, self.serial = nil, nil, nil
  self:_set_state("starting")
  local _, warning = host.accel_for(cfg.arch)
  if warning and not warned[warning] then
    warned[warning] = true
    machine.notice(warning)
  end
  local launched
  launched, ok, err = pcall(self._launch, self)
  if not launched then -- interrupted (the REPL's Ctrl-C) or a bug: leave nothing behind
    self:_abort(tostring(ok))
    error(ok, 0)
  end
  if not ok then
    self:_abort(err)
    errors.raise(self:_failure("cannot start: " .. self.reason), 2)
  end
  return self
end

function VM:_launch()
  local cfg, paths = self.config, self.paths
  self.serial = console.new { log = cfg.console.log or paths.log, stdio = cfg.console.stdio }
  local connected = {}
  local function accept(kind)
    return function(stream)
      if connected[kind] then stream:close() return end
      connected[kind] = stream
      if self.on_connect then self.on_connect() end
    end
  end
  local err
  self.servers = {}
  self.servers.qmp, err = core.listen(paths.qmp, accept("qmp"))
  if not self.servers.qmp then return nil, "cannot listen on " .. paths.qmp .. ": " .. err end
  self.servers.console, err = core.listen(paths.console, accept("console"))
  if not self.servers.console then return nil, "cannot listen on " .. paths.console .. ": " .. err end

  local cmd = qemu.command(cfg, paths)
  self.process, err = core.spawn {
    file = cmd.file, args = cmd.args,
    on_stdout = function(data) self:_stderr(data) end,
    on_stderr = function(data) self:_stderr(data) end,
    on_exit = function(code, signal) self:_exited(code, signal) end,
  }
  if not self.process then return nil, err end
  machine.live[self] = true
  runtime.write_pid(paths, self.process:pid())

  -- QEMU connects to both sockets while it starts, before the guest runs.
  local ok = task.await(function(wake)
    self.on_connect = function() if connected.qmp and connected.console then wake(true) end end
    self.on_exit_wake = wake
    self.on_connect()
  end, machine.start_timeout)
  self.on_connect, self.on_exit_wake = nil, nil
  if not ok then
    return nil, self.exit_status and self:_exit_reason()
      or "QEMU did not connect within " .. machine.start_timeout .. " s"
  end
  self:_close_servers()
  self.serial:attach(connected.console)
  self.qmp = qmp.new(connected.qmp, {
    on_event = function(name, data) self:_event(name, data) end,
    on_close = function(reason) self:_qmp_closed(reason) end,
  })
  local _, qerr = self.qmp:handshake(machine.start_timeout)
  if qerr then return nil, "QMP: " .. qerr end
  local status, serr = self.qmp:execute("query-status", nil, machine.start_timeout)
  if not status then return nil, "QMP: " .. serr end
  if not status.running then
    local _, cerr = self.qmp:execute("cont", nil, machine.start_timeout)
    if cerr then return nil, "QMP: " .. cerr end
  end
  if self.state == "starting" then self:_set_state("running") end
  if self.state ~= "running" then return nil, self.reason or ("it is " .. self.state) end
  return true
end

function VM:_stderr(data)
  self.stderr = (self.stderr .. data):sub(-4096)
end

function VM:_close_servers()
  for _, server in pairs(self.servers or {}) do server:close() end
  self.servers = nil
end

-- Start failed: leave nothing behind, end in "error", and keep the best reason:
-- QEMU's own words when it exited by itself.
function VM:_abort(err)
  local reason = err
  if self.process and self.process:running() and not wait_ended(self, 2) then
    self.stop_requested = true
    self.process:kill("KILL")
    wait_ended(self)
  end
  if self.exit_status and not self.stop_requested then reason = self:_exit_reason() end
  if ENDED[self.state] then
    self:_set_state("error", reason)
  else
    self:_finish("error", reason)
  end
end

function VM:_event(name, data)
  if name == "STOP" then
    if self.state == "running" or self.state == "pausing" then self:_set_state("paused") end
  elseif name == "RESUME" then
    if self.state == "paused" or self.state == "resuming" then self:_set_state("running") end
  elseif name == "SHUTDOWN" then
    self.shutdown = data
    if not ENDED[self.state] then self:_set_state("stopping") end
  elseif name == "GUEST_PANICKED" then
    self.panicked = true
  end
  self:_emit("qmp", name, data)
end

-- QEMU closes QMP as it exits, so give it a moment to exit by itself; if it
-- does not, vmlua has lost control of it and ends it.
function VM:_qmp_closed(reason)
  if not (self.process and self.process:running()) or self.stop_requested then return end
  core.timer(1, 0, function()
    if self.process:running() and not self.stop_requested then
      self.qmp_lost = reason
      self.process:kill("KILL")
    end
  end)
end

function VM:_exit_reason()
  local status, signal = self.exit_status[1], self.exit_status[2]
  local stderr = self.stderr:gsub("%s+$", "")
  local how = signal and ("QEMU was killed by SIG" .. signal) or ("QEMU exited with status " .. status)
  if stderr ~= "" then how = how .. ": " .. stderr end
  return how
end

function VM:_exited(code, signal)
  self.exit_status = { code, signal }
  if self.on_exit_wake then self.on_exit_wake(nil, "exited") end
  -- Let the console drain so its last lines (a panic, say) are seen.
  local function finish()
    if ENDED[self.state] then return end
    local state, reason = self:_end_reason()
    self:_finish(state, reason)
  end
  if self.serial and self.serial.stream and not self.serial.ended then
    local timer = core.timer(1, 0, finish)
    self.serial.on_end = function() timer:close() finish() end
  else
    finish()
  end
end

function VM:_end_reason()
  local code, signal = self.exit_status[1], self.exit_status[2]
  local tail = self.serial and self.serial.tail or ""
  local reset = self.shutdown and self.shutdown.reason == "guest-reset"
  if self.panicked or (reset and tail:find("Kernel panic", 1, true)) then
    return "error", "the guest kernel panicked"
  elseif self.qmp_lost then
    return "error", "the QMP connection closed: " .. self.qmp_lost
  elseif self.stop_requested then
    return "stopped", self.forced and "forced off by vmlua" or "stopped by vmlua"
  elseif signal then
    return "error", self:_exit_reason()
  elseif self.shutdown and self.shutdown.reason == "guest-shutdown" then
    return "stopped", "the guest powered off"
  elseif self.shutdown and self.shutdown.reason == "guest-reset" then
    return "stopped", "the guest rebooted (guests run with -no-reboot, so a reboot stops the VM)"
  elseif code == 0 and self.shutdown then
    return "stopped", "QEMU shut down (" .. tostring(self.shutdown.reason) .. ")"
  end
  return "error", self:_exit_reason()
end

function VM:_finish(state, reason)
  machine.live[self] = nil
  self:_close_servers()
  if self.qmp then self.qmp:close() end
  if self.serial then self.serial:close() end
  if self.process then self.process:close() end
  if self.paths then runtime.remove(self.paths) end
  self:_set_state(state, reason)
end

-- Asks the guest to power off; forces it off after the timeout, and says so.
-- Returns "graceful" or "forced".
function VM:stop(opts)
  if machine.dry_run then return self end
  if ENDED[self.state] then return "graceful" end
  if self.state == "stopping" then
    wait_ended(self)
    return self.forced and "forced" or "graceful"
  end
  self:_check("stop")
  local timeout = opts and opts.timeout or machine.stop_timeout
  local was_paused = self.state == "paused"
  self.stop_requested = true
  self:_set_state("stopping")
  if not was_paused then
    self.qmp:send("system_powerdown")
    if wait_ended(self, timeout) then return "graceful" end
    machine.notice(string.format("vm %s: the guest did not power off within %g s; forcing it off",
                                 self.name, timeout))
  end
  self.forced = true
  self.qmp:send("quit")
  if not wait_ended(self, 5) then
    self.process:kill("KILL")
    wait_ended(self)
  end
  return "forced"
end

-- Ends the VM at once.
function VM:kill()
  if machine.dry_run or ENDED[self.state] then return self end
  self.stop_requested, self.forced = true, true
  if self.process then -- none yet only while start() sets up
    self.process:kill("KILL")
    wait_ended(self)
  end
  return self
end

local function transition(vm, op, via, target, command)
  if machine.dry_run then return vm end
  vm:_check(op)
  vm:_set_state(via)
  local _, err = vm.qmp:execute(command, nil, machine.start_timeout)
  if err then errors.raise(vm:_failure(op .. " failed: " .. err), 3) end
  local ok = vm:_wait_until(function(s) return s == target or ENDED[s] end, machine.start_timeout)
  if not ok or vm.state ~= target then
    errors.raise(vm:_failure(string.format("%s did not complete (it is %s)", op, vm.state)), 3)
  end
  return vm
end

function VM:pause() return transition(self, "pause", "pausing", "paused", "stop") end
function VM:resume() return transition(self, "resume", "resuming", "running", "cont") end

function VM:_check_console(what)
  if not self.serial or ENDED[self.state] or self.state == "starting" then
    errors.raise(self:_failure(string.format("cannot %s: it is %s", what, self.state)), 3)
  end
end

-- Waits on the console: the match or captures, or false and a failure message.
function VM:_console_expect(pattern, timeout, what)
  local result = table.pack(self.serial:expect(pattern, timeout))
  if result[1] == nil then
    local why = result[2] == "timeout" and string.format("timed out after %g s", timeout)
      or "the console closed"
    return false, self:_failure(why .. " waiting for " .. what)
  end
  return table.unpack(result, 1, result.n)
end

-- Attaches the terminal to the console until Ctrl-] (see vmlua.attach).
function VM:console()
  return require("vmlua.attach").console(self)
end

-- Waits for console output matching a Lua pattern; returns the match or captures.
function VM:expect(pattern, opts)
  if machine.dry_run then return "" end
  self:_check_console("expect")
  local result = table.pack(self:_console_expect(pattern, opts and opts.timeout or machine.expect_timeout,
                                                 string.format("console output matching %q", pattern)))
  if result[1] == false then errors.raise(result[2], 2) end
  return table.unpack(result, 1, result.n)
end

function VM:send(text)
  if machine.dry_run then return self end
  self:_check_console("send")
  self.serial:send(text)
  return self
end

-- Runs a shell command in the guest through its console (a POSIX shell must
-- be reading the console). Returns its output and exit status. Each command
-- runs in a subshell, so `exit` or `cd` do not change the console's shell;
-- commands on one VM run one at a time.
function VM:run(command, opts)
  if machine.dry_run then return "", 0 end
  self:_check_console("run")
  local queue = self.run_queue or {}
  self.run_queue = queue
  if queue.busy then task.await(function(wake) queue[#queue + 1] = wake end) end
  queue.busy = true
  self.runs = self.runs + 1
  local id = string.format("%x%x%04x", core.getpid(), self.runs, math.random(0, 0xffff))
  -- One line, so the shell echoes all of it before any output. The markers
  -- are printed through %s, so the echo never contains them.
  self.serial:send(string.format("printf '\\n<<vmlua:%%s:begin>>\\n' %s; (eval '%s'); " ..
                                  "printf '\\n<<vmlua:%%s:end:%%d>>\\n' %s \"$?\"\n",
                                  id, (command:gsub("'", "'\\''")), id))
  local output, status = self:_console_expect(
    "<<vmlua:" .. id .. ":begin>>\r?\n(.-)\r?\n<<vmlua:" .. id .. ":end:(%d+)>>",
    opts and opts.timeout or machine.expect_timeout, string.format("the command %q", command))
  queue.busy = false
  local next_run = table.remove(queue, 1)
  if next_run then next_run() end
  if output == false then errors.raise(status, 2) end
  return (output:gsub("\r\n", "\n")), tonumber(status)
end

-- Sends a raw QMP command and returns its result.
function VM:qmp_command(command, arguments)
  if not self.qmp or not self.qmp.open then
    errors.raise(self:_failure("no QMP connection: it is " .. self.state), 2)
  end
  local result, err = self.qmp:execute(command, arguments, machine.start_timeout)
  if not result then errors.raise(self:_failure(command .. " failed: " .. err), 2) end
  return result
end

-- Ends a VM that may be in any state: a graceful stop when it can stop, or
-- at once (force, or a VM still starting). Returns "graceful" or "forced".
function machine.stop(vm, force, timeout)
  if force or not vm:can_stop() then
    vm:kill()
    return "forced"
  end
  return vm:stop { timeout = timeout }
end

-- Stops every live VM, gracefully or (force) at once; inside a task it
-- returns when all have ended.
function machine.stop_all(force, timeout)
  local left, done = 0, nil
  for vm in pairs(machine.live) do
    left = left + 1
    task.spawn(function()
      pcall(machine.stop, vm, force, timeout)
      left = left - 1
      if left == 0 and done then done() end
    end)
  end
  if left > 0 and task.current() then task.await(function(wake) done = wake end) end
end

return machine
