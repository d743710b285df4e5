--- Forwarded ports of a VM on another libvirt host: QEMU listens on that
-- host, so the system's ssh client carries each port back to this one
-- (`ssh -N -L`), with the key and known_hosts file of the libvirt URI.
-- The guest's port is forwarded to a port of the host's loopback, and the
-- tunnel listens where the definition said (127.0.0.1 unless told).
-- @module vmlua.libvirt.tunnel
local core = require "vmlua.core"
local host = require "vmlua.host"

local tunnel = {}

tunnel.timeout = 30 -- seconds for the tunnel's ports to listen

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- What ssh needs of a libvirt URI: `{ user=, host=, port=, keyfile=, known_hosts= }`, or nil and why.
-- @tparam string u a URI such as qemu+libssh://root@host:2222/system?keyfile=K&known_hosts=F
-- @treturn table|nil
function tunnel.target(u)
  local transport, authority, query = u:match("^[%w.-]+%+(%w+)://([^/]*)/[^?]*%??(.*)$")
  if transport ~= "ssh" and transport ~= "libssh" then
    return nil, u .. " is not reached over ssh, so its ports cannot be brought back"
  end
  local user, hostport = authority:match("^(.-)@(.*)$")
  hostport = hostport or authority
  local name, port = hostport:match("^%[(.*)%]:?(%d*)$")
  if not name then name, port = hostport:match("^([^:]*):?(%d*)$") end
  local t = { user = user and unescape(user), host = name, port = tonumber(port) }
  for key, value in query:gmatch("([^&=]+)=([^&]*)") do t[unescape(key)] = unescape(value) end
  return t
end

--- ssh's argv for a tunnel: each forward `{ address=, host= (here), remote= (the host's loopback port) }`.
-- @tparam table t what tunnel.target returned
-- @tparam table forwards the forwards
-- @treturn table argv
function tunnel.argv(t, forwards)
  local argv = { host.which("ssh") or "ssh", "-N", "-T", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                 "-o", "ServerAliveInterval=15" }
  local function add(...) for _, v in ipairs { ... } do argv[#argv + 1] = v end end
  if t.keyfile then add("-i", t.keyfile, "-o", "IdentitiesOnly=yes") end
  if t.known_hosts then add("-o", "UserKnownHostsFile=" .. t.known_hosts, "-o", "StrictHostKeyChecking=yes") end
  if t.port then add("-p", tostring(t.port)) end
  if t.user then add("-l", t.user) end
  for _, f in ipairs(forwards) do
    add("-L", string.format("%s:%d:127.0.0.1:%d", f.address, f.host, f.remote))
  end
  add("--", t.host)
  return argv
end

--- Starts the tunnel; returns its process once every port listens, or nil and why (with ssh's words).
-- @tparam string u the libvirt URI
-- @tparam table forwards as for tunnel.argv
-- @return the process, or nil and why
function tunnel.start(u, forwards)
  local t, why = tunnel.target(u)
  if not t then return nil, why end
  local argv = tunnel.argv(t, forwards)
  local said, ended = "", false
  local process, err = core.spawn {
    file = argv[1], args = argv,
    on_stderr = function(data) said = (said .. data):sub(-2000) end,
    on_exit = function() ended = true end,
  }
  if not process then return nil, "cannot run ssh: " .. err end
  local exec = require "vmlua.exec"
  for _, f in ipairs(forwards) do
    local ok = pcall(exec.wait_port, f.address, f.host, { timeout = tunnel.timeout })
    if not ok or ended then
      process:kill("TERM")
      process:close()
      return nil, string.format("the ssh tunnel for port %d did not come up: %s", f.host,
                                said:gsub("%s+$", "") ~= "" and said:gsub("%s+$", "") or "no answer")
    end
  end
  return process
end

return tunnel
