-- A VM object for a VM that another vmlua process runs (an instance's
-- keeper, a script, a prompt): vmlua.attach(NAME). It is the same class as
-- vmlua.vm{} returns. Its state follows the server's (instance/server.lua);
-- QMP commands, expect, send and run go through the server's sockets; stop
-- and kill are done by the process that runs the VM, so that they finish
-- even if this one goes away.
local core = require "vmlua.core"
local config = require "vmlua.config"
local console = require "vmlua.console"
local errors = require "vmlua.errors"
local qmp = require "vmlua.qmp"
local runtime = require "vmlua.runtime"
local store = require "vmlua.instance.store"
local task = require "vmlua.task"

local client = {
  connect_timeout = 5,
  attached = {}, -- VMs bound to a server (set), released when the script ends
}

local ENDED = { stopped = true, error = true }

local function connect(path)
  return task.await(function(wake)
    core.connect(path, function(stream, err) wake(stream, err) end)
  end, client.connect_timeout)
end

local function ended(vm)
  client.attached[vm] = nil
  if vm.qmp then vm.qmp:close() end
  if vm.serial then vm.serial:close() end
end

-- Binds `vm` (a VM object of the same name) to the server of the VM that
-- runs under its name. Returns vm, or nil and why.
function client.bind(vm)
  local paths = runtime.paths(vm.name)
  local control, err = connect(paths.control)
  if not control then return nil, "cannot connect to " .. paths.control .. ": " .. tostring(err) end
  local remote = { paths = paths }
  vm.remote = remote
  vm.qmp = qmp.new(control, {
    on_event = function(name, data)
      if name == "VMLUA_STATE" then
        remote.outcome = data.outcome
        vm:_set_state(data.state, data.reason)
        if ENDED[data.state] then ended(vm) end
      else
        vm:_emit("qmp", name, data)
      end
    end,
    on_close = function()
      if remote.released or ENDED[vm.state] then return end
      ended(vm)
      vm:_set_state("error", string.format("lost the connection to vmlua pid %s, which ran it",
                                           tostring(remote.vmlua or "?")))
    end,
  })
  local _, herr = vm.qmp:handshake(client.connect_timeout)
  if herr then
    vm.qmp:close()
    return nil, "no answer on " .. paths.control .. ": " .. herr
  end
  -- the configuration as it runs (the ports chosen at start)
  local running = config.load(paths.config)
  if running then vm.config = running end
  local about = vm.qmp.about or {}
  remote.pid, remote.vmlua, remote.detached = about.pid, about.vmlua, about.detached
  vm.accel, vm.detached = about.accel, about.detached
  local con
  con, err = connect(paths.console_sock)
  if not con then
    vm.qmp:close()
    return nil, "cannot connect to " .. paths.console_sock .. ": " .. tostring(err)
  end
  vm.serial = console.new {}
  vm.serial:attach(con)
  client.attached[vm] = true
  vm:_set_state(about.state or "running", about.reason)
  return vm
end

-- vmlua.attach(name): the VM that runs under `name`.
function client.attach(name)
  if type(name) ~= "string" or runtime.name_problem(name) then
    errors.raise("vmlua.attach: expected the name of a VM, got " .. require("vmlua.fields").describe(name), 2)
  end
  local status = store.running(name)
  if not status then
    local stopped = store.stopped(name)
    if stopped and stopped.orphaned and (stopped.state == "running" or stopped.state == "paused") then
      -- libvirt runs it with no vmlua serving it: this process takes it over
      local cfg = config.load(store.paths(name).config)
      if not cfg then errors.raise("vmlua.attach: vm " .. name .. " has no readable configuration", 2) end
      return require("vmlua.machine").from_config(cfg):_adopt()
    end
    local why = stopped and string.format("it is stopped; vmlua start %s starts it", name)
      or "see vmlua ls"
    errors.raise(string.format("vmlua.attach: no VM named %s is running (%s)", name, why), 2)
  end
  local cfg = config.load(runtime.paths(name).config)
  if not cfg then errors.raise("vmlua.attach: vm " .. name .. " has no readable configuration", 2) end
  local vm = require("vmlua.machine").from_config(cfg)
  local ok, err = client.bind(vm)
  if not ok then errors.raise(string.format("vmlua.attach: vm %s: %s", name, err), 2) end
  return vm
end

-- Asks the process that runs the VM to stop it (as machine.stop does) and
-- waits for its end; returns "graceful" or "forced".
function client.stop(vm, force, timeout)
  if ENDED[vm.state] then errors.raise(vm:_failure("cannot stop: it is " .. vm.state), 3) end
  vm.qmp:send("vmlua-stop", { force = force or nil, timeout = timeout })
  vm:_wait_until(function(s) return ENDED[s] end)
  if vm.state == "stopped" then return vm.remote.outcome or "forced" end
  errors.raise(vm:_failure("did not stop cleanly: " .. tostring(vm.reason)), 3)
end

function client.kill(vm)
  if ENDED[vm.state] then return vm end
  vm.qmp:send("vmlua-kill")
  vm:_wait_until(function(s) return ENDED[s] end)
  return vm
end

-- The script that attached ends: its connections go, the VMs run on.
function client.release_all()
  for vm in pairs(client.attached) do
    vm.remote.released = true
    ended(vm)
  end
end

return client
