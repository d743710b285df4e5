--- The guest agent of a libvirt domain: libvirt holds the host end of the
-- port (a <channel> of domain.lua), syncs the agent before each command and
-- passes the command through (virDomainQemuAgentCommand), on this host or
-- another. The client has the calls of agent.lua's socket client, so
-- vm:run's guest-exec loop is the same on both backends.
-- @module vmlua.libvirt.agent
local agent = require "vmlua.agent"
local core = require "vmlua.core"
local task = require "vmlua.task"

local lvagent = {}

local Client = setmetatable({}, { __index = agent.Client })
Client.__index = Client

--- Sends a command and waits for its reply.
-- @tparam string command the agent's command
-- @tparam[opt] table arguments its arguments
-- @tparam number timeout seconds
-- @return its result, or nil and why ("timeout" when the agent did not answer)
function Client:execute(command, arguments, timeout)
  if not self.open then return nil, self.why end
  local request = core.json_encode { execute = command, arguments = arguments }
  -- libvirt waits for the agent in whole seconds; the worker it blocks is freed by then
  local seconds = math.max(1, math.ceil(timeout))
  local reply, err = task.await(function(wake) self.dom:agent(request, seconds, wake) end, seconds + 5)
  if not reply then return nil, err end
  local msg = core.json_decode(reply)
  if type(msg) ~= "table" then return nil, "a reply that is not JSON: " .. tostring(reply) end
  if msg.error then
    return nil, string.format("%s: %s", tostring(msg.error.class or "Error"), tostring(msg.error.desc))
  end
  return msg["return"]
end

--- Ends this client's use of the agent (libvirt keeps the port); safe to call twice.
-- @tparam[opt] string why what a later call returns
function Client:close(why)
  if self.open then self.open, self.why = false, why or "closed" end
end

--- Kills the guest-exec command `pid` (a client of its own: this one is closed).
-- @tparam integer pid the command's pid in the guest
function Client:kill(pid)
  local killer = setmetatable({ dom = self.dom, open = true }, Client)
  killer:execute("guest-exec", { path = "/bin/sh", arg = { "-c", agent.KILL_SCRIPT, "sh", tostring(pid) } }, 5)
end

--- Waits until the VM's guest agent answers guest-ping: a client, or nil and why.
-- libvirt says at once when the guest has not opened the port, so this asks again every half second.
-- @param vm the VM, whose vm.domain libvirt runs
-- @tparam number timeout seconds
function lvagent.open(vm, timeout)
  if not vm.domain then return nil, "the domain has ended" end
  local deadline = core.now() + timeout
  local client = setmetatable({ dom = vm.domain, open = true }, Client) -- a failed call leaves it usable
  while true do
    if not vm.domain then return nil, "the domain has ended" end
    local left = deadline - core.now()
    local ok, err = client:execute("guest-ping", nil, math.min(math.max(left, 1), 5))
    if ok then return client end
    left = deadline - core.now()
    if left <= 0 then return nil, err end
    task.sleep(math.min(0.5, left))
  end
end

return lvagent
