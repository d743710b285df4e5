-- A QMP client over a stream: the greeting, capability negotiation, commands
-- matched to replies by id, and events. Events can arrive before the reply
-- to the command that caused them, so both come through one reader.
local core = require "vmlua.core"
local notice = require "vmlua.notice"
local task = require "vmlua.task"

local qmp = {}
local Client = {}
Client.__index = Client

-- handlers: on_event(name, data), on_close(reason)
function qmp.new(stream, handlers)
  local self = setmetatable({ stream = stream, pending = {}, next_id = 0,
                              buffer = "", handlers = handlers, open = true,
                              trace = notice.debugging("qmp") }, Client) -- VMLUA_DEBUG=qmp
  stream:read(function(data, err)
    if data then self:_feed(data) else self:_closed(err) end
  end)
  return self
end

function Client:_feed(data)
  self.buffer = self.buffer .. data
  while true do
    local line, rest = self.buffer:match("^([^\n]*)\n(.*)$")
    if not line then break end
    self.buffer = rest
    if line:find("%S") then self:_message(line) end
  end
end

function Client:_message(line)
  if self.trace then notice.debug("qmp", "<- " .. line) end
  local msg, err = core.json_decode(line)
  if type(msg) ~= "table" then
    self:_closed("bad QMP message: " .. tostring(err))
    return
  end
  if msg.QMP then
    self.greeting = msg.QMP
    self.about = msg.vmlua -- a VM's server says what it serves (instance/server.lua)
    if self.on_greeting then self.on_greeting() end
  elseif msg.event then
    self.handlers.on_event(msg.event, msg.data or {})
  elseif msg.id ~= nil then
    local wake = self.pending[msg.id]
    self.pending[msg.id] = nil
    if wake then
      if msg.error then
        wake(nil, (msg.error.class or "Error") .. ": " .. tostring(msg.error.desc))
      else
        wake(msg["return"] or {})
      end
    end
  end
end

function Client:_closed(reason)
  if not self.open then return end
  self.open = false
  self.stream:close()
  local pending = self.pending
  self.pending = {}
  for _, wake in pairs(pending) do wake(nil, "the QMP connection closed") end
  self.handlers.on_close(reason or "closed")
end

-- Waits for the greeting and negotiates capabilities.
function Client:handshake(timeout)
  if not self.greeting then
    local ok, err = task.await(function(wake)
      self.on_greeting = function() wake(true) end
      return function() self.on_greeting = nil end
    end, timeout)
    self.on_greeting = nil
    if not ok then return nil, err == "timeout" and "no QMP greeting" or err end
  end
  return self:execute("qmp_capabilities", nil, timeout)
end

-- Sends a command without waiting; wake(result) or wake(nil, err) on reply.
function Client:send(command, arguments, wake)
  if not self.open then
    if wake then wake(nil, "the QMP connection is closed") end
    return
  end
  self.next_id = self.next_id + 1
  local id = self.next_id
  self.pending[id] = wake or function() end
  local text = core.json_encode({ execute = command, arguments = arguments, id = id })
  if self.trace then notice.debug("qmp", "-> " .. text) end
  self.stream:write(text .. "\n")
end

-- Sends a command and waits for its reply: result, or nil and an error.
function Client:execute(command, arguments, timeout)
  return task.await(function(wake) self:send(command, arguments, wake) end, timeout)
end

function Client:close()
  self:_closed("closed by vmlua")
end

return qmp
