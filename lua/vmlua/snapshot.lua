--- Snapshots of a running VM: vm:save(path), vm:restore(path) and
-- vmlua.restore(path, opts). A snapshot is a directory:
--
--   PATH/state         QEMU's migration stream: memory and devices
--   PATH/config.json   the VM's resolved configuration (config.encode)
--   PATH/fingerprint   what a VM must share to load the state (JSON)
--   PATH/diskN.qcow2   a frozen copy of writable disk N (config.disks[N])
--
-- It is built as .NAME.tmp-PID beside PATH and renamed to PATH at the end,
-- so a save that fails or is interrupted never leaves a PATH that restore
-- accepts. The state is saved with the guest stopped (each page once);
-- then QEMU has flushed its disks and let go of them, so each copy matches
-- the memory.
-- @module vmlua.snapshot
local config = require "vmlua.config"
local core = require "vmlua.core"
local lfs = require "lfs"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local img = require "vmlua.qemu.img"
local migration = require "vmlua.qemu.migration"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"
local size = require "vmlua.size"

local snapshot = { timeout = 300 } -- seconds for the migration (a disk copy: qemu/img.lua)

local methods = {}
local machine -- vmlua.machine, set by snapshot.install

local FORMAT = 1
local FILES = { "state", "config.json", "fingerprint" }

local function absolute(path)
  if path:sub(1, 1) ~= "/" then path = lfs.currentdir() .. "/" .. path end
  return fields.normalize(path)
end

local function disk_file(i) return string.format("disk%d.qcow2", i) end

-- qemu-img convert from -> to (made in `format`); a disk QEMU holds (its
-- image lock) makes it fail rather than copy something inconsistent.
local function convert(from, from_format, to, to_format)
  local ok, err = img.run { "convert", "-f", from_format, "-O", to_format, from, to }
  if not ok then return nil, "qemu-img convert: " .. err end
  return true
end

-- What must match for a state to load: the machine QEMU builds, and QEMU.
-- Read from the argv vmlua would run, so it follows qemu.lua.
function snapshot.fingerprint(cfg, accel, version)
  local args = qemu.command(cfg, runtime.paths(cfg.name), accel).args
  local fp = { format = FORMAT, arch = cfg.arch, accel = accel, cpus = cfg.cpus, memory = cfg.memory,
               qemu = version, boot = cfg.boot and cfg.boot.kind or "none" }
  local devices = {}
  for i = 2, #args - 1 do
    local a, v = args[i], args[i + 1]
    if a == "-machine" then fp.machine = v
    elseif a == "-cpu" then fp.cpu = v
    elseif a == "-bios" or (a == "-drive" and v:find("^if=pflash")) then fp.boot = fp.boot .. " with firmware"
    end
  end
  for _, d in ipairs(cfg.disks) do devices[#devices + 1] = d.readonly and "disk (read-only)" or "disk" end
  for _, n in ipairs(cfg.net) do devices[#devices + 1] = n.kind == "lan" and ("lan " .. n.name) or "nat" end
  fp.devices = #devices > 0 and table.concat(devices, ", ") or "none"
  return fp
end

local FIELDS = { "format", "arch", "qemu", "machine", "accel", "cpu", "cpus", "memory", "boot", "devices" }
local SHOW = { memory = size.format, format = function(v) return "snapshot format " .. tostring(v) end,
               qemu = function(v) return "QEMU " .. tostring(v) end }

-- The first field in which fingerprints differ, said plainly; nil if none.
-- `skip`: fields not known yet (the QEMU version, before QEMU runs).
function snapshot.differs(saved, mine, skip)
  for _, field in ipairs(FIELDS) do
    local a, b = saved[field], mine[field]
    if not (skip and skip[field]) and a ~= b then
      local show = SHOW[field] or tostring
      return string.format("%s differs: the snapshot has %s, this VM %s", field,
                           a == nil and "none" or show(a), b == nil and "none" or show(b))
    end
  end
end

-- QEMU's version, from its greeting or (libvirt has had it) query-version.
local function qemu_version(vm)
  local v = vm.qmp and vm.qmp.greeting and vm.qmp.greeting.version and vm.qmp.greeting.version.qemu
  if not v and vm.qmp and vm.qmp.open then
    local answer = vm.qmp:execute("query-version", nil, machine.start_timeout)
    v = answer and answer.qemu
  end
  if not v then return nil end
  return string.format("%d.%d.%d", v.major, v.minor, v.micro)
end

-- Reads a snapshot: its fingerprint and configuration, or nil and why.
function snapshot.read(path)
  local st = core.stat(path)
  if not st then return nil, "there is no snapshot " .. path end
  if st.type ~= "directory" then return nil, path .. " is not a snapshot (not a directory)" end
  for _, name in ipairs(FILES) do
    if not core.stat(path .. "/" .. name) then return nil, path .. " is not a snapshot: it has no " .. name end
  end
  local fp, err = core.json_decode(runtime.read_file(path .. "/fingerprint") or "")
  if type(fp) ~= "table" then return nil, path .. "/fingerprint: " .. tostring(err) end
  local cfg
  cfg, err = config.decode(runtime.read_file(path .. "/config.json") or "")
  if not cfg then return nil, path .. "/config.json: " .. err end
  fp.cpus, fp.memory, fp.format = math.tointeger(fp.cpus), math.tointeger(fp.memory), math.tointeger(fp.format)
  return { path = path, fingerprint = fp, config = cfg }
end

-- The temporary directory, and removing it with what it holds.
local function remove_tree(dir, cfg)
  for _, name in ipairs(FILES) do os.remove(dir .. "/" .. name) end
  for i = 1, #cfg.disks do os.remove(dir .. "/" .. disk_file(i)) end
  os.remove(dir)
end

-- Why a VM's state cannot go to or come from a file here: QEMU runs on
-- another host (the state passes through a socket of this host's); nil.
function snapshot.elsewhere(cfg)
  local b = cfg.backend
  if b and b.uri and not require("vmlua.libvirt.uri").is_local(b.uri) then
    return "libvirt runs it on another host (" .. b.uri .. "); snapshots are of VMs on this one"
  end
  return nil
end

--- Saves the running VM to a snapshot directory: memory, devices and a copy of each disk.
-- @tparam string path the snapshot's directory
-- @tparam[opt] table opts `keep_running`: the VM runs on (it stops otherwise)
function methods:save(path, opts)
  if type(path) ~= "string" or path == "" then
    errors.raise(string.format("vm %s: save: expected the snapshot's path (a string), got %s", self.name,
                               fields.describe(path)), 2)
  end
  opts = machine.options(self, "save", opts, { "keep_running" })
  if machine.dry_run then return self end
  if self.state ~= "running" and self.state ~= "paused" then
    errors.raise(self:_failure("cannot save: it is " .. self.state), 2)
  end
  local elsewhere = snapshot.elsewhere(self.config)
  if elsewhere then errors.raise(string.format("vm %s: cannot save: %s", self.name, elsewhere), 2) end
  path = absolute(path)
  local dir, base = path:match("^(.*)/([^/]+)$")
  if core.stat(path) then
    errors.raise(string.format("vm %s: cannot save to %s: it exists; remove it or choose another path",
                               self.name, path), 2)
  end
  local tmp = string.format("%s/.%s.tmp-%d", dir, base, core.getpid())
  local cfg = self.config
  remove_tree(tmp, cfg) -- left by an earlier process with our pid
  local made, err = core.mkdir_private(tmp)
  if not made then errors.raise(string.format("vm %s: cannot save to %s: %s", self.name, path, err), 2) end

  local was_running = self.state == "running"
  local bytes
  local ok, failed = pcall(function()
    if was_running then self:pause() end
    local why
    bytes, why = migration.save(self, tmp .. "/state", snapshot.timeout)
    if not bytes then error(why, 0) end
    -- QEMU has flushed and released its disks: copy the writable ones.
    for i, d in ipairs(cfg.disks) do
      if not d.readonly then
        local copied, cerr = convert(d.path, d.format, tmp .. "/" .. disk_file(i), "qcow2")
        if not copied then error("copying disk " .. d.path .. ": " .. cerr, 0) end
        core.chmod(tmp .. "/" .. disk_file(i), tonumber("400", 8)) -- clones read it through overlays
      end
    end
    local fp = snapshot.fingerprint(cfg, self.accel, qemu_version(self))
    assert(runtime.write_file(tmp .. "/config.json", config.encode(cfg)))
    assert(runtime.write_file(tmp .. "/fingerprint", core.json_encode(fp)))
    local renamed, rerr = os.rename(tmp, path)
    if not renamed then error("cannot rename " .. tmp .. " to " .. path .. ": " .. rerr, 0) end
  end)
  if not ok then
    remove_tree(tmp, cfg)
    failed = tostring(failed)
    -- The guest runs again as it was, when QEMU still runs.
    if was_running and self.qmp and self.qmp.open and not machine.ENDED[self.state] then
      pcall(self.resume, self)
    end
    if machine.ENDED[self.state] then failed = self:_why_closed(failed) end
    errors.raise(self:_failure(string.format("cannot save to %s: %s", path, failed)), 2)
  end
  self.saved = { path = path, bytes = bytes }
  if opts.keep_running then
    if was_running then self:resume() end
    return self
  end
  -- QEMU ends cleanly: quit.
  self.stop_requested, self.stop_reason = true, "saved to " .. path
  self:_set_state("stopping")
  self.qmp:send("quit")
  if not self:_wait_until(function(s) return machine.ENDED[s] end, machine.stop_timeout) then
    self:_force("QEMU did not quit after the save")
  end
  return self
end

-- The configuration to run a restore with: each writable disk as in the
-- snapshot. An ephemeral disk runs on a throw-away overlay of the
-- snapshot's copy (nothing to copy, the snapshot stays as it is); any other
-- is rewound: the copy is written back over the VM's own disk, which it
-- keeps using afterwards.
local function restore_config(vm, snap)
  local cfg, run = vm.config, {}
  for k, v in pairs(vm.config) do run[k] = v end
  run.disks = {}
  local rewind = {}
  for i, d in ipairs(cfg.disks) do
    local copy = snap.path .. "/" .. disk_file(i)
    local r = {}
    for k, v in pairs(d) do r[k] = v end
    if not d.readonly then
      if not core.stat(copy) then return nil, snap.path .. " is not a snapshot: it has no " .. disk_file(i) end
      if d.ephemeral then
        r.path, r.format = copy, "qcow2"
      else
        rewind[#rewind + 1] = { from = copy, to = d.path, format = d.format }
      end
    end
    run.disks[i] = r
  end
  return run, rewind
end

--- Restores a snapshot into this stopped VM, whose configuration must match the
-- snapshot's; returns when the guest runs where it was saved.
-- @tparam string path the snapshot's directory (from vm:save)
-- @return the VM
function methods:restore(path)
  if type(path) ~= "string" or path == "" then
    errors.raise(string.format("vm %s: restore: expected the snapshot's path (a string), got %s", self.name,
                               fields.describe(path)), 2)
  end
  if machine.dry_run then return self end
  self:_check("start")
  path = absolute(path)
  local function refuse(why)
    errors.raise(string.format("vm %s: cannot restore %s: %s", self.name, path, why), 3)
  end
  if snapshot.elsewhere(self.config) then refuse(snapshot.elsewhere(self.config)) end
  local snap, err = snapshot.read(path)
  if not snap then refuse(err) end
  local accel = qemu.accel(self.config) or self.config.accel
  local fp = snapshot.fingerprint(self.config, accel)
  local differs = snapshot.differs(snap.fingerprint, fp, { qemu = true })
  if differs then refuse(differs) end
  local run, rewind = restore_config(self, snap)
  if not run then refuse(rewind) end
  for _, r in ipairs(rewind) do
    local ok, cerr = convert(r.from, "qcow2", r.to, r.format)
    if not ok then refuse("rewinding disk " .. r.to .. ": " .. cerr) end
  end
  -- QEMU says its version in its greeting: it must be the saving one's.
  self.incoming = { file = path .. "/state", load = function(vm)
    local version = qemu_version(vm)
    if version ~= snap.fingerprint.qemu then
      return nil, string.format("qemu differs: the snapshot was saved by QEMU %s, this is QEMU %s",
                                tostring(snap.fingerprint.qemu), tostring(version))
    end
    if vm.config.backend then return migration.load_stream(vm, path .. "/state", snapshot.timeout) end
    return migration.load(vm, snapshot.timeout)
  end }
  local own = self.config
  self.config = run
  local ok, serr = pcall(self.start, self)
  self.config, self.incoming = own, nil
  if not ok then
    serr = tostring(serr):gsub("^.-(vm " .. self.name:gsub("%p", "%%%0") .. ": )cannot start: ",
                               "%1cannot restore " .. path:gsub("%%", "%%%%") .. ": ")
    errors.raise(serr, 2)
  end
  self.restored = path
  return self
end

-- vmlua.restore(path [, { name =, ephemeral = }]): the VM the snapshot was
-- saved from, rebuilt from its configuration and restored. ephemeral: its
-- writable disks are throw-away overlays of the snapshot's copies, so one
-- snapshot gives any number of independent clones; without a name each
-- gets the first free NAME-N.
function snapshot.restore(path, opts)
  local function fail(fmt, ...)
    errors.raise(string.format("vmlua.restore: " .. fmt, ...), 3)
  end
  if type(path) ~= "string" or path == "" then
    fail("expected the snapshot's path (a string), got %s", fields.describe(path))
  end
  opts = opts or {}
  if type(opts) ~= "table" then fail("the options must be a table, got %s", fields.describe(opts)) end
  fields.check(opts, { "name", "ephemeral" }, fields.where(2), "vmlua.restore")
  if opts.name ~= nil and (type(opts.name) ~= "string" or runtime.name_problem(opts.name)) then
    fail("name: %s", type(opts.name) == "string" and runtime.name_problem(opts.name)
         or "expected a string, got " .. fields.describe(opts.name))
  end
  if opts.ephemeral ~= nil and type(opts.ephemeral) ~= "boolean" then
    fail("ephemeral: expected true or false, got %s", fields.describe(opts.ephemeral))
  end
  path = absolute(path)
  local snap, err = snapshot.read(path)
  if not snap then fail("cannot restore %s: %s", path, err) end
  local cfg = snap.config
  if opts.ephemeral then
    for _, d in ipairs(cfg.disks) do
      if not d.readonly then d.ephemeral = true end
    end
    cfg.console.log = nil -- the saved VM's own log is not a clone's
  end
  cfg.name = opts.name or cfg.name
  if opts.ephemeral and not opts.name then
    local n = 1
    while core.stat(runtime.paths(cfg.name .. "-" .. n).dir) do n = n + 1 end
    cfg.name = cfg.name .. "-" .. n
  end
  local vm = machine.from_config(cfg)
  local ok, rerr = pcall(vm.restore, vm, path)
  if not ok then errors.raise((tostring(rerr):gsub("^[^:]*snapshot%.lua:%d+: ", "")), 2) end
  return vm
end

function snapshot.install(VM, m)
  machine = m
  for name, fn in pairs(methods) do VM[name] = fn end
end

return snapshot
