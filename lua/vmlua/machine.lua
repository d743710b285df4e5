--- The VM object: a validated configuration and a life cycle modelled on
-- VZVirtualMachine: observable states, and operations that are allowed only
-- in some of them. A backend (vmlua.backend.*) runs the guest and gives the
-- VM a QMP-shaped monitor, a process handle and a console. Its functions:
-- launch, launched, exit_reason, release and agent; optional: adopt (take
-- over a guest no vmlua serves) and lost (why, when the monitor was lost).
-- @module vmlua.machine
local core = require "vmlua.core"
local config = require "vmlua.config"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local runtime = require "vmlua.runtime"
local task = require "vmlua.task"
local validate = require "vmlua.validate"

local machine = {
  defined = {},     -- every VM created, in order (vmlua plan lists them)
  live = {},        -- VMs whose backend runs a guest (a QEMU process)
  adopted = {},     -- VMs this process took over (VM:_adopt), let go as it ends
  dry_run = false,  -- vmlua plan: life-cycle calls do nothing
  start_timeout = 30,
  stop_timeout = 15,
  press_interval = 3, -- vm:stop presses the power button again after this many seconds
  expect_timeout = 60,
  interrupt_timeout = 10, -- for the shell to answer after a run timed out
  console_lines = 15,
}

--- A virtual machine: what `vmlua.vm{...}` returns.
-- @type VM
-- @field name the VM's name
-- @field state "stopped" "starting" "running" "pausing" "paused" "resuming" "stopping" or "error"
-- @field reason why it last stopped or failed
-- @field accel what its QEMU runs under: "kvm", "hvf" or "tcg"
-- @field config its resolved configuration
-- @field pid QEMU's process id while it runs, else nil
-- @field serial its console: `vm.serial.tail` and `vm.serial:last_lines(n)` are printable text
local VM = {}

-- Methods that other modules add to the class (each its install(VM,
-- machine)), loaded at their first use so that vmlua plan loads none.
machine.EXTENSIONS = {
  ["vmlua.shell"] = { "console", "expect", "run", "send", "_check_console", "_console_expect", "_interrupt_run",
                      "_run" },
  ["vmlua.agent"] = { "_agent_port", "_answered", "_neither", "_run_any", "_way_in" },
  ["vmlua.snapshot"] = { "restore", "save" },
  ["vmlua.ssh"] = { "ssh", "wait_ssh" },
}
local extension_of = {}
for module, names in pairs(machine.EXTENSIONS) do
  for _, name in ipairs(names) do extension_of[name] = module end
end

local function extend(module)
  for _, name in ipairs(machine.EXTENSIONS[module]) do extension_of[name] = nil end
  require(module).install(VM, machine)
end

--- The VM class with every method installed (help, completion and the sandbox list them).
-- @treturn table
function machine.class()
  for module in pairs(machine.EXTENSIONS) do
    if extension_of[machine.EXTENSIONS[module][1]] then extend(module) end
  end
  return VM
end

-- vm.pid is worked out when read (see VM:_pid); the rest comes from the
-- class, an extension's method loading its module.
VM.__index = function(vm, key)
  if key == "pid" then return vm:_pid() end
  local value = VM[key]
  if value == nil and extension_of[key] then
    extend(extension_of[key])
    value = VM[key]
  end
  return value
end

-- The VM's public fields (the doc block above), which completion at the
-- prompt offers beside the methods without a leading _; any other field
-- of a VM is internal.
machine.FIELDS = { "name", "state", "reason", "pid", "accel", "config", "serial" }

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

-- QEMU's pid while it runs; a VM attached from another process has it
-- from the process that runs it (instance/client.lua).
function VM:_pid()
  if self.process and self.process:running() then return math.tointeger(self.process:pid()) end
  if self.remote and not ENDED[self.state] then return math.tointeger(self.remote.pid) end
  return nil
end

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
  require("vmlua.notice").say(message) -- silenced by vmlua -q
end

local silent = setmetatable({}, { __mode = "k" }) -- VMs that machine.stop stops: its caller reports
machine.announce_stops = false -- set by the vmlua executable (cli.lua)

local function wait_ended(vm, timeout)
  return vm:_wait_until(function(s) return ENDED[s] end, timeout)
end

-- vmlua.vm(spec); `where` is the user's line, even through a tail call.
-- A VM object for a resolved configuration (config.vm's, or config.decode's).
function machine.from_config(cfg)
  local vm = setmetatable({ config = cfg, name = cfg.name, state = "stopped",
                            handlers = {}, changed = task.condition(), runs = 0 }, VM)
  machine.defined[#machine.defined + 1] = vm
  return vm
end

machine.new = fields.entry(function(where, spec)
  return machine.from_config(config.vm(spec, where))
end)

--- Adds a device to the configuration: a `vmlua.disk{}`, a `vmlua.nat{}` or a `vmlua.share{}`.
-- @function VM:add
-- @param device the disk or the nat
-- @return the VM
VM.add = fields.entry(function(where, self, device)
  -- QEMU would never see it: no hot-plug, so say so rather than drop it.
  if self.remote or not ENDED[self.state] then
    local what = config.is(device) and ("a " .. device.kind) or "a device"
    errors.raise(string.format("%s: vm %s: cannot add %s: %s; add it before vm:start()", fields.location(where),
      self.name, what, self.remote and ("vmlua pid " .. tostring(self.remote.vmlua) .. " runs it, from its own "
      .. "configuration") or ("it is " .. self.state .. ", and devices are not added to a running VM")))
  end
  config.add(self.config, device, where)
  return self
end)

--- Checks the configuration against the host before anything starts.
-- @treturn boolean|nil true, or nil when something is wrong
-- @treturn string the first problem
-- @treturn {string,...} every problem
function VM:validate()
  return validate.vm(self.config)
end

--- The text `vmlua plan` prints for this VM: its resolved configuration and QEMU's argv.
-- @treturn string
function VM:plan()
  return require("vmlua.plan").text(self.config)
end

function VM:__tostring()
  local qemu_pid = self.pid
  local pid = qemu_pid and (", pid " .. qemu_pid) or ""
  return string.format("vm %s (%s%s, %s)", self.name, self.state, pid, self.config.arch)
end

--- Whether vm:start() is allowed now (the VM is stopped, or failed).
-- @function VM:can_start
-- @treturn boolean

--- Whether vm:stop() is allowed now (running or paused).
-- @function VM:can_stop
-- @treturn boolean

--- Whether vm:pause() is allowed now (running).
-- @function VM:can_pause
-- @treturn boolean

--- Whether vm:resume() is allowed now (paused).
-- @function VM:can_resume
-- @treturn boolean
for op, from in pairs(ALLOWED) do
  VM["can_" .. op] = function(self) return from[self.state] == true end
end

function VM:_check(op)
  if not ALLOWED[op][self.state] then
    errors.raise(string.format("vm %s: cannot %s: it is %s", self.name, op, self.state), 3)
  end
end

--- Events: "state" gets (new, old); a state name gets (vm). Handlers run as tasks.
-- "qmp" gets every QMP event (name, data).
-- @tparam string event "state", a state name, or "qmp"
-- @tparam function fn the handler
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
  if self.server then self.server:state(new, old) end
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

--- Waits for a state; raises if it cannot come.
-- @tparam string state a state name ("running", "stopped", ...)
-- @tparam[opt] table opts `timeout`: seconds to wait
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

-- The backend that runs a VM of this configuration.
function machine.backend(cfg)
  return require("vmlua.backend." .. (cfg.backend and cfg.backend.kind or "qemu"))
end

-- Host port 0 in a forward: a port free now, chosen at each start.
function machine.choose_ports(cfg)
  for _, n in ipairs(cfg.net) do
    for _, f in ipairs(n.forward or {}) do
      if f.auto then
        local port, err = core.free_port(f.address)
        if not port then return nil, "cannot find a free port on " .. f.address .. ": " .. err end
        f.host = port
      end
    end
  end
  return true
end

--- The host ports forwarded to the guest: `{ [guest port] = host port }`, with the ports chosen at start
-- for a forward of host port 0 (`forward = { [0] = 22 }`).
-- @treturn table
function VM:ports()
  local ports = {}
  for _, n in ipairs(self.config.net) do
    for _, f in ipairs(n.forward or {}) do
      if f.host ~= 0 and f.protocol ~= "udp" then ports[f.guest] = f.host end
    end
  end
  return ports
end

--- Starts QEMU and returns when the guest runs; raises with the reason if not.
-- With detach, a keeper process runs it (instance/keeper.lua): it outlives
-- the script, which drives it as vmlua.attach would.
-- @tparam[opt] table opts `detach` (true: a keeper process runs it, and it outlives the script)
-- @return the VM
function VM:start(opts)
  opts = machine.options(self, "start", opts, { "detach" })
  if machine.dry_run then return self end
  if self.remote then
    errors.raise(string.format("vm %s: cannot start: vmlua pid %s runs it%s", self.name,
      tostring(self.remote.vmlua or "?"), ENDED[self.state] and ("; vmlua start " .. self.name .. " starts it again")
      or ""), 2)
  end
  if opts.detach then return require("vmlua.instance.keeper").start(self) end
  self:_check("start")
  local ok, err = validate.vm(self.config)
  if not ok then errors.raise(err) end
  local cfg = self.config
  self.paths = runtime.paths(cfg.name)
  self.claim, err = runtime.claim(self.paths) -- held until _finish, so the name is ours
  if not self.claim then errors.raise(string.format("vm %s: cannot start: %s", self.name, err), 2) end
  local chosen, why = machine.choose_ports(cfg)
  if not chosen then
    runtime.remove(self.paths, self.claim)
    errors.raise(string.format("vm %s: cannot start: %s", self.name, why), 2)
  end
  runtime.write_file(self.paths.config, config.encode(cfg))
  self.reason, self.stderr, self.stop_requested, self.panicked = nil, "", false, false
  self.stop_deadline, self.stopper, self.stop_resumes = nil, nil, nil
  self.shutdown, self.qmp_lost, self.exit_status, self.forced, self.stop_reason = nil, false, nil, nil, nil
  self.process, self.qmp, self.serial = nil, nil, nil
  self.backend = machine.backend(cfg)
  self:_set_state("starting")
  local launched
  launched, ok, err = pcall(self.backend.launch, self)
  self.backend.launched(self)
  if launched and ok then self:_set_state("running") end
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

-- Takes over a VM that its backend runs with no vmlua serving it (a
-- libvirt domain whose vmlua died; backend.adopt): this process serves it
-- until it ends, then lets it go, running (machine.let_go_all).
function VM:_adopt()
  local b = machine.backend(self.config)
  if not b.adopt then errors.raise(string.format("vm %s: nothing runs it to attach to", self.name), 3) end
  self.paths = runtime.paths(self.name)
  local err
  self.claim, err = runtime.claim(self.paths)
  if not self.claim then errors.raise(string.format("vm %s: cannot attach: %s", self.name, err), 3) end
  runtime.write_file(self.paths.config, config.encode(self.config))
  self.backend, self.reason, self.stderr, self.stop_requested = b, nil, "", false
  self:_set_state("starting")
  local ok, state, why = pcall(b.adopt, self)
  if not ok or not state then
    self:_finish("error", tostring(ok and why or state))
    errors.raise(string.format("vm %s: cannot attach: %s", self.name, self.reason), 3)
  end
  machine.adopted[self] = true
  self:_set_state(state)
  return self
end

-- The VMs this process took over are let go as it ends: they run on.
function machine.let_go_all()
  for vm in pairs(machine.adopted) do
    machine.adopted[vm] = nil
    if not ENDED[vm.state] then
      machine.live[vm] = nil
      if vm.server then vm.server:close() end
      if vm.serial then vm.serial:close() end
      vm.backend.release(vm)
      runtime.remove(vm.paths, vm.claim)
    end
  end
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
    self:_finish("error", self.exit_status and not self.stop_requested and self.backend.exit_reason(self) or err)
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
  if self.server then self.server:event(name, data) end
  self:_emit("qmp", name, data)
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
    return "error", self.backend.lost and self.backend.lost(self) or ("the QMP connection closed: " .. self.qmp_lost)
  elseif self.start_failure and self.stop_requested then
    return "error", self.start_failure
  elseif self.stop_requested and (self.forced or self.shutdown or code == 0) then
    return "stopped", self.forced and "forced off by vmlua" or self.stop_reason or "stopped by vmlua"
  elseif signal then
    return "error", self.backend.exit_reason(self)
  elseif self.shutdown and self.shutdown.reason == "guest-shutdown" then
    return "stopped", "the guest powered off"
  elseif self.shutdown and self.shutdown.reason == "guest-reset" then
    return "stopped", "the guest rebooted (a reboot stops the VM unless it has reboot = true)"
  elseif code == 0 and self.shutdown then
    return "stopped", "QEMU shut down (" .. tostring(self.shutdown.reason) .. ")"
  end
  return "error", self.backend.exit_reason(self)
end

function VM:_finish(state, reason)
  machine.live[self] = nil
  -- A VM that fails under a script that is not waiting on it: the CLI
  -- reports it at exit (unless a later call raises it).
  self.failure_unreported = state == "error" and self.state ~= "starting" or nil
  if self.qmp then self.qmp:close() end
  if self.serial then self.serial:close() end
  if self.process then self.process:close() end
  self.backend.release(self) -- after QEMU: a share's daemon never outlives the VM
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

-- Presses the power button now and every machine.press_interval seconds (a
-- press before the guest's init listens is lost) until the VM ends, and
-- forces it off after `left` seconds. It runs as a task of its own, so
-- that the stop goes on to its end even if its caller is interrupted.
function VM:_press_until_off(left, timeout)
  self.stopper = task.spawn(function()
    local deadline = core.now() + left
    if self.stop_resumes and self.qmp and self.qmp.open then self.qmp:execute("cont", nil, left) end
    while not ENDED[self.state] do
      if self.qmp and self.qmp.open then self.qmp:send("system_powerdown") end
      local rest = math.max(0, deadline - core.now())
      wait_ended(self, math.min(machine.press_interval, rest))
      if rest <= machine.press_interval then break end
    end
    if not ENDED[self.state] then
      self:_force(string.format("the guest did not power off within %g s", timeout))
    end
  end)
end

--- Asks the guest to power off (a paused guest is resumed first), pressing the power button again every
-- few seconds, since a press before the guest listens is lost; forces it off after the timeout, and says so.
-- @tparam[opt] table opts `timeout`: seconds before it is forced off (15)
-- @treturn string "graceful" or "forced"
function VM:stop(opts)
  opts = machine.options(self, "stop", opts, TIMEOUT_ONLY)
  if machine.dry_run then return self end
  if self.remote then return require("vmlua.instance.client").stop(self, false, opts.timeout) end
  if self.state == "stopping" then
    -- join the stop under way; carry it on if the task that ran it died
    -- (a Ctrl-C breaks the Lua code that runs when it comes)
    if self.stop_deadline and not (self.stopper and coroutine.status(self.stopper) ~= "dead") then
      self:_press_until_off(math.max(0, self.stop_deadline - core.now()), self.stop_timeout_asked)
    end
    wait_ended(self)
    return self:_stop_outcome()
  elseif ENDED[self.state] then -- as VZ and limactl do; vm:can_stop() tells
    errors.raise(self:_failure("cannot stop: it is " .. self.state), 2)
  end
  self:_check("stop")
  local timeout = opts.timeout or machine.stop_timeout
  local was_paused = self.state == "paused"
  self.stop_requested = true
  self.stop_deadline, self.stop_timeout_asked = core.now() + timeout, timeout
  self.stop_resumes = was_paused -- a paused guest does not see the button
  self:_set_state("stopping")
  self:_press_until_off(timeout, timeout)
  wait_ended(self)
  local outcome = self:_stop_outcome()
  -- the vmlua executable says what happened (a forced stop said so already)
  if outcome == "graceful" and machine.announce_stops and not silent[self] then
    machine.notice(string.format("stopped vm %s (graceful: the guest powered off)", self.name))
  end
  return outcome
end

--- Ends the VM at once (SIGKILL): the guest syncs nothing.
function VM:kill()
  if machine.dry_run or ENDED[self.state] then return self end
  if self.remote then return require("vmlua.instance.client").kill(self) end
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

--- Pauses the guest's CPUs (QMP stop); returns when paused.
-- @return the VM
function VM:pause() return transition(self, "pause", "pausing", "paused", "stop") end
--- Resumes a paused guest (QMP cont); returns when running.
-- @return the VM
function VM:resume() return transition(self, "resume", "resuming", "running", "cont") end

--- Sends a raw QMP command and returns its result.
-- @tparam string command the QMP command ("query-status", ...)
-- @tparam[opt] table arguments its arguments
-- @return its result; raises when QEMU refuses the command
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
  if vm.remote then return require("vmlua.instance.client").stop(vm, force, timeout) end
  if force then
    vm:_force("not waiting for the guest to power off")
  elseif not ENDED[vm.state] and vm.state ~= "stopping" and not vm:can_stop() then
    vm:_force("it is " .. vm.state .. ", so it cannot power off")
  end
  if ENDED[vm.state] then return vm:_stop_outcome() end
  silent[vm] = true
  local ok, outcome = pcall(vm.stop, vm, { timeout = timeout })
  silent[vm] = nil
  if not ok then error(outcome, 0) end
  return outcome
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

machine.VM = VM -- the class, as metatable; machine.class() has all its methods

return machine
