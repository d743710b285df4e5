--- The libvirt backend: libvirt runs the VM's QEMU, on this host or on
-- another (`backend = vmlua.libvirt{ uri = ... }`). The VM gets the same
-- three things as from the QEMU backend: a QMP-shaped monitor (the life
-- cycle's commands as libvirt's own calls, any other passed through to
-- QEMU, and QEMU's events), a process handle (destroy is the kill) and
-- its console (libvirt's console stream of a pty serial port).
-- @module vmlua.backend.libvirt
local connection = require "vmlua.libvirt.connection"
local console = require "vmlua.console"
local core = require "vmlua.core"
local domain = require "vmlua.libvirt.domain"
local task = require "vmlua.task"
local upload = require "vmlua.libvirt.upload"
local uri = require "vmlua.libvirt.uri"

local backend = { name = "libvirt" }

local call = connection.call

-- The life cycle's QMP commands, done by libvirt's calls so that libvirt
-- knows the domain's state; "quit" is a destroy: SIGTERM, on which QEMU
-- flushes its disks and exits.
local NATIVE = { stop = "suspend", cont = "resume", system_powerdown = "shutdown", quit = "destroy" }

local Monitor = {}
Monitor.__index = Monitor

function Monitor:execute(command, arguments, timeout)
  if not self.open then return nil, "the domain has ended" end
  local native = NATIVE[command]
  if native then
    local ok, err = task.await(function(wake) self.dom[native](self.dom, wake) end, timeout)
    if ok then return {} end
    return nil, err
  end
  local request = core.json_encode { execute = command, arguments = arguments }
  local reply, err = task.await(function(wake) self.dom:monitor(request, wake) end, timeout)
  if not reply then return nil, err end
  local msg = core.json_decode(reply)
  if type(msg) ~= "table" then return nil, "bad reply from QEMU through libvirt: " .. tostring(reply) end
  if msg.error then return nil, (msg.error.class or "Error") .. ": " .. tostring(msg.error.desc) end
  return msg["return"] or {}
end

-- A command whose answer nobody waits for (the power button, quit).
function Monitor:send(command, arguments)
  task.spawn(function() self:execute(command, arguments, connection.timeout) end)
end

function Monitor:close()
  self.open = false
end

-- The console as the stream Console:attach reads: what arrives while it is
-- paused is kept and handed over at once on resume (in one piece: a short
-- read makes the console wait a moment before the next).
local Stream = {}
Stream.__index = Stream

local function stream()
  local s = setmetatable({ kept = {}, paused = false }, Stream)
  s.data = function(bytes) s.kept[#s.kept + 1] = bytes; s:_deliver() end
  s.ended = function() s.eof = true; s:_deliver() end
  return s
end

function Stream:_deliver()
  if self.paused or not self.reader or self.done then return end
  if #self.kept > 0 then
    local data = table.concat(self.kept)
    self.kept = {}
    self.reader(data)
  end
  if self.eof and #self.kept == 0 and not self.paused and not self.done then
    self.done = true
    self.reader(nil)
  end
end

function Stream:read(fn) self.reader = fn; self:_deliver() end
function Stream:pause() self.paused = true end
function Stream:resume() self.paused = false; self:_deliver() end
function Stream:finish() self.ended() end

function Stream:write(data)
  if not self.session then return nil, "the console is not open" end
  return self.session:write(data)
end

function Stream:close()
  self.done = true
  if self.session then self.session:close() end
end

-- libvirt's reason for a stopped domain, as the QEMU backend's exit status
-- { code, signal }: a shutdown is QEMU exiting by itself, a destroy a kill.
local STOPPED = {
  shutdown = { 0 }, destroyed = { nil, "KILL" }, saved = { 0 }, migrated = { 0 },
}

local function watch(vm, c)
  c:watch(vm.config.name, {
    lifecycle = function(event, detail)
      if event == "stopped" and vm.domain and not vm.exit_status then
        vm.stopped_as = detail
        local status = STOPPED[detail] or { 1 }
        vm:_exited(status[1], status[2])
      end
    end,
    -- QEMU's events from the guest's start to its shutdown: libvirt's own
    -- resume of the paused domain comes before, and what its ending QEMU
    -- says (STOP, a second SHUTDOWN on its SIGTERM) after.
    monitor = function(name, data)
      if name == "RESUME" and vm.first_resume then vm.first_resume = false return end
      if vm.shut_down then return end
      if name == "SHUTDOWN" then vm.shut_down = true end
      vm:_event(name, data)
    end,
    closed = function(reason)
      if vm.exit_status then return end
      vm.qmp_lost = tostring(reason)
      if vm.qmp then vm.qmp:close() end
      vm:_exited(nil, nil)
    end,
  })
end

-- The domain's accelerator: KVM where this host has it and libvirt runs
-- here; a remote host's is not probed, so TCG unless the definition asks.
local function accel(cfg)
  if cfg.accel then return cfg.accel end
  if not uri.is_local(cfg.backend.uri) then return "tcg" end
  return require("vmlua.qemu").accel(cfg) or "tcg"
end

-- QEMU's pid, when libvirt runs it on this host: the process of its first
-- vCPU thread (libvirt's API does not tell the pid).
local function local_pid(vm, u)
  if not uri.is_local(u) then return nil end
  local cpus = vm.qmp:execute("query-cpus-fast", nil, connection.timeout)
  local tid = cpus and cpus[1] and math.tointeger(cpus[1]["thread-id"])
  local f = tid and io.open("/proc/" .. tid .. "/status")
  if not f then return nil end
  local status = f:read("a")
  f:close()
  return math.tointeger(tonumber(status:match("\nTgid:%s*(%d+)")))
end

-- On another host the guest's forwarded ports go to free ports of that
-- host's loopback, which ssh brings back (libvirt/tunnel.lua): returns
-- { cfg = the configuration domain.xml gets, forwards = the tunnel's }.
local function remote_forwards(cfg, here)
  local carried = { cfg = cfg, forwards = {} }
  if here then return carried end
  local net = {}
  for i, n in ipairs(cfg.net) do
    local copy = {}
    for k, v in pairs(n) do copy[k] = v end
    copy.forward = {}
    for _, f in ipairs(n.forward or {}) do
      if f.protocol == "udp" then
        return nil, string.format("net[%d]: UDP port %d cannot be brought back from %s (ssh carries TCP only)", i,
                                  f.host, cfg.backend.uri)
      end
      local port, err = core.free_port("127.0.0.1")
      if not port then return nil, "cannot choose a port for the tunnel: " .. err end
      copy.forward[#copy.forward + 1] = { address = "127.0.0.1", host = port, guest = f.guest, protocol = f.protocol }
      carried.forwards[#carried.forwards + 1] = { address = f.address, host = f.host, remote = port }
    end
    net[i] = copy
  end
  carried.cfg = setmetatable({ net = net }, { __index = cfg })
  return carried
end

-- A restore's QEMU waits for the saved state (snapshot.lua) instead of booting.
local function incoming(cfg)
  local args = { table.unpack(cfg.qemu or {}) }
  args[#args + 1], args[#args + 2] = "-incoming", "defer"
  return setmetatable({ qemu = args }, { __index = cfg })
end

-- The VM's monitor and process handle for its domain.
local function take(vm, dom)
  vm.domain = dom
  vm.qmp = setmetatable({ dom = dom, open = true }, Monitor)
  local pid = local_pid(vm, vm.config.backend.uri)
  if pid then require("vmlua.runtime").write_pid(vm.paths, pid) end
  vm.process = {
    pid = function() return pid end,
    running = function() return vm.domain ~= nil and not vm.exit_status end,
    -- a domain already gone (destroyed behind vmlua's back) sends no event
    kill = function()
      dom:destroy(function(ok)
        if not ok and not vm.exit_status then
          vm.stopped_as = vm.stopped_as or "destroyed"
          vm:_exited(nil, "KILL")
        end
      end)
    end,
    close = function() end,
  }
end

-- The domain's console, read into vm.serial; force takes the session over
-- from a client that left it open (a vmlua that died).
local function attach_console(vm, dom, force)
  local s = stream()
  local session, err = call(dom, "console", { on_data = s.data, on_end = s.ended, force = force })
  if not session then return nil, "cannot open its console through libvirt: " .. tostring(err) end
  s.session = session
  vm.serial:attach(s)
  return true
end

local function new_console(vm)
  local cfg = vm.config
  vm.serial = console.new { log = cfg.console.log or vm.log_path or vm.paths.log, stdio = cfg.console.stdio,
                            rotate = not cfg.console.log and console.LOG_BYTES or nil }
end

--- Takes over a domain that runs with no vmlua serving it (its vmlua died): its console, monitor and events,
-- served by this process. Returns its state ("running" or "paused"), or nil and why.
-- @param vm the VM, rebuilt from the instance's configuration, its runtime paths claimed
-- @treturn string|nil
-- @treturn string why
function backend.adopt(vm)
  local machine = require "vmlua.machine"
  local b = vm.config.backend
  local c, err = connection.get(b.uri)
  if not c then return nil, err end
  vm.connection = c
  watch(vm, c)
  machine.live[vm] = true
  local dom
  dom, err = call(c.conn, "lookup", vm.name)
  if not dom then return nil, "libvirt " .. b.uri .. ": " .. tostring(err) end
  local state = call(dom, "state")
  if state ~= "running" and state ~= "paused" and state ~= "blocked" then
    dom:free()
    return nil, "its domain on " .. b.uri .. " is " .. tostring(state)
  end
  vm.accel, vm.shut_down, vm.first_resume = vm.config.accel or "tcg", false, false
  take(vm, dom)
  new_console(vm)
  local attached
  attached, err = attach_console(vm, dom, true)
  if not attached then return nil, err end
  local why
  vm.server, why = require("vmlua.instance.server").start(vm)
  if not vm.server then return nil, "cannot serve it on " .. vm.paths.control .. ": " .. why end
  return state == "paused" and "paused" or "running"
end

--- Starts the VM's domain; true once the guest runs, else nil and why.
-- The domain is created paused, its console opened, then it runs: no boot output is lost.
-- @param vm the VM (vmlua.machine), "starting", with its runtime paths claimed
-- @treturn boolean|nil true, or nil when it did not start
-- @treturn string why
function backend.launch(vm)
  local machine = require "vmlua.machine"
  local cfg, paths = vm.config, vm.paths
  local b = cfg.backend
  machine.live[vm] = true -- from now on, stopping every VM stops this one too
  if b.hosts then -- vmlua.hosts{}: placed at each start (libvirt/hosts.lua)
    local chosen, why = require("vmlua.libvirt.hosts").choose(b, cfg)
    if not chosen then return nil, why end
    b.uri, b.pool, b.host, vm.placement = chosen.uri, chosen.pool, chosen.name, why
    require("vmlua.notice").say(string.format("vm %s: on %s", cfg.name, why))
    require("vmlua.runtime").write_file(paths.config, require("vmlua.config").encode(cfg)) -- for ls, orphans
  end
  local here = uri.is_local(b.uri)
  local c, err = connection.get(b.uri)
  if not c then return nil, err end
  vm.connection = c
  watch(vm, c) -- before the domain exists, so that no event is missed
  local ready, problem = require("vmlua.efi").prepare(cfg)
  if not ready then return nil, problem end
  ready, problem = require("vmlua.cloudinit.seed").prepare(cfg)
  if not ready then return nil, problem end
  local files
  if here then
    ready, problem = require("vmlua.disks").prepare(cfg, paths)
    if not ready then return nil, problem end
  else -- the host reads its own copies: uploaded once, by content (libvirt/upload.lua)
    files, problem = upload.prepare(c.conn, b.pool or "default", cfg, { paths = paths })
    if not files then return nil, "libvirt " .. b.uri .. ": " .. problem end
    vm.uploads = problem
  end
  vm.lan_holds, problem = require("vmlua.lan").join_all(cfg) -- each LAN's switch runs until QEMU holds it
  if not vm.lan_holds then return nil, problem end
  vm.accel, vm.shut_down, vm.first_resume = accel(cfg), false, true
  local xml, carried
  carried, problem = remote_forwards(cfg, here)
  if not carried then return nil, problem end
  xml, problem = domain.xml(vm.incoming and incoming(carried.cfg) or carried.cfg,
                           { accel = vm.accel, paths = paths, files = files })
  if not xml then return nil, problem end

  -- a read-only share's daemon is vmlua's (libvirt/domain.lua); libvirt's QEMU connects to it
  vm.daemons, problem = require("vmlua.qemu.virtiofsd").start(cfg, paths, function(s) return s.readonly end)
  if not vm.daemons then return nil, problem end
  new_console(vm)
  if vm.stop_requested then return nil, "it was stopped as it started" end
  local dom
  dom, err = call(c.conn, "create", xml, { paused = true })
  if not dom then return nil, "libvirt " .. b.uri .. ": " .. tostring(err) end
  take(vm, dom)
  if vm.stop_requested then return nil, "it was stopped as it started" end
  if vm.incoming then
    local _, ierr = vm.incoming.load(vm)
    if ierr then return nil, ierr end
  end
  local attached
  attached, err = attach_console(vm, dom)
  if not attached then return nil, err end
  local ok
  ok, err = call(dom, "resume")
  if not ok then return nil, "libvirt: " .. tostring(err) end
  if #carried.forwards > 0 then -- QEMU listens on the other host: ssh brings the ports back
    vm.tunnel, err = require("vmlua.libvirt.tunnel").start(b.uri, carried.forwards)
    if not vm.tunnel then return nil, err end
  end
  if vm.state ~= "starting" then return nil, vm.reason or ("it is " .. vm.state) end
  local why
  vm.server, why = require("vmlua.instance.server").start(vm)
  if not vm.server then return nil, "cannot serve it on " .. paths.control .. ": " .. why end
  return true
end

--- After backend.launch, even one that raised: the domain's QEMU holds its LANs now, or has ended.
-- @param vm the VM
function backend.launched(vm)
  if vm.lan_holds then require("vmlua.lan").release(vm.lan_holds) end
  vm.lan_holds = nil
end

--- A client of the VM's guest agent once it answers: libvirt passes its commands through (libvirt/agent.lua).
-- @param vm the VM
-- @tparam number timeout seconds
-- @return the client, or nil and why
function backend.agent(vm, timeout)
  return require("vmlua.libvirt.agent").open(vm, timeout)
end

-- What libvirt's reasons for a stopped domain say about QEMU.
local ENDED_BY = {
  destroyed = "libvirt destroyed the domain (QEMU was killed)",
  crashed = "QEMU ended unexpectedly (libvirt: crashed)",
  failed = "QEMU ended unexpectedly (libvirt: failed)",
}

--- Why the domain ended, in libvirt's words.
-- @param vm the VM, with vm.exit_status
-- @treturn string
function backend.exit_reason(vm)
  local how = vm.stopped_as or "unknown"
  return ENDED_BY[how] or ("the domain stopped (libvirt: " .. how .. ")")
end

--- Why the VM ended when libvirt's connection did: the domain may run on.
-- @param vm the VM, with vm.qmp_lost (libvirt's reason)
-- @treturn string
function backend.lost(vm)
  local u = vm.config.backend.uri
  return string.format("vmlua lost libvirt's connection to %s (%s): the domain may still run there (virsh -c %s list)",
                       u, vm.qmp_lost, u)
end

--- Releases the domain's reference and the VM's hold on the connection once it has ended.
-- @param vm the VM
function backend.release(vm)
  if vm.serial and vm.serial.stream then vm.serial.stream:close() end
  if vm.tunnel then
    vm.tunnel:kill("TERM")
    vm.tunnel:close()
  end
  vm.tunnel = nil
  if vm.daemons then require("vmlua.qemu.virtiofsd").stop(vm.daemons) end
  vm.daemons = nil
  if vm.domain then vm.domain:free() end
  vm.domain = nil
  if vm.uploads and vm.connection then -- its ephemeral disks' overlays on the host
    task.spawn(upload.release, vm.connection.conn, vm.config.backend.pool or "default", vm.uploads)
  end
  vm.uploads = nil
  if vm.connection then vm.connection:unwatch(vm.config.name) end
  vm.connection = nil
end

return backend
