--- ssh, the way into a real guest: `ssh = { user =, key =, port = }` in
-- vmlua.vm{}, vm:ssh(cmd), vm:wait_ssh{} and `vmlua ssh NAME [cmd]`. It runs
-- the system's OpenSSH client over the NAT forward to the guest's ssh port,
-- with the definition's key, and a known_hosts file of the VM's own (in its
-- runtime directory), never the user's.
-- @module vmlua.ssh
local core = require "vmlua.core"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local runtime = require "vmlua.runtime"

local ssh = {}
local methods = {}
local machine -- set by ssh.install

-- The `ssh` field of vmlua.vm{}: nil, or { user=, key= (absolute), port=,
-- instance_key= }. `ssh = true` is { user = "root" }. Without a key, a VM
-- with cloudinit = vmlua.cloudinit{} gets one of its own (instance_key):
-- made at its first start in its state directory, kept across runs, and
-- handed to the guest in the seed's user-data (cloudinit.lua). `vm` is
-- { name=, cloudinit= (whether it has a seed) }.
function ssh.field(where, v, vm)
  if v == nil then return nil end
  if v == true then v = { user = "root" } end
  if type(v) ~= "table" then
    fields.fail(where, "ssh", 'expected a table like { user = "root", key = "id_ed25519" }, got %s',
                fields.describe(v))
  end
  fields.check(v, { "user", "key", "port" }, where, "ssh")
  local user = v.user or "root"
  if type(user) ~= "string" or not user:match("^[%w._-]+$") then
    fields.fail(where, "ssh.user", "expected a user name, got %s", fields.describe(v.user))
  end
  local instance_key = v.key == nil and vm and vm.cloudinit
  if not instance_key and (type(v.key) ~= "string" or v.key == "") then
    fields.fail(where, "ssh.key", "expected the path of the private key, got %s%s", fields.describe(v.key),
      v.key == nil and "; or give the VM cloudinit = vmlua.cloudinit{...}, and it gets a key of its own" or "")
  end
  local port = v.port or 22
  if math.type(port) ~= "integer" or port < 1 or port > 65535 then
    fields.fail(where, "ssh.port", "expected the guest's ssh port (1-65535), got %s", fields.describe(v.port))
  end
  if instance_key then
    return { user = user, key = require("vmlua.cloudinit").key_path(vm.name), port = port, instance_key = true }
  end
  return { user = user, key = fields.resolve(where, v.key), port = port }
end

-- Where vmlua reaches the guest's sshd: { address=, port=, user=, key=,
-- known_hosts= } for a VM's configuration, or nil and why.
function ssh.target(cfg)
  local s = cfg.ssh
  if not s then
    return nil, 'it has no ssh = { key = ... } in its definition'
  end
  for _, n in ipairs(cfg.net or {}) do
    for _, f in ipairs(n.forward or {}) do
      if f.guest == s.port and f.protocol ~= "udp" then
        local address = f.address == "0.0.0.0" and "127.0.0.1" or f.address
        return { address = address, port = f.host, user = s.user, key = s.key,
                 known_hosts = runtime.paths(cfg.name).known_hosts }
      end
    end
  end
  return nil, string.format("no NAT forward reaches its ssh port %d (add forward = { [2222] = %d })",
                            s.port, s.port)
end

-- The ssh client's argv for target, running `command` (a string) or a shell.
function ssh.argv(target, command, terminal)
  local argv = { "ssh", "-i", target.key, "-p", tostring(target.port),
    "-o", "UserKnownHostsFile=" .. target.known_hosts, "-o", "StrictHostKeyChecking=accept-new",
    "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10", terminal and "-t" or "-T", target.user .. "@" .. target.address }
  if command then argv[#argv + 1] = command end
  return argv
end

local function target_of(vm, what)
  local target, why = ssh.target(vm.config)
  if not target then errors.raise(string.format("vm %s: %s: %s", vm.name, what, why), 3) end
  if vm.state ~= "running" then
    errors.raise(vm:_failure(string.format("cannot %s: it is %s", what, vm.state)), 3)
  end
  return target
end

--- Runs a shell command in the guest over ssh; returns its output and exit status, as vm:run does.
-- Needs `ssh = { key = ... }` in the definition (or `ssh = { user = ... }` and a `cloudinit` seed, which
-- gives the VM a key of its own) and a NAT forward to the guest's ssh port.
-- @tparam string command the command line
-- @tparam[opt] table opts `timeout` (seconds, default 60)
-- @treturn string its output
-- @treturn integer its exit status
function methods:ssh(command, opts)
  if type(command) ~= "string" then
    errors.raise(string.format("vm %s: ssh: the command must be a string, got %s", self.name,
                               fields.describe(command)), 2)
  end
  opts = machine.options(self, "ssh", opts, machine.TIMEOUT_ONLY)
  if machine.dry_run then return "", 0 end
  local target = target_of(self, "ssh")
  local ok, out, status, err = pcall(require("vmlua.exec").run, ssh.argv(target, command),
                                     { timeout = opts.timeout or machine.expect_timeout })
  if not ok then errors.raise(self:_failure("ssh: " .. tostring(out):gsub("^vmlua%.exec: ", "")), 2) end
  if status == 255 then
    errors.raise(self:_failure(string.format("ssh to %s@%s:%d failed: %s", target.user, target.address,
                                             target.port, (err:gsub("%s+$", "")))), 2)
  end
  return out, status
end

--- Waits until the guest's sshd lets vmlua in (a command runs); raises after the timeout.
-- @tparam[opt] table opts `timeout` (seconds, default 120)
-- @treturn VM the VM
function methods:wait_ssh(opts)
  opts = machine.options(self, "wait_ssh", opts, machine.TIMEOUT_ONLY)
  if machine.dry_run then return self end
  local target = target_of(self, "wait for ssh")
  local timeout = opts.timeout or 120
  local deadline = core.now() + timeout
  local last = "sshd did not answer"
  while core.now() < deadline do
    local answered = pcall(require("vmlua.exec").wait_port, target.address, target.port,
                           { timeout = math.max(0.1, deadline - core.now()), banner = "^SSH%-" })
    if answered then
      local ok, _, status, err = pcall(require("vmlua.exec").run, ssh.argv(target, "true"),
                                       { timeout = math.max(1, deadline - core.now()) })
      if ok and status == 0 then return self end
      last = ok and (err:gsub("%s+$", "")) or "ssh timed out"
    end
    if machine.ENDED[self.state] then break end
    require("vmlua.task").sleep(0.5)
  end
  errors.raise(self:_failure(string.format("timed out after %g s waiting for ssh on %s:%d (%s)", timeout,
                                           target.address, target.port, last)), 2)
end

-- `vmlua ssh NAME [command]`: hands the terminal to ssh.
function ssh.command(name, command)
  local cfg, _, missing = require("vmlua.config").load(runtime.paths(name).config)
  if missing then return nil, "no VM named " .. name .. " is running (see vmlua ls)" end
  local target, why = ssh.target(cfg or {})
  if not target then return nil, "vm " .. name .. ": " .. why end
  local argv = ssh.argv(target, command, command == nil)
  local file = require("vmlua.host").which("ssh")
  if not file then return nil, "no ssh client on PATH (Debian: openssh-client)" end
  local _, err = core.exec(file, argv)
  return nil, "cannot run " .. file .. ": " .. tostring(err)
end

function ssh.install(VM, m)
  machine = m
  for name, fn in pairs(methods) do VM[name] = fn end
end

return ssh
