-- The server of a running VM: whichever vmlua process runs a VM (a script,
-- the prompt, or an instance's keeper) serves it to other processes, so
-- `vmlua stop/attach NAME` and vmlua.attach(NAME) reach it from anywhere.
--
--   control.sock  QMP-shaped JSON lines: the greeting carries the VM's
--                 status ("vmlua"); commands go on to QEMU, except the
--                 vmlua-* ones below; QEMU's events come through, and
--                 VMLUA_STATE tells each change of the VM's state.
--   console.sock  the serial console: output from the moment of
--                 connecting (the guest's current line first), input typed.
--   status.json   what `vmlua ls` shows, rewritten on every change.
--
-- Both sockets live in the VM's private (0700) runtime directory and are
-- 0600 themselves.
local core = require "vmlua.core"
local runtime = require "vmlua.runtime"
local task = require "vmlua.task"

local server = {}
local Server = {}
Server.__index = Server

local ENDED = { stopped = true, error = true }

-- "127.0.0.1:2222->22" for each forwarded port.
function server.ports(cfg)
  local list = {}
  for _, n in ipairs(cfg.net or {}) do
    for _, f in ipairs(n.forward or {}) do
      list[#list + 1] = string.format("%s:%d->%d%s", f.address, f.host, f.guest, f.protocol == "udp" and "/udp" or "")
    end
  end
  return list
end

-- What `vmlua ls` shows of a VM; `started` is when it began to run.
function server.describe(vm, started)
  local cfg = vm.config
  local by_guest = vm.shutdown and tostring(vm.shutdown.reason):match("^guest%-")
  return {
    name = vm.name, state = vm.state, reason = vm.reason, arch = cfg.arch, cpus = cfg.cpus,
    memory = cfg.memory, ports = server.ports(cfg), accel = vm.accel,
    pid = vm.process and not ENDED[vm.state] and vm.process:pid() or nil, vmlua = core.getpid(),
    started = started, detached = vm.detached or false, host = cfg.backend and cfg.backend.uri or nil,
    outcome = vm.state == "stopped" and ((not vm.forced and by_guest) and "graceful" or "forced") or nil,
  }
end

function Server:status() return server.describe(self.vm, self.started) end

function Server:_write_status()
  local text = core.json_encode(self:status())
  runtime.write_file(self.vm.paths.status, text)
end

local function send(stream, msg)
  stream:write(core.json_encode(msg) .. "\n")
end

function Server:_broadcast(msg)
  for stream in pairs(self.clients) do send(stream, msg) end
end

-- vmlua-* commands: the VM's own operations, run here so that they finish
-- even when the client that asked goes away.
local OWN = {
  ["qmp_capabilities"] = function() return {} end,
  ["vmlua-status"] = function(self) return self:status() end,
  ["vmlua-stop"] = function(self, args)
    local machine = require "vmlua.machine"
    return { outcome = machine.stop(self.vm, args.force == true, tonumber(args.timeout)) }
  end,
  ["vmlua-kill"] = function(self)
    self.vm:kill()
    return {}
  end,
}

function Server:_command(stream, msg)
  local reply = function(result, err)
    if not self.clients[stream] then return end
    if err then
      local class, desc = tostring(err):match("^(%u%w+): (.*)$")
      send(stream, { id = msg.id, error = { class = class or "GenericError", desc = desc or tostring(err) } })
    else
      send(stream, { id = msg.id, ["return"] = result })
    end
  end
  local own = OWN[msg.execute]
  task.spawn(function()
    if own then
      local ok, result = pcall(own, self, msg.arguments or {})
      if ok then reply(result) else reply(nil, tostring(result)) end
    elseif not (self.vm.qmp and self.vm.qmp.open) then
      reply(nil, "GenericError: vm " .. self.vm.name .. " is " .. self.vm.state)
    else
      reply(self.vm.qmp:execute(msg.execute, msg.arguments))
    end
  end)
end

function Server:_client(stream)
  if self.closed then stream:close() return end
  self.clients[stream] = true
  send(stream, { QMP = { version = {}, capabilities = {} }, vmlua = self:status() })
  local buffer = ""
  stream:read(function(data)
    if not data then
      self.clients[stream] = nil
      stream:close()
      return
    end
    buffer = buffer .. data
    for line in buffer:gmatch("([^\n]*)\n") do
      local msg = core.json_decode(line)
      if type(msg) == "table" and type(msg.execute) == "string" then self:_command(stream, msg) end
    end
    buffer = buffer:match("[^\n]*$")
  end)
end

function Server:_console(stream)
  local serial = self.vm.serial
  if self.closed or not serial then stream:close() return end
  local partial = serial.tail:match("[^\n]*$")
  if partial ~= "" then stream:write(partial) end
  local unwatch = serial:watch(function(data) stream:write(data) end)
  self.consoles[stream] = unwatch
  stream:read(function(data)
    if not data then
      unwatch()
      self.consoles[stream] = nil
      stream:close()
      return
    end
    serial:send(data)
  end)
end

-- Starts serving a VM that runs; returns the server, or nil and why.
function server.start(vm)
  local self = setmetatable({ vm = vm, clients = {}, consoles = {}, started = os.time() }, Server)
  local err
  self.control, err = core.listen(vm.paths.control, function(s) self:_client(s) end)
  if not self.control then return nil, err end
  self.console, err = core.listen(vm.paths.console_sock, function(s) self:_console(s) end)
  if not self.console then
    self.control:close()
    return nil, err
  end
  self:_write_status()
  return self
end

-- The VM's state changed.
function Server:state(new, old)
  if self.closed then return end
  self:_write_status()
  self:_broadcast({ event = "VMLUA_STATE", data = { state = new, old = old, reason = self.vm.reason,
                                                    outcome = self:status().outcome } })
  if ENDED[new] then self:close() end
end

-- A QMP event from QEMU.
function Server:event(name, data)
  if not self.closed then self:_broadcast({ event = name, data = data }) end
end

-- The VM ended: clients see the streams end once what was queued for
-- them (the last state, replies) is written.
function Server:close()
  if self.closed then return end
  self.closed = true
  self.control:close()
  self.console:close()
  for stream, unwatch in pairs(self.consoles) do
    unwatch()
    stream:shutdown()
  end
  for stream in pairs(self.clients) do stream:shutdown() end
end

return server
