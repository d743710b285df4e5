--- Connections to libvirt, one per URI, shared by the VMs that use it: the
-- core's callback calls made into waits of the calling task, and the
-- host's domain events handed to the VM whose domain they are about.
-- A connection closes when its last VM lets it go, so that it never keeps
-- vmlua's loop (and vmlua) running.
-- @module vmlua.libvirt.connection
local core = require "vmlua.core"
local task = require "vmlua.task"

local connection = {}

connection.timeout = 60 -- seconds for one libvirt call (a remote host may be slow)

local open = {} -- uri -> Connection, while VMs use it

--- Calls `object:method(..., callback)` and waits for the callback's values;
-- nil and "timeout" when none comes in time.
-- @param object a core libvirt object (connection or domain)
-- @tparam string method its method
-- @return what the callback got
function connection.call(object, method, ...)
  return task.call(connection.timeout, object[method], object, ...)
end

local Connection = {}
Connection.__index = Connection

--- The connection to `uri`, opened on first use; nil and libvirt's words when it cannot be.
-- @tparam string uri a libvirt URI
-- @return the connection, or nil and why
function connection.get(uri)
  local c = open[uri]
  if c then
    if c.opening then c.opened.wait(function() return not c.opening end) end
    if c.conn then return c end
    return nil, c.failure
  end
  c = setmetatable({ uri = uri, watchers = {}, users = 0, opening = true, opened = task.condition() }, Connection)
  open[uri] = c
  local conn, err = task.call(connection.timeout, core.virt_connect, uri)
  c.opening = false
  if not conn then
    open[uri] = nil
    c.failure = tostring(err) -- "cannot connect to URI: libvirt's words"
    c.opened.notify()
    return nil, c.failure
  end
  c.conn = conn
  conn:on_lifecycle(function(name, event, detail)
    local w = c.watchers[name]
    if w and w.lifecycle then w.lifecycle(event, detail) end
  end)
  -- A remote connection over a transport without QEMU's events gives none.
  pcall(conn.on_monitor_event, conn, function(name, event, data)
    local w = c.watchers[name]
    if w and w.monitor then w.monitor(event, data and core.json_decode(data) or {}) end
  end)
  -- The daemon went away: its VMs are out of reach, whatever runs them.
  conn:on_close(function(reason)
    if open[uri] == c then open[uri] = nil end
    for _, w in pairs(c.watchers) do
      if w.closed then w.closed(reason) end
    end
  end)
  c.opened.notify()
  return c
end

--- Hands the events of domain `name` to `handlers` (`lifecycle(event, detail)`, `monitor(name, data)`,
-- `closed(reason)` when the connection ends),
-- and holds the connection open until connection:unwatch(name).
-- @tparam string name the domain's name
-- @tparam table handlers the handlers
function Connection:watch(name, handlers)
  if not self.watchers[name] then self.users = self.users + 1 end
  self.watchers[name] = handlers
end

--- Stops handing domain `name`'s events; the last VM to let go closes the connection.
-- @tparam string name the domain's name
function Connection:unwatch(name)
  if not self.watchers[name] then return end
  self.watchers[name] = nil
  self.users = self.users - 1
  if self.users == 0 then
    if open[self.uri] == self then open[self.uri] = nil end
    self.conn:close()
  end
end

return connection
