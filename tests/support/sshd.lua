-- A private sshd for the remote libvirt specs: OpenSSH's sshd on
-- 127.0.0.1 at a free port, in a mount namespace of its own
-- (tests/support/sshd.py), with its own configuration file, a host key
-- and a client key made for it, its own authorized_keys, and a
-- known_hosts file for the client. Nothing of the host's /etc/ssh or
-- ~/.ssh is read or changed. Needs root.
--
--   local sshd = require "support.sshd"
--   local s = sshd.start { libvirt_run = daemon.dir .. "/run" }
--   s:uri()    -- qemu+libssh://root@127.0.0.1:PORT/system?keyfile=...&known_hosts=...
--   s:stop()   -- ends sshd and its sessions; removes s.dir
--
-- With libvirt_run (a private libvirtd's run directory, support.libvirtd),
-- that directory is /run/libvirt for the sshd's sessions: virt-ssh-helper
-- on the "remote" side finds the private daemon's socket where a libvirt
-- host keeps its own.
local core = require "vmlua.core"
local host = require "vmlua.host"
local task = require "vmlua.task"
local helpers = require "support.helpers"
local libvirtd = require "support.libvirtd"

local sshd = {}

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local script = here .. "sshd.py"

local live = {}

local read = require("vmlua.runtime").read_file

local function write(path, text, mode)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  if mode then assert(libvirtd.run({ "chmod", mode, path }, 10) == 0) end
end

-- Where sshd is, or nil.
local function sshd_path()
  return host.which("sshd") or (core.executable("/usr/sbin/sshd") and "/usr/sbin/sshd") or nil
end

-- Whether a private sshd can run here: true, or nil and why not.
function sshd.usable()
  if core.getuid() ~= 0 then return nil, "needs root" end
  if not sshd_path() then return nil, "sshd is not installed (openssh-server)" end
  for _, name in ipairs { "python3", "ssh-keygen" } do
    if not host.which(name) then return nil, name .. " is not installed" end
  end
  return true
end

-- A free TCP port on 127.0.0.1 (the kernel's choice; free when asked).
local function free_port()
  local code, out, err = libvirtd.run({ "python3", "-c",
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" }, 10)
  assert(code == 0, "no free port: " .. tostring(err))
  return assert(tonumber(out))
end

local function keygen(path)
  local code, _, err = libvirtd.run({ "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmlua-spec",
    "-f", path }, 30)
  assert(code == 0, "ssh-keygen: " .. tostring(err))
end

local Server = {}
Server.__index = Server

--- The libvirt URI that reaches this sshd's host as root: transport
-- "libssh" (default, libvirt's own ssh client) or "ssh" (the ssh command).
function Server:uri(transport, path)
  transport = transport or "libssh"
  local q = string.format("keyfile=%s&known_hosts=%s&sshauth=privkey", self.key, self.known_hosts)
  return string.format("qemu+%s://root@127.0.0.1:%d%s?%s", transport, self.port, path or "/system", q)
end

-- sshd's output (its log, -e).
function Server:log()
  return self.err .. self.out
end

--- Ends sshd (and so its sessions) and removes its directory. Safe twice.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  live[self] = nil
  if not self.exited then
    self.proc:kill("TERM")
    self.changed.wait(function() return self.exited end, 10)
  end
  self.proc:close()
  helpers.rmtree(self.dir)
end

--- Starts the sshd; returns once it listens. opts.libvirt_run: see above.
function sshd.start(opts)
  opts = opts or {}
  assert(sshd.usable())
  local dir = helpers.tmpdir()
  local s = setmetatable({ dir = dir, out = "", err = "", changed = task.condition() }, Server)
  live[s] = true
  local ok, err = pcall(function()
    keygen(dir .. "/host_key")
    keygen(dir .. "/client_key")
    s.key, s.known_hosts = dir .. "/client_key", dir .. "/known_hosts"
    s.port = free_port()
    write(dir .. "/authorized_keys", read(dir .. "/client_key.pub"), "600")
    local host_pub = read(dir .. "/host_key.pub"):match("^(%S+ %S+)")
    write(s.known_hosts, string.format("[127.0.0.1]:%d %s\n", s.port, host_pub), "600")
    write(dir .. "/sshd_config", table.concat({
      "# The spec's sshd: this file only, never /etc/ssh/sshd_config.",
      "ListenAddress 127.0.0.1",
      "Port " .. s.port,
      "HostKey " .. dir .. "/host_key",
      "PidFile none",
      "AuthorizedKeysFile " .. dir .. "/authorized_keys",
      "PermitRootLogin prohibit-password",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no", -- its files live under /tmp
      "AllowTcpForwarding yes",
      "X11Forwarding no",
      "PrintMotd no",
      "LogLevel INFO",
      "",
    }, "\n"), "600")
    local args = { "python3", script, "--config", dir .. "/sshd_config", "--sshd", sshd_path() }
    if opts.libvirt_run then
      args[#args + 1] = "--libvirt-run"
      args[#args + 1] = opts.libvirt_run
    end
    s.proc = assert(core.spawn {
      file = host.which("python3"), args = args,
      on_stdout = function(d) s.out = s.out .. d; s.changed.notify() end,
      on_stderr = function(d) s.err = s.err .. d; s.changed.notify() end,
      on_exit = function(code) s.exited, s.code = true, code; s.changed.notify() end,
    })
    s.pid = s.proc:pid()
    s.changed.wait(function() return s.exited or s.err:find("Server listening on", 1, true) end, 30)
    if not s.err:find("Server listening on", 1, true) then
      error("the private sshd did not start: " .. s:log())
    end
  end)
  if not ok then
    if s.proc then s:stop() else live[s] = nil; helpers.rmtree(dir) end
    error(err, 2)
  end
  return s
end

-- Stops every sshd still running.
function sshd.stop_all()
  for s in pairs(live) do s:stop() end
end

return sshd
