-- The VM object: a validated configuration and a life cycle modelled on
-- VZVirtualMachine: observable states, and operations that are allowed only
-- in some of them. The QEMU process is driven over QMP.
local core = require "vmlua.core"
local config = require "vmlua.config"
local console = require "vmlua.console"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
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
  interrupt_timeout = 10, -- for the shell to answer after a run timed out
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
local STATE_NAMES = { "stopped", "starting", "running", "pausing", "paused", "resuming", "stopping", "error" }
local STATES = {}
for _, name in ipairs(STATE_NAMES) do STATES[name] = true end
local TIMEOUT_ONLY = { "timeout" }
machine.ENDED, machine.TIMEOUT_ONLY = ENDED, TIMEOUT_ONLY -- for shell.lua

-- Checks the options of a call to vm:OP and returns them (a table); raises
-- at the line that called vm:OP (the options must come straight from there).
function machine.options(vm, op, opts, names)
  local function fail(fmt, ...)
    errors.raise(string.format("vm %s: %s: " .. fmt, vm.name, op, ...), 4)
  end
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail("the options must be a table, got %s", fields.describe(opts)) end
  local known = {}
  for _, n in ipairs(names) do known[n] = true end
  for k in pairs(opts) do
    if not known[k] then
      local near = type(k) == "string" and fields.suggest(k, names)
      fail("unknown option %s; %s", fields.describe(k),
           near and string.format('did you mean "%s"?', near) or "it takes " .. table.concat(names, ", "))
    end
  end
  local t = opts.timeout
  if t ~= nil and (type(t) ~= "number" or t ~= t or t < 0 or t == math.huge) then
    fail("timeout must be a number of seconds (0 or more, finite), got %s",
         t ~= t and "NaN" or fields.describe(t))
  end
  return opts
end

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

-- The handlers run before the waiters wake, so an operation that returns
-- has had the handlers of its changes called, and events come in order.
function VM:_set_state(new, reason)
  local old = self.state
  if reason then self.reason = reason end
  if new == old then return end
  self.state = new
  self:_emit("state", new, old)
  self:_emit(new, self)
  self.changed.notify()
end

-- A run-time failure: names the VM, what it was doing, and the console tail.
function VM:_failure(what)
  self.failure_unreported = nil -- the caller raises it
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
  if not STATES[state] then
    local near = type(state) == "string" and fields.suggest(state, STATE_NAMES)
    errors.raise(string.format("vm %s: wait: %s is not a state; %s", self.name, fields.describe(state),
      near and string.format('did you mean "%s"?', near) or "the states are " .. table.concat(STATE_NAMES, ", ")), 2)
  end
  opts = machine.options(self, "wait", opts, TIMEOUT_ONLY)
  if machine.dry_run then return self end
  local timeout = opts.timeout
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
  self.claim, err = runtime.claim(self.paths) -- held until _finish, so the name is ours
  if not self.claim then errors.raise(string.format("vm %s: cannot start: %s", self.name, err), 2) end
  self.reason, self.stderr, self.stop_requested, self.panicked = nil, "", false, false
  self.shutdown, self.qmp_lost, self.exit_status, self.forced = nil, false, nil, nil
  self.process, self.qmp, self.serial = nil, nil, nil
  self:_set_state("starting")
  local accel, _, warning = qemu.accel(cfg)
  self.accel = accel
  if warning and not warned[warning] then
    warned[warning] = true
    machine.notice(warning)
  end
  local launched
  -- KVM that passed the probe may still kill QEMU: then TCG, once (see _exited).
  self.kvm_trial = self.accel == "kvm" and cfg.accel == nil
  launched, ok, err = pcall(self._launch, self)
  if launched and not ok and self:_kvm_died() then launched, ok, err = pcall(self._launch, self) end
  self.kvm_trial = false
  if launched and ok and self.exit_status then self:_exited(self.exit_status[1], self.exit_status[2]) end
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
  -- The runtime directory's log is rotated; a log the user named is theirs.
  self.serial = console.new { log = cfg.console.log or paths.log, stdio = cfg.console.stdio,
                              rotate = not cfg.console.log and console.LOG_BYTES or nil }
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
  -- The console FIFOs are open before QEMU starts, so no byte is lost.
  os.remove(paths.console_in)
  os.remove(paths.console_out)
  local fifos
  fifos, err = core.open_fifos(paths.console_out, paths.console_in)
  if not fifos then return nil, "cannot make the console FIFOs " .. paths.console .. ".{in,out}: " .. err end
  self.serial:attach(fifos)

  local cmd = qemu.command(cfg, paths, self.accel)
  self.process, err = core.spawn {
    file = cmd.file, args = cmd.args,
    on_stdout = function(data) self:_stderr(data) end,
    on_stderr = function(data) self:_stderr(data) end,
    on_exit = function(code, signal) self:_exited(code, signal) end,
    guarded = true,
  }
  if not self.process then return nil, err end
  machine.live[self] = true
  runtime.write_pid(paths, self.process:pid())
  self.guard, err = machine.guard(self)
  if not self.guard then return nil, err end

  -- QEMU connects to QMP while it starts, before the guest runs.
  local ok = task.await(function(wake)
    self.on_connect = function() if connected.qmp then wake(true) end end
    self.on_exit_wake = wake
    self.on_connect()
  end, machine.start_timeout)
  self.on_connect, self.on_exit_wake = nil, nil
  if not ok then
    return nil, self.exit_status and self:_exit_reason()
      or "QEMU did not connect within " .. machine.start_timeout .. " s"
  end
  self:_close_servers()
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

-- If vmlua dies, the guard presses the power button (see src/guard.c); it
-- removes the runtime files afterwards.
function machine.guard(vm)
  local paths = vm.paths
  local files = {}
  for key, path in pairs(paths) do
    if key ~= "dir" then files[#files + 1] = path end
  end
  return core.guard { pid = vm.process:pid(), socket = paths.guard, lock = paths.lock,
                      files = files, dir = paths.dir }
end

-- QEMU died under KVM before the guest ran, though the probe passed: say so
-- in QEMU's words and clear the way to start again under TCG.
function VM:_kvm_died()
  if not self.kvm_trial or self.stop_requested or self.state ~= "starting" then return false end
  if self.process and not self.exit_status then -- QMP may close before QEMU's exit is seen
    task.await(function(wake) self.on_exit_wake = wake end, 2)
    self.on_exit_wake = nil
  end
  if not self.exit_status then return false end
  local accel = require "vmlua.accel"
  local how = self.exit_status[2] and ("was killed by SIG" .. self.exit_status[2])
    or ("exited with status " .. tostring(self.exit_status[1]))
  local words = accel.words(self.stderr) or how
  accel.kvm_failed(words)
  machine.notice(string.format('vm %s: QEMU %s under KVM ("%s"); starting it again under TCG',
                               self.name, how, words))
  machine.live[self] = nil
  if self.guard then self.guard:dismiss() end
  self:_close_servers()
  if self.qmp then self.qmp:close() end
  if self.serial then self.serial:close() end
  if self.process then self.process:close() end
  for _, file in ipairs { self.paths.qmp, self.paths.guard, self.paths.pid } do -- _launch remakes the FIFOs
    os.remove(file)
  end
  self.process, self.qmp, self.serial, self.guard, self.exit_status = nil, nil, nil, nil, nil
  self.reason, self.stderr, self.shutdown, self.qmp_lost, self.panicked = nil, "", nil, false, false
  self.accel, self.kvm_trial = "tcg", false
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
-- A VM that ended meanwhile (stopped by a signal, say) keeps its end.
function VM:_abort(err)
  self.start_failure = err
  if self.process and self.process:running() and not wait_ended(self, 2) then
    self.stop_requested = true
    self.process:kill("KILL")
    wait_ended(self)
  end
  if not ENDED[self.state] then
    self:_finish("error", self.exit_status and not self.stop_requested and self:_exit_reason() or err)
  end
  self.start_failure = nil
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
  local process = self.process -- a KVM fallback may start another meanwhile
  if not (process and process:running()) or self.stop_requested then return end
  core.timer(1, 0, function()
    if self.process == process and process:running() and not self.stop_requested then
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
  local trial = self.kvm_trial -- start() decides: TCG, or the end (waking it may start TCG at once)
  if self.on_exit_wake then self.on_exit_wake(nil, "exited") end
  if trial then return end
  -- The console drains what QEMU wrote (its last lines: a panic, say) and
  -- ends: vmlua holds its FIFOs open, so no end of file comes by itself.
  if self.serial and self.serial.stream and not self.serial.ended then self.serial.stream:finish() end
  if ENDED[self.state] then return end
  local state, reason = self:_end_reason()
  self:_finish(state, reason)
end

function VM:_end_reason()
  local code, signal = self.exit_status[1], self.exit_status[2]
  local tail = self.serial and self.serial.tail or ""
  local reset = self.shutdown and self.shutdown.reason == "guest-reset"
  if self.panicked or (reset and tail:find("Kernel panic", 1, true)) then
    return "error", "the guest kernel panicked"
  elseif self.qmp_lost then
    return "error", "the QMP connection closed: " .. self.qmp_lost
  elseif self.start_failure and self.stop_requested then
    return "error", self.start_failure
  elseif self.stop_requested and (self.forced or self.shutdown or code == 0) then
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
  if self.guard then self.guard:dismiss() end
  -- A VM that fails under a script that is not waiting on it: the CLI
  -- reports it at exit (unless a later call raises it).
  self.failure_unreported = state == "error" and self.state ~= "starting" or nil
  self:_close_servers()
  if self.qmp then self.qmp:close() end
  if self.serial then self.serial:close() end
  if self.process then self.process:close() end
  if self.paths then runtime.remove(self.paths, self.claim) end
  self:_set_state(state, reason)
end

-- QMP and the console close as QEMU ends: the VM's reason says why better
-- than `err` does, once it has ended.
function VM:_why_closed(err)
  if ENDED[self.state] or wait_ended(self, 2) then return self.reason or err end
  return err
end

-- Forces the VM off (QMP quit, then SIGKILL), announcing why.
function VM:_force(why)
  if ENDED[self.state] then return end
  -- QMP closed: QEMU may be ending by itself; then its own reason stands
  if self.qmp and not self.qmp.open and wait_ended(self, 1) then return end
  if not self.forced then
    machine.notice(string.format("vm %s: %s; forcing it off", self.name, why))
  end
  self.stop_requested, self.forced = true, true
  if not self.process then return end -- none yet only while start() sets up
  -- QEMU flushes its disks on quit; a guest still starting has written nothing
  if self.qmp and self.qmp.open and self.state ~= "starting" then
    self.qmp:send("quit")
    if wait_ended(self, 5) then return end
  end
  if self.process:running() then self.process:kill("KILL") end
  wait_ended(self)
end

-- How a stop ended: "graceful" when the guest powered off, "forced" when
-- vmlua forced it off; raises when QEMU ended some other way.
function VM:_stop_outcome()
  local by_guest = self.shutdown and tostring(self.shutdown.reason):match("^guest%-")
  if self.state == "stopped" and not self.forced and by_guest then return "graceful" end
  if self.state == "stopped" then return "forced" end
  errors.raise(self:_failure("did not stop cleanly: " .. tostring(self.reason)), 3)
end

-- Asks the guest to power off (a paused guest is resumed first); forces it
-- off after the timeout, and says so. Returns "graceful" or "forced".
function VM:stop(opts)
  opts = machine.options(self, "stop", opts, TIMEOUT_ONLY)
  if machine.dry_run then return self end
  if self.state == "stopping" then
    wait_ended(self)
    return self:_stop_outcome()
  elseif ENDED[self.state] then -- as VZ and limactl do; vm:can_stop() tells
    errors.raise(self:_failure("cannot stop: it is " .. self.state), 2)
  end
  self:_check("stop")
  local timeout = opts.timeout or machine.stop_timeout
  local was_paused = self.state == "paused"
  self.stop_requested = true
  self:_set_state("stopping")
  local deadline = core.now() + timeout
  if was_paused then self.qmp:execute("cont", nil, timeout) end
  if not ENDED[self.state] then
    self.qmp:send("system_powerdown")
    if not wait_ended(self, math.max(0, deadline - core.now())) then
      self:_force(string.format("the guest did not power off within %g s", timeout))
    end
  end
  return self:_stop_outcome()
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
  local from = vm.state
  vm:_set_state(via)
  -- A QEMU that does not answer (hung, stopped) leaves the VM as it was, so
  -- that stop() and kill() still work; a late answer moves it on by its event.
  local function fail(why)
    if vm.state == via then vm:_set_state(from) end
    errors.raise(vm:_failure(op .. " failed: " .. why), 4)
  end
  local _, err = vm.qmp:execute(command, nil, machine.start_timeout)
  if err == "timeout" then
    fail(string.format("QEMU did not answer within %g s", machine.start_timeout))
  elseif err then
    fail(vm:_why_closed(err))
  end
  local ok = vm:_wait_until(function(s) return s == target or ENDED[s] end, machine.start_timeout)
  if not ok or vm.state ~= target then
    fail(string.format("it did not complete within %g s (it is %s)", machine.start_timeout, vm.state))
  end
  return vm
end

function VM:pause() return transition(self, "pause", "pausing", "paused", "stop") end
function VM:resume() return transition(self, "resume", "resuming", "running", "cont") end

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
-- at once, announced (force, or a VM still starting). Returns "graceful" or
-- "forced"; joins a stop under way rather than cutting it short.
function machine.stop(vm, force, timeout)
  if force then
    vm:_force("not waiting for the guest to power off")
  elseif not ENDED[vm.state] and vm.state ~= "stopping" and not vm:can_stop() then
    vm:_force("it is " .. vm.state .. ", so it cannot power off")
  end
  if ENDED[vm.state] then return vm:_stop_outcome() end
  return vm:stop { timeout = timeout }
end

-- Stops every live VM, gracefully or (force) at once; inside a task it
-- returns when all have ended.
function machine.stop_all(force, timeout)
  local left, done = 0, nil
  for vm in pairs(machine.live) do
    left = left + 1
    task.spawn(function()
      -- a VM that failed as it stopped still fails the run (see cli)
      if not pcall(machine.stop, vm, force, timeout) and vm.state == "error" then
        vm.failure_unreported = true
      end
      left = left - 1
      if left == 0 and done then done() end
    end)
  end
  if left > 0 and task.current() then task.await(function(wake) done = wake end) end
end

require("vmlua.shell").install(VM, machine)

return machine
