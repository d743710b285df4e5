-- A private libvirtd for the libvirt specs: tests/support/libvirtd.py runs
-- it in a mount namespace of its own, over directories of a fresh private
-- directory, so the host's libvirt (/run/libvirt, /var/lib/libvirt,
-- /etc/libvirt, its daemons) is never read or changed. Needs root.
--
--   local libvirtd = require "support.libvirtd"
--   local d = libvirtd.start()         -- waits until the daemon answers
--   d:virsh { "create", xml_file }     -- code, stdout, stderr
--   d:stop()                           -- ends every QEMU, libvirtd; removes d.dir
--
-- QEMU's capabilities, probed for seconds at a daemon's first start, are
-- kept in vmlua's cache (libvirtd.cache()) so that later starts are warm.
local core = require "vmlua.core"
local host = require "vmlua.host"
local task = require "vmlua.task"
local lfs = require "lfs"
local helpers = require "support.helpers"

local libvirtd = {}

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local script = here .. "libvirtd.py"

-- Every daemon started and not yet stopped.
local live = {}

local read = require("vmlua.runtime").read_file

local function tail(text, lines)
  local all = {}
  for line in (text or ""):gmatch("[^\n]*\n?") do
    if line ~= "" then all[#all + 1] = line end
  end
  return table.concat(all, "", math.max(1, #all - lines + 1))
end

-- Runs argv (argv[1] found on PATH) on the event loop: exit code (nil when
-- killed or timed out), stdout, stderr.
function libvirtd.run(argv, timeout)
  local file = assert(host.which(argv[1]), argv[1] .. " is not installed")
  local r = { out = "", err = "", changed = task.condition() }
  local proc = assert(core.spawn {
    file = file, args = argv,
    on_stdout = function(d) r.out = r.out .. d; r.changed.notify() end,
    on_stderr = function(d) r.err = r.err .. d; r.changed.notify() end,
    on_exit = function(code) r.done, r.code = true, code; r.changed.notify() end,
  })
  if not r.changed.wait(function() return r.done end, timeout or 60) then
    proc:close()
    return nil, r.out, r.err .. "\n(timed out after " .. (timeout or 60) .. " s)"
  end
  proc:close()
  return r.code, r.out, r.err
end

-- Whether a private libvirtd can run here: true, or nil and why not.
function libvirtd.usable()
  if core.getuid() ~= 0 then return nil, "needs root" end
  for _, name in ipairs { "python3", "virsh" } do
    if not host.which(name) then return nil, name .. " is not installed" end
  end
  if not (host.which("libvirtd") or core.executable("/usr/sbin/libvirtd")) then
    return nil, "libvirtd is not installed"
  end
  return true
end

-- Where QEMU's capabilities are kept between runs.
function libvirtd.cache()
  return require("vmlua.runtime").cache() .. "/libvirtd-capabilities"
end

local Daemon = {}
Daemon.__index = Daemon

-- Runs `virsh -c URI args...`: exit code, stdout, stderr.
function Daemon:virsh(args, timeout)
  local argv = { "virsh", "-q", "-c", self.uri }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return libvirtd.run(argv, timeout)
end

-- The daemon's log (libvirtd's stderr), and what the runner printed.
function Daemon:log()
  return (read(self.dir .. "/libvirtd.log") or "") .. self.err
end

-- The pids of the QEMU processes the daemon runs now (from its pid files).
-- The pids of the daemon's processes whose command line has `program`
-- (libvirt keeps a pid file for each QEMU and virtiofsd it runs).
function Daemon:pids(program)
  local pids, run = {}, self.dir .. "/run/qemu"
  if not core.stat(run) then return pids end
  for name in lfs.dir(run) do
    local pid = name:match("%.pid$") and tonumber(read(run .. "/" .. name) or "")
    local cmdline = pid and read("/proc/" .. pid .. "/cmdline")
    if cmdline and cmdline:find(program, 1, true) then pids[#pids + 1] = pid end
  end
  table.sort(pids)
  return pids
end

function Daemon:qemu_pids()
  return self:pids("qemu-system")
end

-- The file QEMU's stderr and libvirt's notes about domain `name` go to.
function Daemon:qemu_log(name)
  return self.dir .. "/log/qemu/" .. name .. ".log"
end

-- Stops every QEMU of the daemon, then the daemon, and removes its
-- directory. Safe to call twice; d.stop() works too.
function Daemon:stop()
  local d = self or {}
  if getmetatable(d) ~= Daemon then error("call d:stop()", 2) end
  if d.stopped then return end
  d.stopped = true
  live[d] = nil
  local qemus = d:qemu_pids()
  if not d.exited then
    d.proc:kill("TERM")
    d.changed.wait(function() return d.exited end, 30)
  end
  d.proc:close() -- SIGKILL if it is still there
  -- The runner ends them all; should it have been killed, nothing is left
  -- behind either.
  for _, pid in ipairs(qemus) do
    if core.alive(pid) then libvirtd.run({ "kill", "-KILL", tostring(pid) }, 10) end
  end
  if d.daemon_pid and core.alive(d.daemon_pid) then
    libvirtd.run({ "kill", "-KILL", tostring(d.daemon_pid) }, 10)
  end
  helpers.rmtree(d.dir)
end

-- Starts a private libvirtd; waits (at most opts.timeout seconds, default
-- 120) until it answers. Returns a daemon with uri (for virsh -c and
-- virConnectOpen), dir (its private directory), pid (the runner's),
-- daemon_pid (libvirtd's), and the methods virsh, log, pids, qemu_pids,
-- qemu_log and stop. Raises, with the end of the daemon's log, when it does not
-- start. Several can run at once.
function libvirtd.start(opts)
  opts = opts or {}
  assert(libvirtd.usable())
  local dir = helpers.tmpdir()
  local d = setmetatable({
    dir = dir, uri = "qemu:///system?socket=" .. dir .. "/run/libvirt-sock",
    out = "", err = "", changed = task.condition(),
  }, Daemon)
  local cache = libvirtd.cache() -- the runner creates it
  d.proc = assert(core.spawn {
    file = host.which("python3"),
    args = { "python3", script, "--dir", dir, "--cache", cache },
    on_stdout = function(s) d.out = d.out .. s; d.changed.notify() end,
    on_stderr = function(s) d.err = d.err .. s; d.changed.notify() end,
    on_exit = function(code, signal)
      d.exited, d.code, d.signal = true, code, signal
      d.changed.notify()
    end,
  })
  d.pid = d.proc:pid()
  live[d] = true
  local deadline = core.now() + (opts.timeout or 120)
  local function fail(why)
    local log = d:log()
    d:stop()
    error(string.format("the private libvirtd did not start: %s; its log ends:\n%s", why, tail(log, 30)), 3)
  end
  local function left() return deadline - core.now() end
  d.changed.wait(function() return d.exited or d.out:find("\n") end, left())
  d.daemon_pid = tonumber(d.out:match("^libvirtd (%d+)\n"))
  if not d.daemon_pid then fail(d.exited and "its runner exited" or "timed out") end
  -- The socket shows early; virsh then waits until the drivers are up.
  local sock = dir .. "/run/libvirt-sock"
  while true do
    if d.exited then fail("libvirtd exited") end
    if left() <= 0 then fail("timed out; virsh: " .. tostring(d.last_error)) end
    if core.stat(sock) then
      local code, _, err = d:virsh({ "version" }, math.max(1, left()))
      if code == 0 then return d end
      d.last_error = err
    end
    task.sleep(0.05)
  end
end

-- Stops every daemon still running (for after_each and teardown).
function libvirtd.stop_all()
  for d in pairs(live) do d:stop() end
end

return libvirtd
