-- Where a running VM keeps its private files (QMP and console sockets, pid,
-- console log): one directory per VM name, mode 0700, under
-- $XDG_RUNTIME_DIR/vmlua or /tmp/vmlua-UID. Removed when the VM ends.
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

-- The paths a VM named `name` uses; nothing is created.
function runtime.paths(name)
  local dir = runtime.root() .. "/" .. name
  return {
    dir = dir,
    qmp = dir .. "/qmp.sock",
    console = dir .. "/console.sock",
    log = dir .. "/console.log",
    pid = dir .. "/pid",
  }
end

local function files(paths)
  return { paths.qmp, paths.console, paths.pid, paths.log }
end

-- Makes the directory for a VM about to start, unless a live QEMU holds it
-- (its pid file); what a dead one left behind is removed.
function runtime.claim(paths)
  local made, why = core.mkdir_private(runtime.root())
  if not made then return nil, "cannot make the runtime directory " .. why end
  local f = io.open(paths.pid)
  if f then
    local pid = tonumber(f:read("l"))
    f:close()
    if pid and core.alive(pid) then
      return nil, string.format("already running (QEMU pid %d, runtime directory %s)", pid, paths.dir)
    end
  end
  local ok, err = core.mkdir_private(paths.dir)
  if not ok then return nil, err end
  for _, file in ipairs(files(paths)) do os.remove(file) end
  return true
end

-- Records QEMU's pid in the claimed directory.
function runtime.write_pid(paths, pid)
  local f = assert(io.open(paths.pid, "w"))
  f:write(pid, "\n")
  f:close()
end

-- Removes the directory of a VM that has ended.
function runtime.remove(paths)
  for _, file in ipairs(files(paths)) do os.remove(file) end
  os.remove(paths.dir)
end

return runtime
