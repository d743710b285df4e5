-- Where instances live, and which are alive.
--
-- A detached instance keeps a private (0700) state directory,
-- $XDG_STATE_HOME/vmlua/NAME (default ~/.local/state/vmlua/NAME), for as
-- long as it is not removed: config.json (its resolved configuration),
-- status.json (its last known state), console.log (rotated at 1 MiB) and
-- keeper.log (what its keeper printed). A VM booted by vmlua.efi{} keeps
-- its UEFI variables there too (efi-vars.fd), detached or not. While any VM runs, its runtime
-- directory (runtime.lua) holds its sockets, its status and the lock
-- whose holder runs it. Liveness is that lock, never a pid: a lock nobody
-- holds is what a process that died left, and is cleaned up here.
local core = require "vmlua.core"
local lfs = require "lfs"
local runtime = require "vmlua.runtime"

local store = {}

local ENDED = { stopped = true, error = true }

function store.root()
  local state = os.getenv("XDG_STATE_HOME")
  if not state or state == "" then state = (os.getenv("HOME") or "") .. "/.local/state" end
  return state .. "/vmlua"
end

function store.paths(name)
  local dir = store.root() .. "/" .. name
  return { dir = dir, config = dir .. "/config.json", status = dir .. "/status.json",
           log = dir .. "/console.log", keeper_log = dir .. "/keeper.log",
           key = dir .. "/id_ed25519", -- the instance's own ssh key (cloudinit.lua), and its .pub
           efi_vars = dir .. "/efi-vars.fd" } -- its own UEFI variable store (efi.lua)
end

-- Makes a directory and its missing parents, each private (0700), as the
-- XDG base directory specification asks.
local function make_dirs(path)
  local parent = path:match("^(.+)/[^/]+$")
  if parent and not core.stat(parent) then
    local ok, err = make_dirs(parent)
    if not ok then return nil, err end
  end
  return core.mkdir_private(path)
end

-- Makes the state directory of an instance; returns its paths or nil, err.
function store.prepare(name)
  local paths = store.paths(name)
  local ok, err = make_dirs(paths.dir)
  if not ok then return nil, "cannot use the state directory " .. err end
  return paths
end

local read_json = runtime.read_json

function store.notice(message)
  require("vmlua.notice").say(message) -- silenced by vmlua -q
end

-- The status of the VM that runs under `name` now, or nil when none does.
-- Files left by a vmlua or QEMU that died are removed, with a notice.
function store.running(name)
  local paths = runtime.paths(name)
  if not core.stat(paths.dir) then return nil end
  local lock, _, held = core.lock(paths.lock)
  if held then
    local status = read_json(paths.status) or { name = name, state = "starting" }
    local vmlua = math.tointeger(status.vmlua)
    if vmlua and not core.alive(vmlua) and not ENDED[status.state] then
      -- its guard holds the lock now, and powers the guest off
      status.state = "stopping"
      status.reason = string.format("its %s (vmlua pid %d) died; its guard is powering it off",
                                    status.detached and "keeper" or "vmlua", vmlua)
    end
    return status
  elseif lock then
    local status = read_json(paths.status)
    local cfg = read_json(paths.config)
    runtime.remove(paths, lock)
    local by = status and status.vmlua and (" pid " .. math.tointeger(status.vmlua)) or ""
    if cfg and cfg.backend and status and not ENDED[status.state] then
      store.keep_orphan(name, cfg, status, by)
    else
      store.notice(string.format("vm %s: removed the files left by vmlua%s, which died while running it", name, by))
    end
  end
  return nil
end

-- A VM run by libvirt whose vmlua died: its domain may run on, so it stays
-- an instance (its state from libvirt, see store.stopped) that vmlua stop
-- and rm reach through libvirt.
function store.keep_orphan(name, cfg, status, by)
  local paths = store.prepare(name)
  if not paths then return end
  runtime.write_file(paths.config, core.json_encode(cfg))
  status.orphaned, status.host, status.pid, status.vmlua = true, cfg.backend.uri, nil, nil
  runtime.write_file(paths.status, core.json_encode(status))
  store.notice(string.format("vm %s: its vmlua%s died; libvirt may run it on (%s); vmlua stop %s stops it",
    name, by, cfg.backend.uri, name))
end

-- An orphaned libvirt VM's status, from libvirt; one whose domain has ended
-- is recorded as stopped.
local function orphan_status(name, uri, status, paths)
  local state, err, missing = require("vmlua.libvirt.orphan").state(uri, name)
  if state == "running" or state == "paused" or state == "blocked" then
    status.state = state == "blocked" and "running" or state
    status.reason = "no vmlua serves it; libvirt runs it on " .. uri
  elseif missing or state == "shutoff" then
    status.state, status.orphaned, status.outcome = "stopped", nil, "forced"
    status.reason = "its domain on " .. uri .. " has ended, with no vmlua to see how"
    runtime.write_file(paths.status, core.json_encode(status))
  else
    status.state, status.reason = "unknown", "libvirt on " .. uri .. " does not answer: " .. tostring(err or state)
  end
  return status
end

-- Whether pid is alive and (where /proc tells) a vmlua keeper: a pid
-- reused after a restart is not.
function store.is_keeper(pid)
  if not core.alive(pid) then return false end
  local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
  if not f then return true end
  local cmdline = f:read("a") or ""
  f:close()
  return cmdline:find("\0keeper\0", 1, true) ~= nil
end

-- The last known status of a detached instance that does not run now, or
-- nil when there is no such instance. One whose keeper died while it ran
-- is recorded as stopped, with why.
function store.stopped(name)
  local paths = store.paths(name)
  if not core.stat(paths.config) then return nil end
  local status = read_json(paths.status)
  if not status then
    local cfg = read_json(paths.config) or {}
    status = { name = name, arch = cfg.arch, cpus = cfg.cpus, memory = cfg.memory, ports = {} }
  end
  if status.orphaned and status.host then return orphan_status(name, status.host, status, paths) end
  local keeper = math.tointeger(status.vmlua)
  if not ENDED[status.state] and keeper and store.is_keeper(keeper) then
    -- it has let go of its runtime directory and is recording how it ended
    status.state, status.detached = "stopping", true
    return status
  elseif not ENDED[status.state] then
    status.reason = string.format("its keeper (vmlua pid %s) ended without recording its end "
      .. "(killed, or the host restarted); its guard powered it off", tostring(math.tointeger(status.vmlua) or "?"))
    status.state, status.pid, status.outcome = "stopped", nil, "forced"
    runtime.write_file(paths.status, core.json_encode(status))
    store.notice(string.format("vm %s: %s", name, status.reason))
  end
  status.state = status.state or "stopped"
  status.detached = true
  return status
end

local function names_in(dir, into)
  if lfs.attributes(dir, "mode") ~= "directory" then return end
  for name in lfs.dir(dir) do
    if not runtime.name_problem(name) then into[name] = true end
  end
end

-- Every VM that runs and every detached instance, sorted by name; each a
-- status table (see instance/server.lua's describe) with `uptime` for the
-- running ones.
function store.list()
  local names = {}
  names_in(runtime.root(), names)
  names_in(store.root(), names)
  local list = {}
  for name in pairs(names) do
    local status = store.running(name)
    if status then
      status.uptime = status.started and os.time() - status.started or nil
      status.detached = status.detached or core.stat(store.paths(name).config) ~= nil
    else
      status = store.stopped(name)
    end
    if status then list[#list + 1] = status end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

return store
