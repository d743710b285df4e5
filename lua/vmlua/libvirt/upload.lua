--- The files of a VM on a libvirt host that is not this machine: a path in
-- the domain's XML is a path on the host, so what the domain reads is
-- uploaded into one of the host's storage pools first.
--
-- Read-only files (kernel, initrd, firmware, read-only disks, the base of an
-- ephemeral disk, the cloud-init seed) are named by their content,
-- `vmlua-sha256-HEX`: the same bytes are uploaded once, whatever VM or
-- path they come from, and a second start uploads nothing. A small marker
-- volume, NAME.ok, is made once an upload is whole. A volume without one
-- is another vmlua's upload of the same bytes, which this one waits for
-- while the volume grows, or one cut short (its vmlua was killed), which
-- is deleted and sent again once it has not grown for upload.stall seconds.
--
-- Writable disks and EFI variable stores are named by the VM and the disk
-- (`vmlua-VM-disk1`, `vmlua-VM-vars`), not by content: their content
-- changes on the host as the guest writes. They are uploaded only when
-- the host has none yet; from then on the host's copy is the disk, and
-- the local file is not read again (delete the volume to start over).
-- An ephemeral disk gets a fresh qcow2 overlay volume on the host over its
-- uploaded base at each start, which upload.release deletes.
-- @module vmlua.libvirt.upload
local core = require "vmlua.core"
local task = require "vmlua.task"
local connection = require "vmlua.libvirt.connection"
local cloudinit = require "vmlua.cloudinit"
local disks = require "vmlua.disks"
local runtime = require "vmlua.runtime"

local upload = {}

-- The SHA-256 of files already hashed by this process, by path, size and
-- modification time: a second start hashes nothing either.
local hashed = {}

local function hash(path)
  local st = core.stat(path)
  if not st then return nil, path .. ": no such file" end
  local key = string.format("%s\0%d\0%s", path, st.size or 0, tostring(st.mtime))
  if hashed[key] then return hashed[key] end
  local hex, err = task.await(function(wake) core.sha256_file(path, wake) end)
  if not hex then return nil, err end
  hashed[key] = hex
  return hex
end

-- Volume names take letters, digits, '.', '_' and '-'; a VM name with
-- others keeps its readable part and gains a hash, so two never meet.
local function vm_part(name)
  local safe = name:gsub("[^%w._-]", "_")
  if safe ~= name or safe:sub(1, 1) == "." then safe = safe:gsub("^%.", "_") .. "-" .. core.sha256(name):sub(1, 8) end
  return safe
end

local function read_header(path, n)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read(n)
  f:close()
  return data
end

-- A qcow2 image's virtual size and whether it has a backing file; nil for
-- other files.
local function qcow2_info(path)
  local h = read_header(path, 32)
  if not h or #h < 32 or h:sub(1, 4) ~= "QFI\251" then return nil end
  local backing_offset = string.unpack(">I8", h, 9)
  return { size = string.unpack(">I8", h, 25), backing = backing_offset ~= 0 }
end

--- What the domain of `cfg` reads from files, in the order domain.xml asks:
-- a list of { path=, field=, kind= ("content": named by its bytes;
-- "vm": the VM's own, uploaded once; "overlay": made on the host at each
-- start over `base`), volume= (for "vm"), format=, base= }.
-- Raises nothing; problems (a missing file, a qcow2 disk over a local
-- backing file) are in `problem` of the item.
-- @tparam table cfg a resolved VM configuration (config.vm)
-- @tparam[opt] table paths runtime.paths of the VM (for ephemeral disks)
-- @treturn table the list
function upload.items(cfg, paths)
  paths = paths or runtime.paths(cfg.name)
  local list, vm = {}, vm_part(cfg.name)
  local function add(item)
    local from = item.from or item.path
    if item.kind ~= "overlay" and not (from and core.stat(from)) then
      item.problem = tostring(from or item.path) .. ": no such file"
    end
    list[#list + 1] = item
  end
  local boot = cfg.boot
  if boot and boot.firmware then add { path = boot.firmware, field = "boot.firmware", kind = "content" } end
  if boot and boot.kind == "linux" then
    add { path = boot.kernel, field = "boot.kernel", kind = "content" }
    if boot.initrd then add { path = boot.initrd, field = "boot.initrd", kind = "content" } end
  elseif boot and boot.kind == "efi" and boot.vars then
    if boot.template then add { path = boot.template, field = "boot.firmware", kind = "content" } end
    -- a store not made yet starts on the host as a copy of its template
    local from = core.stat(boot.vars) and boot.vars or boot.template
    add { path = boot.vars, from = from, template = from ~= boot.vars, field = "boot.vars", kind = "vm",
          volume = string.format("vmlua-%s-vars", vm) }
  end
  for i, d in ipairs(cfg.disks) do
    local field = string.format("disks[%d].path", i)
    local q = core.stat(d.path) and qcow2_info(d.path)
    local item
    if d.readonly then
      item = { path = d.path, field = field, kind = "content" }
    elseif d.ephemeral then
      add { path = d.path, field = field, kind = "content" }
      item = { path = disks.drive(d, i, paths), field = field, kind = "overlay", base = d.path,
               format = d.format or "raw", size = q and q.size or (core.stat(d.path) or {}).size,
               volume = string.format("vmlua-%s-disk%d-ephemeral", vm, i) }
    else
      item = { path = d.path, field = field, kind = "vm", volume = string.format("vmlua-%s-disk%d", vm, i) }
    end
    if q and q.backing then
      item.problem = d.path .. " is a qcow2 overlay over a file of this machine, which cannot be uploaded alone"
    end
    add(item)
  end
  local seed = cloudinit.seed_arg(cfg)
  if seed then add { path = seed, field = "cloudinit", kind = "content" } end
  return list
end

local function await_upload(pool, from, name)
  return task.await(function(wake) pool:upload(from, name, wake) end)
end

local MARKER = "<volume><name>%s.ok</name><capacity unit='bytes'>0</capacity>" ..
               "<target><format type='raw'/></target></volume>"

-- The pool's volumes by name, or nil and why.
local function list(pool)
  local volumes, err = connection.call(pool, "volumes")
  if not volumes then return nil, err end
  local present = {}
  for _, v in ipairs(volumes) do present[v.name] = v end
  return present
end

--- Seconds that a content volume without its marker may go without growing
-- before it counts as an upload cut short (its vmlua was killed) and is sent again.
upload.stall = 10

-- Makes content volume item.volume whole on the host: the path of the
-- volume, or nil and why. Creating a volume fails when it exists, so of two
-- vmlua processes sending the same bytes one uploads; the other waits for
-- the marker while the volume grows, and replaces it when it stops growing.
local function whole(pool, item, present)
  local name, seen, since = item.volume, nil, core.now()
  while true do
    local have = present[name]
    if have and present[name .. ".ok"] then
      item.action, item.host = "reuse", have.path
      return have.path
    elseif not have then
      local path, e, stats = await_upload(pool, item.path, name)
      if path then
        connection.call(pool, "create_volume", MARKER:format(name))
        item.action, item.host, item.bytes, item.seconds = "upload", path, stats.bytes, stats.seconds
        return path
      end
      local err
      present, err = list(pool) -- a failed upload leaves no volume: one there now is another's
      if not present then return nil, err end
      if not present[name] then return nil, e end
    else
      if have.allocation ~= seen then
        seen, since = have.allocation, core.now()
      elseif core.now() - since >= upload.stall then
        connection.call(pool, "delete", name) -- an upload cut short
      end
      task.sleep(0.5)
      local err
      present, err = list(pool)
      if not present then return nil, err end
    end
  end
end

--- Uploads what the domain of `cfg` reads into pool `pool_name` of the host
-- behind `conn`, or (opts.dry) only says what it would upload.
-- Returns `files`, for domain.xml's opts.files (a local path to its path
-- on the host), and `plan`, the items of upload.items each with
-- action ("upload", "reuse", "overlay"; with opts.dry: "would upload",
-- "reuse", "would make"), host= (the path on the host, when known), and
-- for uploads bytes= and seconds=. Returns nil and a message naming the
-- field when a file cannot be uploaded.
-- @param conn a core libvirt connection (core.virt_connect)
-- @tparam string pool_name the host's storage pool (active)
-- @tparam table cfg a resolved VM configuration
-- @tparam[opt] table opts dry (plan only), paths (runtime.paths of the VM)
-- @return files, plan; or nil and why
function upload.prepare(conn, pool_name, cfg, opts)
  opts = opts or {}
  local pool, err = connection.call(conn, "pool", pool_name)
  if not pool then return nil, err end
  local present
  present, err = list(pool)
  if not present then pool:free(); return nil, err end
  local plan, map = upload.items(cfg, opts.paths), {}
  local function fail(item, why)
    pool:free()
    return nil, string.format("%s: %s (pool %s of %s)", item.field, why, pool_name, conn:uri())
  end
  local function send(item, from, name)
    local path, e, stats = await_upload(pool, from, name)
    if not path then return nil, e end
    item.action, item.host, item.bytes, item.seconds = "upload", path, stats.bytes, stats.seconds
    return path
  end
  for _, item in ipairs(plan) do
    if item.problem then return fail(item, item.problem) end
    if item.kind == "content" then
      local hex, e = hash(item.path)
      if not hex then return fail(item, e) end
      item.volume = "vmlua-sha256-" .. hex
    end
    local have = present[item.volume]
    if map[item.path] then
      item.action, item.host = "reuse", map[item.path]
    elseif item.kind == "overlay" then
      item.action = opts.dry and "would make" or "overlay"
      if not opts.dry then
        if have then connection.call(pool, "delete", item.volume) end -- a stale one, from a start that ended badly
        local base = map[item.base]
        local xml = string.format("<volume><name>%s</name><capacity unit='bytes'>%d</capacity>" ..
          "<target><format type='qcow2'/><permissions><mode>0600</mode></permissions></target>" ..
          "<backingStore><path>%s</path><format type='%s'/></backingStore></volume>",
          item.volume, item.size or 0, base, item.format)
        local path, e = connection.call(pool, "create_volume", xml)
        if not path then return fail(item, e) end
        item.host = path
      end
    elseif item.kind == "vm" then
      if have then
        item.action, item.host = "reuse", have.path
      elseif opts.dry then
        item.action = "would upload"
      else
        local path, e = send(item, item.from or item.path, item.volume)
        if not path then return fail(item, e) end
      end
    else -- content: whole only with its marker
      if have and present[item.volume .. ".ok"] then
        item.action, item.host = "reuse", have.path
      elseif opts.dry then
        item.action = "would upload"
      else
        local path, e = whole(pool, item, present)
        if not path then return fail(item, e) end
      end
    end
    if item.host then map[item.path] = item.host end
  end
  pool:free()
  local function files(path)
    local host = map[path]
    if not host and not opts.dry then error("vmlua.libvirt.upload: " .. tostring(path) .. " was not uploaded", 2) end
    return host or path
  end
  return files, plan
end

--- Deletes what upload.prepare made for one start only (ephemeral disks'
-- overlays); for after the domain has ended. True, or nil and why.
-- @param conn a core libvirt connection
-- @tparam string pool_name the pool
-- @tparam table plan what upload.prepare returned
function upload.release(conn, pool_name, plan)
  local pool, err = connection.call(conn, "pool", pool_name)
  if not pool then return nil, err end
  local ok, why = true, nil
  for _, item in ipairs(plan) do
    if item.kind == "overlay" and item.host then
      local done, e = connection.call(pool, "delete", item.volume)
      if not done then ok, why = nil, e end
    end
  end
  pool:free()
  return ok, why
end

local function size_text(n)
  if not n then return "?" end
  if n >= 1 << 30 then return string.format("%.1f GiB", n / (1 << 30)) end
  return string.format("%.1f MiB", n / (1 << 20))
end

--- Lines for `vmlua plan`: what each file does on the host.
-- @tparam table plan what upload.prepare returned (with opts.dry)
-- @treturn table lines, like "boot.kernel: would upload vmlinuz (8.1 MiB) as vmlua-sha256-..."
function upload.describe(plan)
  local lines = {}
  for _, item in ipairs(plan) do
    local st = core.stat(item.from or item.path)
    local what = item.kind == "overlay" and ("an overlay over " .. item.base)
      or string.format("%s (%s)", item.path:match("[^/]*$"), size_text(st and st.size))
    lines[#lines + 1] = string.format("%s: %s %s as %s", item.field, item.action or "?", what, item.volume or "?")
  end
  return lines
end

return upload
