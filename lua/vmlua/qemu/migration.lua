-- QEMU's migration stream to a file and back. QEMU 7.2 has no file: URI,
-- and exec: would go through a shell. To save, vmlua listens on a private
-- Unix socket in the VM's runtime directory (0700) and writes what QEMU
-- sends into the file; to load, QEMU reads the file as its stdin (fd:0).
-- A QEMU that libvirt runs cannot have the file as its stdin: it listens
-- on a socket in the runtime directory instead, and vmlua writes the file
-- into it. The waits are on QMP's MIGRATION events, never on a poll.
local core = require "vmlua.core"
local task = require "vmlua.task"

local migration = {}

migration.UNLIMITED = 1 << 40 -- bytes/s; QEMU's default cap is 32 MiB/s, for networks

local DONE = { completed = true, failed = true, cancelled = true }

-- The VM's last migration status, from its MIGRATION events.
local function watch(vm)
  if vm._migration_watched then return end
  vm._migration_watched = true
  vm:on("qmp", function(name, data)
    if name == "MIGRATION" then
      vm.migration_status = data.status
      vm.changed.notify()
    end
  end)
end

-- Events on, and no bandwidth cap: the only reader is a file.
local function prepare(vm, timeout)
  watch(vm)
  vm.migration_status = nil
  local _, err = vm.qmp:execute("migrate-set-capabilities",
    { capabilities = { { capability = "events", state = true } } }, timeout)
  if not err then
    _, err = vm.qmp:execute("migrate-set-parameters", { ["max-bandwidth"] = migration.UNLIMITED }, timeout)
  end
  return not err, err
end

-- QEMU's own words for a failed migration.
local function failure(vm, timeout)
  local info = vm.qmp.open and vm.qmp:execute("query-migrate", nil, timeout)
  return "migration " .. tostring(vm.migration_status)
    .. (info and info["error-desc"] and (": " .. info["error-desc"]) or "")
end

-- Waits until the migration ends and more(), if given, holds; nil, why if
-- it fails, times out or QEMU ends.
local function finish(vm, more, timeout)
  local ended = require("vmlua.machine").ENDED
  local ok = vm.changed.wait(function()
    return (DONE[vm.migration_status] and (not more or more())) or ended[vm.state]
  end, timeout)
  if not ok then return nil, string.format("the migration did not end within %g s", timeout) end
  if ended[vm.state] then return nil, "QEMU ended during the migration" end
  if vm.migration_status ~= "completed" then return nil, failure(vm, timeout) end
  return true
end

-- Saves the state of a VM whose guest is stopped into `file` (made 0600).
-- Returns the bytes written, or nil and why. QEMU is then in "postmigrate":
-- its disks are flushed and inactive until `cont`.
function migration.save(vm, file, timeout)
  local ok, err = prepare(vm, timeout)
  if not ok then return nil, "QMP: " .. err end
  local socket = vm.paths.migration
  os.remove(socket)
  ok, err = core.create_file(file, tonumber("600", 8))
  if not ok then return nil, "cannot create " .. file .. ": " .. tostring(err or "it exists") end
  local out
  out, err = io.open(file, "wb")
  if not out then return nil, err end
  local bytes, eof, werr, conn = 0, false, nil, nil
  local server
  server, err = core.listen(socket, function(stream)
    if conn then stream:close() return end
    conn = stream
    stream:read(function(data, rerr)
      if data then
        local wrote, why = out:write(data)
        if wrote then bytes = bytes + #data else werr = why; stream:close() end
      else
        eof = rerr or true
        vm.changed.notify()
      end
    end)
  end)
  if not server then
    out:close()
    return nil, "cannot listen on " .. socket .. ": " .. err
  end
  local _, merr = vm.qmp:execute("migrate", { uri = "unix:" .. socket }, timeout)
  if not merr then
    -- QEMU reports "completed" before it closes the socket: wait for both
    _, merr = finish(vm, function() return eof or werr end, timeout)
  end
  server:close()
  if conn then conn:close() end
  os.remove(socket)
  local closed, cerr = out:close()
  if merr then return nil, merr end
  if werr or not closed then return nil, "cannot write " .. file .. ": " .. tostring(werr or cerr) end
  return bytes
end

-- Has a QEMU started with `-incoming defer` and the state file as its
-- stdin (see machine.lua) load that state: QEMU reads the file itself, with
-- no copy through vmlua. Returns true, or nil and why; the guest is then
-- stopped, as it was saved.
function migration.load(vm, timeout)
  local ok, err = prepare(vm, timeout)
  if not ok then return nil, "QMP: " .. err end
  local _, merr = vm.qmp:execute("migrate-incoming", { uri = "fd:0" }, timeout)
  if merr then return nil, "QMP: " .. merr end
  return finish(vm, nil, timeout)
end

-- migration.load for a QEMU started with `-incoming defer` that cannot read
-- the file itself (libvirt runs it): QEMU listens on a Unix socket in the
-- runtime directory and vmlua writes `file` into it, a chunk at a time.
function migration.load_stream(vm, file, timeout)
  local ok, err = prepare(vm, timeout)
  if not ok then return nil, "QMP: " .. err end
  local socket = vm.paths.migration
  os.remove(socket)
  local _, merr = vm.qmp:execute("migrate-incoming", { uri = "unix:" .. socket }, timeout)
  if merr then return nil, "QMP: " .. merr end
  local stream, cerr = task.await(function(wake) core.connect(socket, wake) end, timeout)
  if not stream then return nil, "cannot connect to QEMU's " .. socket .. ": " .. tostring(cerr) end
  local input, ferr = io.open(file, "rb")
  if not input then
    stream:close()
    return nil, ferr
  end
  local werr
  while not werr do
    local chunk = input:read(1 << 20)
    if not chunk then break end
    local wrote, why = task.await(function(wake) stream:write(chunk, wake) end, timeout)
    if not wrote then werr = why end
  end
  input:close()
  if not werr then stream:shutdown() end
  local done, why = finish(vm, nil, timeout)
  stream:close()
  os.remove(socket)
  if werr then return nil, "cannot write the state to QEMU: " .. tostring(werr) end
  return done, why
end

return migration
