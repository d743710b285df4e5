-- Where a running VM keeps its private files (QMP sockets, console FIFOs,
-- pid, console log, lock): one directory per VM name, mode 0700, under
-- $VMLUA_RUNTIME_DIR, $XDG_RUNTIME_DIR/vmlua or /tmp/vmlua-UID. vmlua makes
-- these directories 0700 and never chmods one it finds: one that exists must
-- be a directory of the user's own, closed to group and others. A lock on
-- the file `lock` says who holds a name, for the VM's whole life; the
-- directory is removed when the VM ends.
local core = require "vmlua.core"

local runtime = {}

function runtime.root()
  local override = os.getenv("VMLUA_RUNTIME_DIR")
  if override and override ~= "" then return override end
  local xdg = os.getenv("XDG_RUNTIME_DIR")
  if xdg and xdg ~= "" then return xdg .. "/vmlua" end
  return "/tmp/vmlua-" .. core.getuid()
end

-- vmlua's cache ($VMLUA_CACHE, or $XDG_CACHE_HOME/vmlua, or ~/.cache/vmlua):
-- the guests scripts/build-guests.sh builds live in its guests/ARCH/.
function runtime.cache()
  local function env(name)
    local v = os.getenv(name)
    if v ~= nil and v ~= "" then return v end
  end
  return env("VMLUA_CACHE") or ((env("XDG_CACHE_HOME") or (env("HOME") or "") .. "/.cache") .. "/vmlua")
end

-- The longest socket path: 107 bytes on Linux, 103 on macOS.
runtime.max_socket_path = core.max_socket_path

-- Why `name` cannot name a VM, or nil. A name is a plain file name: it
-- becomes a directory, so neither "." nor ".." (the directory above), nor a
-- hidden name or one that reads as an option.
function runtime.name_problem(name)
  if not name:match("^[%w._-]+$") then
    return string.format("%q may only use letters, digits, '.', '_' and '-'", name)
  elseif not name:match("^%w") then
    return string.format("%q must start with a letter or a digit", name)
  end
end

-- The paths a VM named `name` uses under `root` (default runtime.root());
-- nothing is created.
function runtime.paths(name, root)
  root = root or runtime.root()
  local dir = root .. "/" .. name
  return {
    dir = dir,
    qmp = dir .. "/qmp.sock",
    console = dir .. "/console", -- QEMU's pipe chardev: console.in and console.out
    console_in = dir .. "/console.in", -- QEMU reads it, vmlua writes it
    console_out = dir .. "/console.out", -- QEMU writes it, vmlua reads it
    guard = dir .. "/guard.sock", -- QEMU's second QMP monitor, for the guard
    log = dir .. "/console.log",
    old_log = dir .. "/console.log.1", -- the log's rotated half
    pid = dir .. "/pid",
    lock = dir .. "/lock",
    config = dir .. "/config.json", -- the resolved configuration (config.encode)
    status = dir .. "/status.json", -- state, pids, start time: what `vmlua ls` shows
    control = dir .. "/control.sock", -- the VM's server: QMP-shaped, for vmlua.attach and the CLI
    console_sock = dir .. "/console.sock", -- the console, for clients
    known_hosts = dir .. "/known_hosts", -- the guest's ssh host key, as vm:ssh met it
    migration = dir .. "/migrate.sock", -- QEMU's state while vm:save runs (qemu/migration.lua)
    agent = dir .. "/qga.sock", -- QEMU listens: the guest agent's port (agent.lua)
  }
end

-- Why the sockets of a VM named `name` do not fit in a Unix socket address,
-- or nil.
function runtime.socket_problem(name, root)
  local paths = runtime.paths(name, root)
  local longest = paths.qmp
  for _, path in ipairs { paths.guard, paths.control, paths.console_sock } do
    if #path > #longest then longest = path end
  end
  local max = runtime.max_socket_path
  if #longest <= max then return nil end
  local room = max - (#longest - #name)
  return string.format("%q is too long: its socket %s would be %d bytes, and a Unix socket path holds at "
    .. "most %d; %sset VMLUA_RUNTIME_DIR to a shorter directory", name, longest, #longest, max,
    room > 0 and string.format("use a name of at most %d characters, or ", room) or "")
end

-- The throw-away overlay of the VM's i-th disk when it is ephemeral (see disks.lua).
function runtime.overlay(paths, i)
  return string.format("%s/disk%d.ephemeral.qcow2", paths.dir, i - 1)
end

-- The socket of the virtiofsd serving the VM's i-th share (qemu/virtiofsd.lua).
function runtime.share_socket(paths, i)
  return string.format("%s/fs%d.sock", paths.dir, i - 1)
end

-- One name per device in the list `key` ("disks", "shares") of the
-- configuration saved in the directory (a VM that crashed left it there).
local function per_device(paths, key, name)
  local cfg = runtime.read_json(paths.config) or {}
  local list = {}
  local devices = type(cfg[key]) == "table" and cfg[key] or {}
  for i = 1, #devices do list[i] = name(paths, i) end
  return list
end

-- The files of its devices the VM whose configuration is in the directory
-- may have made: ephemeral disks' overlays and shares' sockets.
function runtime.device_files(paths)
  local list = per_device(paths, "disks", runtime.overlay)
  for _, socket in ipairs(per_device(paths, "shares", runtime.share_socket)) do list[#list + 1] = socket end
  return list
end

-- What a VM leaves in its directory, besides the lock.
local function files(paths)
  local list = { paths.qmp, paths.console_in, paths.console_out, paths.guard, paths.pid, paths.log, paths.old_log,
                 paths.config, paths.status, paths.control, paths.console_sock, paths.migration,
                 paths.known_hosts, paths.agent }
  for _, file in ipairs(runtime.device_files(paths)) do list[#list + 1] = file end
  return list
end

local function read_number(path)
  local f = io.open(path)
  if not f then return nil end
  local n = tonumber(f:read("l"))
  f:close()
  return n
end

local function unusable(what, path, why)
  local fix = why:find("open to other users", 1, true) and ("run chmod 700 " .. path .. ", or ") or ""
  return string.format("cannot use the %s %s; %sset VMLUA_RUNTIME_DIR to a private directory", what, why, fix)
end

-- Who holds the name: the pid files are for people; only the lock counts.
local function already_running(paths)
  local about = {}
  local qemu, holder = read_number(paths.pid), read_number(paths.lock)
  if qemu then about[#about + 1] = "QEMU pid " .. qemu end
  if holder then about[#about + 1] = "vmlua pid " .. holder end
  about[#about + 1] = "runtime directory " .. paths.dir
  return "already running (" .. table.concat(about, ", ") .. ")"
end

-- Claims the name of a VM about to start: makes its directory and takes
-- its lock, which holds until runtime.remove (or until this process ends).
-- What a VM that ended without removing them left behind is removed.
-- Returns the claim, or nil and why ("already running (...)" when another
-- process, or another VM of this one, holds the name).
function runtime.claim(paths)
  local root = paths.dir:match("^(.*)/[^/]+$")
  local ok, why = core.mkdir_private(root)
  if not ok then return nil, unusable("runtime directory", root, why) end
  for _ = 1, 3 do
    ok, why = core.mkdir_private(paths.dir)
    if not ok then return nil, unusable("VM's runtime directory", paths.dir, why) end
    local claim, err, held = core.lock(paths.lock)
    if claim then
      for _, file in ipairs(files(paths)) do os.remove(file) end
      local f = io.open(paths.lock, "w")
      if f then f:write(core.getpid(), "\n") f:close() end
      return claim
    elseif held then
      return nil, already_running(paths)
    elseif core.stat(paths.dir) then
      return nil, "cannot lock " .. err
    end
    -- The holder removed the directory as it ended: make it again.
  end
  return nil, "cannot claim " .. paths.dir .. ": it keeps being removed"
end

-- Writes a private (0600) file atomically: a reader sees the old text or
-- the new, never a part; a failed write leaves the old one.
function runtime.write_file(path, text)
  local tmp = path .. ".tmp"
  os.remove(tmp)
  local ok, err = core.create_file(tmp, tonumber("600", 8))
  if not ok then return nil, "cannot create " .. tmp .. ": " .. tostring(err or "it exists") end
  local f
  f, err = io.open(tmp, "wb")
  if not f then return nil, err end
  local wrote, werr = f:write(text)
  local closed, cerr = f:close()
  if not (wrote and closed) then
    os.remove(tmp)
    return nil, "cannot write " .. tmp .. ": " .. tostring(werr or cerr)
  end
  return os.rename(tmp, path)
end

-- A whole file's text, or nil and why.
function runtime.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return text
end

-- A JSON file's object, or nil if it is missing or not an object.
function runtime.read_json(path)
  local value = core.json_decode(runtime.read_file(path) or "")
  return type(value) == "table" and value or nil
end

-- Records QEMU's pid in the claimed directory, for people to read.
function runtime.write_pid(paths, pid)
  local f = assert(io.open(paths.pid, "w"))
  f:write(pid, "\n")
  f:close()
end

-- Removes the directory of a VM that has ended and gives up its name. Without
-- a held claim it does nothing: the files would be another VM's. The lock
-- file goes while the lock is held, so no one claims the old file after.
function runtime.remove(paths, claim)
  if not (claim and claim:held()) then return end
  for _, file in ipairs(files(paths)) do os.remove(file) end
  os.remove(paths.lock)
  os.remove(paths.dir)
  claim:unlock()
end

return runtime
