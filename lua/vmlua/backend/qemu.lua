--- The QEMU backend: a QEMU process that vmlua spawns and drives over QMP.
-- A backend makes the VM's monitor (`vm.qmp`, QMP-shaped), its process
-- handle (`vm.process`) and its console (`vm.serial`); vmlua.machine runs
-- the life cycle over them.
-- @module vmlua.backend.qemu
local core = require "vmlua.core"
local console = require "vmlua.console"
local disks = require "vmlua.disks"
local efi = require "vmlua.efi"
local lan = require "vmlua.lan"
local qemu = require "vmlua.qemu"
local qmp = require "vmlua.qmp"
local runtime = require "vmlua.runtime"
local server = require "vmlua.instance.server"
local task = require "vmlua.task"
local virtiofsd = require "vmlua.qemu.virtiofsd"

local backend = { name = "qemu" }

local warned = {}

local function close_servers(vm)
  for _, listener in pairs(vm.servers or {}) do listener:close() end
  vm.servers = nil
end

-- If vmlua dies, the guard presses the power button (see src/guard.c); it
-- removes the runtime files afterwards.
local function guard(vm)
  local paths = vm.paths
  local files = {}
  for key, path in pairs(paths) do
    if key ~= "dir" then files[#files + 1] = path end
  end
  for _, file in ipairs(runtime.device_files(paths)) do files[#files + 1] = file end
  return core.guard { pid = vm.process:pid(), socket = paths.guard, lock = paths.lock,
                      files = files, dir = paths.dir }
end

-- QEMU closes QMP as it exits, so give it a moment to exit by itself; if it
-- does not, vmlua has lost control of it and ends it.
local function qmp_closed(vm, reason)
  local process = vm.process -- a KVM fallback may start another meanwhile
  if not (process and process:running()) or vm.stop_requested then return end
  core.timer(1, 0, function()
    if vm.process == process and process:running() and not vm.stop_requested then
      vm.qmp_lost = reason
      vm.process:kill("KILL")
    end
  end)
end

-- One QEMU: its files, daemons and LANs, its console FIFOs, the process, its
-- guard, and QMP; the guest runs when it returns true.
local function launch_once(vm, machine)
  local cfg, paths = vm.config, vm.paths
  local ready, problem = disks.prepare(cfg, paths) -- made, grown, ephemeral overlays; or who holds one
  if not ready then return nil, problem end
  ready, problem = efi.prepare(cfg) -- a missing UEFI variable store is copied from its template
  if not ready then return nil, problem end
  ready, problem = require("vmlua.cloudinit.seed").prepare(cfg) -- its key, and its seed unless cached
  if not ready then return nil, problem end
  vm.daemons, problem = virtiofsd.start(cfg, paths) -- the shares' daemons listen before QEMU connects
  if not vm.daemons then return nil, problem end
  lan.release(vm.lan_holds) -- a second launch (KVM fallback) joins again
  vm.lan_holds, problem = lan.join_all(cfg) -- each LAN's switch runs until QEMU holds it
  if not vm.lan_holds then return nil, problem end
  -- The runtime directory's log is rotated; a log the user named is theirs.
  vm.serial = console.new { log = cfg.console.log or vm.log_path or paths.log, stdio = cfg.console.stdio,
                            rotate = not cfg.console.log and console.LOG_BYTES or nil }
  local connected = {}
  local function accept(kind)
    return function(stream)
      if connected[kind] then stream:close() return end
      connected[kind] = stream
      if vm.on_connect then vm.on_connect() end
    end
  end
  local err
  vm.servers = {}
  vm.servers.qmp, err = core.listen(paths.qmp, accept("qmp"))
  if not vm.servers.qmp then return nil, "cannot listen on " .. paths.qmp .. ": " .. err end
  -- The console FIFOs are open before QEMU starts, so no byte is lost.
  os.remove(paths.console_in)
  os.remove(paths.console_out)
  local fifos
  fifos, err = core.open_fifos(paths.console_out, paths.console_in)
  if not fifos then return nil, "cannot make the console FIFOs " .. paths.console .. ".{in,out}: " .. err end
  vm.serial:attach(fifos)

  -- vm.incoming = { file=, load=fn(vm) }, set by vm:restore: QEMU loads a
  -- saved state (the file is its stdin) instead of booting
  local cmd = qemu.command(cfg, paths, vm.accel, { incoming = vm.incoming and "defer" })
  vm.process, err = core.spawn {
    file = cmd.file, args = cmd.args,
    on_stdout = function(data) backend.stderr(vm, data) end,
    on_stderr = function(data) backend.stderr(vm, data) end,
    on_exit = function(code, signal) vm:_exited(code, signal) end,
    guarded = true, stdin = vm.incoming and vm.incoming.file,
  }
  if not vm.process then return nil, err end
  machine.live[vm] = true
  runtime.write_pid(paths, vm.process:pid())
  vm.guard, err = guard(vm)
  if not vm.guard then return nil, err end

  -- QEMU connects to QMP while it starts, before the guest runs.
  local ok = task.await(function(wake)
    vm.on_connect = function() if connected.qmp then wake(true) end end
    vm.on_exit_wake = wake
    vm.on_connect()
  end, machine.start_timeout)
  vm.on_connect, vm.on_exit_wake = nil, nil
  if not ok then
    return nil, vm.exit_status and backend.exit_reason(vm)
      or "QEMU did not connect within " .. machine.start_timeout .. " s"
  end
  close_servers(vm)
  vm.qmp = qmp.new(connected.qmp, {
    on_event = function(name, data) vm:_event(name, data) end,
    on_close = function(reason) qmp_closed(vm, reason) end,
  })
  local _, qerr = vm.qmp:handshake(machine.start_timeout)
  if qerr then return nil, "QMP: " .. qerr end
  if vm.incoming then
    local _, ierr = vm.incoming.load(vm)
    if ierr then return nil, ierr end
  end
  local status, serr = vm.qmp:execute("query-status", nil, machine.start_timeout)
  if not status then return nil, "QMP: " .. serr end
  if not status.running then
    local _, cerr = vm.qmp:execute("cont", nil, machine.start_timeout)
    if cerr then return nil, "QMP: " .. cerr end
  end
  if vm.state ~= "starting" then return nil, vm.reason or ("it is " .. vm.state) end
  local why
  vm.server, why = server.start(vm)
  if not vm.server then return nil, "cannot serve it on " .. vm.paths.control .. ": " .. why end
  return true
end

-- QEMU died under KVM before the guest ran, though the probe passed: say so
-- in QEMU's words and clear the way to start again under TCG.
local function kvm_died(vm, machine)
  if not vm.kvm_trial or vm.stop_requested or vm.state ~= "starting" then return false end
  if vm.process and not vm.exit_status then -- QMP may close before QEMU's exit is seen
    task.await(function(wake) vm.on_exit_wake = wake end, 2)
    vm.on_exit_wake = nil
  end
  if not vm.exit_status then return false end
  local accel = require "vmlua.accel"
  local how = vm.exit_status[2] and ("was killed by SIG" .. vm.exit_status[2])
    or ("exited with status " .. tostring(vm.exit_status[1]))
  local words = accel.words(vm.stderr) or how
  accel.kvm_failed(words)
  machine.notice(string.format('vm %s: QEMU %s under KVM ("%s"); starting it again under TCG',
                               vm.name, how, words))
  machine.live[vm] = nil
  if vm.guard then vm.guard:dismiss() end
  close_servers(vm)
  if vm.qmp then vm.qmp:close() end
  if vm.serial then vm.serial:close() end
  if vm.process then vm.process:close() end
  virtiofsd.stop(vm.daemons) -- launch_once starts them again
  -- launch_once remakes the FIFOs; QEMU its sockets
  for _, file in ipairs { vm.paths.qmp, vm.paths.guard, vm.paths.pid, vm.paths.agent } do
    os.remove(file)
  end
  vm.process, vm.qmp, vm.serial, vm.guard, vm.exit_status = nil, nil, nil, nil, nil
  vm.reason, vm.stderr, vm.shutdown, vm.qmp_lost, vm.panicked = nil, "", nil, false, false
  vm.accel, vm.kvm_trial = "tcg", false
  return true
end

--- Starts the VM's QEMU; true once the guest runs, else nil and why. KVM that
-- passed the probe may still kill QEMU: then TCG, once.
-- @param vm the VM (vmlua.machine), "starting", with its runtime paths claimed
-- @treturn boolean|nil true, or nil when it did not start
-- @treturn string why
function backend.launch(vm)
  local machine = require "vmlua.machine"
  local accel, _, warning = qemu.accel(vm.config)
  vm.accel = accel
  if warning and not warned[warning] then
    warned[warning] = true
    machine.notice(warning)
  end
  vm.kvm_trial = vm.accel == "kvm" and vm.config.accel == nil
  local ok, err = launch_once(vm, machine)
  if not ok and kvm_died(vm, machine) then ok, err = launch_once(vm, machine) end
  return ok, err
end

--- After backend.launch, even one that raised: QEMU holds its LANs now, or has ended.
-- @param vm the VM
function backend.launched(vm)
  vm.kvm_trial = false
  lan.release(vm.lan_holds)
  vm.lan_holds = nil
end

--- Keeps the end of what QEMU wrote, for the reason of its end.
-- @param vm the VM
-- @tparam string data output
function backend.stderr(vm, data)
  vm.stderr = (vm.stderr .. data):sub(-4096)
end

--- Why QEMU ended, in its own words when it wrote any.
-- @param vm the VM, with vm.exit_status
-- @treturn string
function backend.exit_reason(vm)
  local status, signal = vm.exit_status[1], vm.exit_status[2]
  local stderr = vm.stderr:gsub("%s+$", "")
  local how = signal and ("QEMU was killed by SIG" .. signal) or ("QEMU exited with status " .. status)
  if stderr ~= "" then how = disks.lock_problem(vm.config, stderr) or (how .. ": " .. stderr) end
  return how
end

--- A client of the VM's guest agent, synced: QEMU's socket for the port (agent.lua).
-- @param vm the VM
-- @tparam number timeout seconds
-- @return the client, or nil and why
function backend.agent(vm, timeout)
  return require("vmlua.agent").open(runtime.paths(vm.name).agent, timeout)
end

--- Releases what the VM held once it has ended: the guard, the listeners,
-- the shares' daemons (after QEMU: a daemon never outlives the VM) and LANs.
-- @param vm the VM
function backend.release(vm)
  if vm.guard then vm.guard:dismiss() end
  close_servers(vm)
  virtiofsd.stop(vm.daemons)
  vm.daemons = nil
  lan.release(vm.lan_holds)
  vm.lan_holds = nil
end

return backend
