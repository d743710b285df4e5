-- Disk policy: what vmlua.disk{ size=, base=, ephemeral= } do to the files,
-- checked before anything starts (disks.check, for validate.vm), shown by
-- `vmlua plan` (disks.intent), done as the VM starts (disks.prepare), and
-- which VM holds a disk another wants to write (disks.holder).
--
--   size      a missing image is made with this size; a smaller one is grown
--             to it (qemu-img resize); a larger one is an error: never shrunk
--   base      a missing image is made as a qcow2 overlay of base, with the
--             base's format recorded (-F): the guest's writes stay in it
--   ephemeral the guest writes to a throw-away qcow2 overlay over the file
--             (opened read-only), in the VM's runtime directory: it goes with
--             that directory however the VM ends (runtime.device_files)
local core = require "vmlua.core"
local fields = require "vmlua.fields"
local img = require "vmlua.qemu.img"
local runtime = require "vmlua.runtime"
local size = require "vmlua.size"

local disks = {}

local function dir_of(path)
  local dir = path:match("^(.*)/[^/]*$")
  return dir == "" and "/" or dir
end

-- "8 GiB", or "8 GiB (8589934592 bytes)" when `other` would read the same.
local function sizes(n, other)
  local text = size.format(n)
  if other and size.format(other) == text then text = string.format("%s (%d bytes)", text, n) end
  return text
end

-- What starting the VM will do to disk `d`: { exists=, create="blank"|"overlay"|nil,
-- size= (the size it will have, when known), grow_from= (bytes), base_format=,
-- ephemeral= }. Read-only here: nothing is made.
function disks.intent(d)
  local st = core.stat(d.path)
  local t = { exists = st ~= nil, ephemeral = d.ephemeral and not d.readonly }
  if d.base then t.base_format = img.format(d.base) end
  if not st then
    if d.base then
      t.create, t.size = "overlay", d.size or (t.base_format and img.virtual_size(d.base, t.base_format))
    elseif d.size then
      t.create, t.size = "blank", d.size
    end
    return t
  end
  local current = st.type == "file" and img.virtual_size(d.path, d.format) or nil
  t.size = current
  if d.size and current and d.size > current then t.grow_from, t.size = current, d.size end
  return t
end

-- One line for `vmlua plan`: what happens to the disk as the VM starts.
function disks.describe(d)
  local t, parts = disks.intent(d), {}
  if t.create == "blank" then
    parts[#parts + 1] = "created, " .. size.format(t.size)
  elseif t.create == "overlay" then
    parts[#parts + 1] = string.format("created as a copy-on-write overlay of %s (%s)%s", d.base,
      t.base_format or "?", t.size and (", " .. size.format(t.size)) or "")
  elseif t.grow_from then
    parts[#parts + 1] = string.format("grown from %s to %s", sizes(t.grow_from, t.size), sizes(t.size, t.grow_from))
  end
  if t.ephemeral then
    parts[#parts + 1] = "ephemeral: the guest writes to a throw-away overlay, the file is left as it is"
  end
  return #parts > 0 and table.concat(parts, "; ") or nil
end

-- Facts about disk `d` (the i-th) on the file system that make starting it
-- fail: calls problem(field, message) for each.
function disks.check(d, i, problem)
  local function field(name) return string.format("disks[%d].%s", i, name) end
  local st = core.stat(d.path)
  if not st then
    local dir = dir_of(d.path)
    local dst = core.stat(dir)
    if not dst or dst.type ~= "directory" then
      problem(field("path"), string.format("the directory %s does not exist, so %s cannot be made there", dir, d.path))
    end
  end
  local base_size
  if d.base then
    local bst = core.stat(d.base)
    if not bst then
      problem(field("base"), d.base .. " does not exist")
    elseif bst.type ~= "file" then
      problem(field("base"), d.base .. " is not a regular file")
    elseif not core.can_open(d.base, "r") then
      problem(field("base"), d.base .. " cannot be opened for reading")
    else
      base_size = img.virtual_size(d.base, img.format(d.base))
    end
    if st and st.type == "file" and img.format(d.path) == "qcow2" then
      local backing = img.backing(d.path)
      local real_backing = backing and (core.realpath(backing) or backing)
      if real_backing ~= (core.realpath(d.base) or d.base) then
        problem(field("base"), string.format("%s exists and is not an overlay of %s (%s); remove it to make a new "
          .. "overlay, or give its own base", d.path, d.base,
          backing and ("its backing file is " .. backing) or "it has no backing file"))
      end
    end
  end
  if d.size then
    local current, what
    if st and st.type == "file" then
      current, what = img.virtual_size(d.path, d.format), d.path
    elseif not st and base_size then
      current, what = base_size, "its base " .. d.base
    end
    if current and d.size < current then
      problem(field("size"), string.format("%s is smaller than %s (%s); vmlua grows a disk but never shrinks it: "
        .. "give at least %s", sizes(d.size, current), what, sizes(current, d.size), sizes(current, d.size)))
    end
  end
end

-- The files a VM's disks open, and whether for writing: a read-only or
-- ephemeral disk reads its file, a disk with a base reads the base.
local function uses(cfg_disks)
  local list = {}
  for _, d in ipairs(cfg_disks or {}) do
    if type(d) == "table" and type(d.path) == "string" then
      local writes = not d.readonly and not d.ephemeral
      list[#list + 1] = { path = d.path, real = core.realpath(d.path) or d.path, writes = writes, disk = d }
      if type(d.base) == "string" then
        list[#list + 1] = { path = d.base, real = core.realpath(d.base) or d.base, writes = false, disk = d }
      end
    end
  end
  return list
end

-- Names of the VMs with a runtime directory, but `except`.
local function other_vms(except)
  local ok, lfs = pcall(require, "lfs")
  local root = runtime.root()
  if not ok or not core.stat(root) then return {} end
  local names = {}
  for name in lfs.dir(root) do
    if name ~= except and not runtime.name_problem(name) then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

-- The running VM (not `self_name`) that opens the file `real` (a real path)
-- so that one of them would write it while the other has it open:
-- { name=, pid=|nil, writes= } or nil. `writes`: whether we would write it.
function disks.holder(real, writes, self_name)
  for _, name in ipairs(other_vms(self_name)) do
    local f = io.open(runtime.paths(name).config)
    local cfg = f and core.json_decode(f:read("a"))
    if f then f:close() end
    for _, use in ipairs(type(cfg) == "table" and uses(cfg.disks) or {}) do
      if use.real == real and (writes or use.writes) then
        local status = require("vmlua.instance.store").running(name) -- liveness is its lock
        if status then
          local pidf = io.open(runtime.paths(name).pid)
          local pid = status.pid or (pidf and tonumber(pidf:read("l")))
          if pidf then pidf:close() end
          return { name = name, pid = math.tointeger(pid), writes = use.writes }
        end
        break
      end
    end
  end
  return nil
end

local function in_use(d, i, use, holder)
  local whose = "another process"
  if holder then
    whose = string.format("VM %s%s", holder.name, holder.pid and (" (QEMU pid " .. holder.pid .. ")") or "")
  end
  local how = use.writes and "would write it" or "reads it"
  -- an ephemeral disk only reads its file, which is enough when the holder only reads it too
  local also = use.writes and holder and not holder.writes and ", or give this disk ephemeral = true" or ""
  return fields.msg(d.where, string.format("disks[%d].%s", i, use.path == d.path and "path" or "base"),
    string.format("%s is in use by %s, which holds QEMU's lock on it: VMs may share a disk only if none "
      .. "writes it, and this one %s; stop %s first%s", use.path, whose, how,
      holder and holder.name or "it", also))
end

-- Makes what the disks need before QEMU starts (see the top of the file):
-- true, or nil and a message naming the disk. Safe to run again (a KVM
-- fallback launches twice): a made image stays, an overlay is made anew.
function disks.prepare(cfg, paths)
  for i, d in ipairs(cfg.disks) do
    for _, use in ipairs(uses { d }) do
      local holder = disks.holder(use.real, use.writes, cfg.name)
      if holder then return nil, in_use(d, i, use, holder) end
    end
  end
  for i, d in ipairs(cfg.disks) do
    local function fail(field, what, err)
      return nil, fields.msg(d.where, string.format("disks[%d].%s", i, field), what .. ": " .. tostring(err))
    end
    local t = disks.intent(d)
    local ok, err
    if t.create == "overlay" then
      ok, err = img.create { path = d.path, format = "qcow2", size = d.size, backing = d.base,
                             backing_format = t.base_format or "raw" }
      if not ok then return fail("base", "cannot make " .. d.path .. " as an overlay of " .. d.base, err) end
    elseif t.create == "blank" then
      ok, err = img.create { path = d.path, format = d.format, size = d.size }
      if not ok then return fail("size", "cannot make " .. d.path, err) end
    elseif t.grow_from then
      ok, err = img.resize(d.path, d.format, d.size)
      if not ok then return fail("size", "cannot grow " .. d.path .. " to " .. size.format(d.size), err) end
    end
    if t.ephemeral then
      local overlay = runtime.overlay(paths, i)
      os.remove(overlay)
      ok, err = img.create { path = overlay, format = "qcow2", backing = d.path, backing_format = d.format }
      if not ok then return fail("ephemeral", "cannot make the overlay " .. overlay, err) end
    end
  end
  return true
end

-- The file QEMU opens for disk i, and its format: the throw-away overlay of
-- an ephemeral disk, or the disk's own file.
function disks.drive(d, i, paths)
  if d.ephemeral and not d.readonly then return runtime.overlay(paths, i), "qcow2" end
  return d.path, d.format
end

-- QEMU's words when it could not lock an image ("Failed to get "write"
-- lock ... Is another process using the image [PATH]?"), as a message that
-- names the disk and the VM holding it; nil for other words.
function disks.lock_problem(cfg, stderr)
  local image = stderr:match('Failed to get [%w ]*"%w+" lock.-Is another process using the image %[(.-)%]%?')
  if not image then return nil end
  local real = core.realpath(image) or image
  for i, d in ipairs(cfg.disks) do
    for _, use in ipairs(uses { d }) do
      if use.real == real then return in_use(d, i, use, disks.holder(real, use.writes, cfg.name)) end
    end
  end
  return nil
end

return disks
