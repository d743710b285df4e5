-- Checks a normalized VM configuration against this host and the file
-- system before anything starts, like VZVirtualMachineConfiguration's
-- validate(). Every message follows the error rule:
--   FILE:LINE: FIELD: MESSAGE
-- with FILE:LINE the line that made the object holding the field.
local core = require "vmlua.core"
local fields = require "vmlua.fields"
local size = require "vmlua.size"
local host = require "vmlua.host"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"

-- What only some VMs use (disks, LANs, shares, UEFI, cloud-init) is loaded
-- when a VM does: use "disks" is vmlua.disks.
local function use(name)
  return require("vmlua." .. name)
end

local validate = {}

local MiB = 1024 * 1024
validate.min_memory = 64 * MiB

local function errno_text(err, path)
  err = tostring(err)
  local prefix = path .. ": "
  if err:sub(1, #prefix) == prefix then return err:sub(#prefix + 1) end
  return err
end

local ENOENT = 2

-- Checks that `path` is a file (or, with `block`, a block device) that
-- opens in `mode` ("r" or "rw"). Returns a message or nil.
local function file_problem(path, mode, opts)
  opts = opts or {}
  if not path then return "missing" end
  local st, err, code = core.stat(path)
  if not st then
    if code == ENOENT then return path .. " does not exist" end
    return string.format("%s cannot be read: %s", path, errno_text(err, path))
  end
  if st.type == "directory" then return path .. " is a directory, not a file" end
  if st.type ~= "file" and not (opts.block and st.type == "block") then
    return path .. " is not a regular file"
  end
  local ok, oerr = core.can_open(path, mode)
  if not ok then
    return string.format("%s cannot be opened for %s: %s", path,
      mode == "rw" and "reading and writing" or "reading", errno_text(oerr, path))
  end
  if opts.nonempty and st.type == "file" and st.size == 0 then return path .. " is empty" end
  return nil
end

local function is_qcow2(path)
  local f = io.open(path, "rb")
  if not f then return false end
  local magic = f:read(4)
  f:close()
  return magic == "QFI\251"
end

-- validate.vm(cfg) -> true | nil, message, messages
-- `message` is the first problem found (in the order of the fields), and
-- `messages` lists them all.
function validate.vm(cfg)
  local errs = {}
  local function err(where, field, fmt, ...)
    errs[#errs + 1] = fields.msg(where or cfg.where, field, select("#", ...) > 0 and fmt:format(...) or fmt)
  end
  local facts = host.facts()
  local w = cfg.where

  -- The name is a directory holding sockets, whose paths must fit in sun_path.
  if type(cfg.name) ~= "string" then
    err(w, "name", "expected a string, got %s", fields.describe(cfg.name))
  else
    local problem = runtime.name_problem(cfg.name) or runtime.socket_problem(cfg.name)
    if problem then err(w, "name", "%s", problem) end
  end

  local a = qemu.arches[cfg.arch]
  if not a then
    err(w, "arch", "%s is not supported (%s)", tostring(cfg.arch), table.concat(qemu.supported(), ", "))
  elseif not host.qemu_binary(cfg.arch) then
    err(w, "arch", "%s needs qemu-system-%s, which is not on PATH (Debian package %s)",
      cfg.arch, cfg.arch, a.package)
  end

  -- Only an accelerator asked for is checked here: choosing one may probe KVM.
  if a and cfg.accel ~= nil then
    local chosen, problem = qemu.accel(cfg)
    if not chosen then err(w, "accel", "%s", problem) end
  end

  if cfg.cpus < 1 then
    err(w, "cpus", "%d is too few; a VM needs at least 1 CPU", cfg.cpus)
  elseif a and cfg.cpus > a.max_cpus then
    err(w, "cpus", "%d is more than QEMU's %s machine allows (%d)", cfg.cpus, a.machine, a.max_cpus)
  elseif cfg.cpus > facts.cpus then
    err(w, "cpus", "%d is more than this host has (%d)", cfg.cpus, facts.cpus)
  end

  if cfg.memory < validate.min_memory then
    err(w, "memory", "%s is less than the minimum (%s)", size.format(cfg.memory), size.format(validate.min_memory))
  elseif cfg.memory > facts.memory then
    err(w, "memory", "%s is more than this host has (%s)", size.format(cfg.memory), size.format(facts.memory))
  end

  local boot = cfg.boot
  if not boot then
    err(w, "boot", "missing; give boot = vmlua.linux{ kernel = ... } or vmlua.efi{}")
  elseif boot.kind == "linux" then
    local p = file_problem(boot.kernel, "r", { nonempty = true })
    if p then err(boot.where, "boot.kernel", p) end
    if boot.initrd then
      p = file_problem(boot.initrd, "r", { nonempty = true })
      if p then err(boot.where, "boot.initrd", p) end
    end
    if boot.firmware then
      p = file_problem(boot.firmware, "r", { nonempty = true })
      if p then err(boot.where, "boot.firmware", p) end
    end
  elseif boot.kind == "efi" then
    use("efi").check(boot, cfg.arch, a and a.firmware_package,
      function(field, message) err(boot.where, field, "%s", message) end, file_problem)
  end

  local seen = {}
  for i, d in ipairs(cfg.disks) do
    local field = string.format("disks[%d].path", i)
    -- A missing disk with a size or a base is made as the VM starts, and an
    -- ephemeral disk's file is only read (see disks.lua).
    local made = (d.size or d.base) and not core.stat(d.path)
    local p = not made and file_problem(d.path, (d.readonly or d.ephemeral) and "r" or "rw", { block = true })
    if p then
      err(d.where, field, p)
    else
      local real = core.realpath(d.path) or d.path
      local first = seen[real]
      if first then
        err(d.where, field, "%s is the same file as disks[%d] (%s)", d.path, first,
          fields.location(cfg.disks[first].where))
      else
        seen[real] = i
        local qcow2 = not made and is_qcow2(d.path)
        if qcow2 and d.format == "raw" then
          err(d.where, string.format("disks[%d].format", i),
            '%s is a qcow2 image, but the format is raw; give format = "qcow2"', d.path)
        elseif not made and not qcow2 and d.format == "qcow2" then
          err(d.where, string.format("disks[%d].format", i), "%s is not a qcow2 image", d.path)
        end
        use("disks").check(d, i, function(f, message) err(d.where, f, "%s", message) end)
      end
    end
  end

  local ports, lans = {}, {}
  for i, n in ipairs(cfg.net) do
    if n.kind == "lan" then
      local first = lans[n.name]
      local problem = use("lan").socket_problem(n.name) or use("lan").problem()
      if first then
        err(n.where, string.format("net[%d]", i), "vm %s is already on LAN %s (net[%d], %s)", cfg.name, n.name,
          first, fields.location(cfg.net[first].where))
      elseif problem then
        err(n.where, string.format("net[%d]", i), "%s", problem)
      end
      lans[n.name] = lans[n.name] or i
    end
    for _, f in ipairs(n.forward or {}) do
      local udp = f.protocol == "udp"
      local key = udp and -f.host or f.host -- a TCP and a UDP forward may share a port number
      if not f.auto then -- host port 0: a free port, chosen at each start
        local field = string.format("net[%d].%s[%d]", i, udp and "udp" or "forward", f.host)
        local first = ports[key]
        if first then
          err(n.where, field, "host port %d%s is already forwarded by net[%d] (%s)", f.host, udp and "/udp" or "",
            first, fields.location(cfg.net[first].where))
        elseif udp then
          ports[key] = i -- QEMU reports a UDP port that is taken: no probe binds UDP here
        else
          ports[key] = i
          -- QEMU would only say "Could not set up host forwarding rule"
          -- A VM of this name that runs holds its own ports (starting it
          -- again fails on its name, which says more).
          local address = f.address or "127.0.0.1"
          local free, why = core.port_free(address, f.host)
          if not free and not require("vmlua.instance.store").running(cfg.name) then
            err(n.where, field, "host port %d on %s cannot be bound (%s), so vm %s cannot forward it; "
              .. "stop what uses it, or forward another port", f.host, address, why, cfg.name)
          end
        end
      end
    end
  end

  local tags, daemon_problem = {}, nil
  for i, sh in ipairs(cfg.shares or {}) do
    local function share_err(field, fmt, ...) err(sh.where, string.format("shares[%d].%s", i, field), fmt, ...) end
    local st = core.stat(sh.host)
    if not st then
      share_err("host", "%s does not exist", sh.host)
    elseif st.type ~= "directory" then
      share_err("host", "%s is not a directory; a share is a directory (share the one that holds it)", sh.host)
    end
    local first = tags[sh.tag]
    if first then
      share_err("tag", '"%s" is already the tag of shares[%d] (%s); the guest mounts a share by its tag, so '
        .. "each needs its own", sh.tag, first, fields.location(cfg.shares[first].where))
    else
      tags[sh.tag] = i
    end
    -- libvirtd runs a read-write share's daemon on libvirt, vmlua every other
    local problem = not daemon_problem and use("qemu.virtiofsd").problem(cfg.backend ~= nil and not sh.readonly)
    if problem then
      daemon_problem = problem
      share_err("host", "%s", problem)
    end
  end

  -- The seed is built at start (never by vmlua plan), with tools this host must have.
  local seed_field, seed_problem
  if cfg.cloudinit then seed_field, seed_problem = use("cloudinit").problem(cfg) end
  if seed_field then
    err(seed_field == "cloudinit" and cfg.cloudinit.where or w, seed_field, "%s", seed_problem)
  end

  local log = cfg.console and cfg.console.log
  if log then
    local cw = cfg.console.where
    local dir = log:match("^(.*)/[^/]*$")
    if dir == "" then dir = "/" end
    local st = core.stat(dir)
    if not st or st.type ~= "directory" then
      err(cw, "console.log", "the directory %s does not exist", dir)
    else
      st = core.stat(log)
      if st then
        local p = file_problem(log, "rw")
        if p then err(cw, "console.log", p) end
      end
    end
  end

  -- libvirt runs what its domain XML can say (libvirt/domain.lua)
  if cfg.backend and cfg.backend.kind == "libvirt" then
    local xml, problem = require("vmlua.libvirt.domain").xml(cfg)
    if not xml then errs[#errs + 1] = problem end
  end

  if #errs > 0 then return nil, errs[1], errs end
  return true
end

-- validate.all(cfgs) -> true | nil, message, messages: each VM, then what
-- VMs started together must not share: a name (their runtime directory)
-- and a forwarded host port.
function validate.all(cfgs)
  local errs = {}
  local names, ports = {}, {}
  for _, cfg in ipairs(cfgs) do
    local ok, _, list = validate.vm(cfg)
    if not ok then
      for _, m in ipairs(list) do errs[#errs + 1] = m end
    end
    local other = names[cfg.name]
    if other then
      errs[#errs + 1] = fields.msg(cfg.where, "name", string.format(
        "%q is already the name of the VM defined at %s", cfg.name, fields.location(other.where)))
    else
      names[cfg.name] = cfg
    end
    for i, n in ipairs(cfg.net) do
      for _, f in ipairs(n.forward or {}) do
        local udp = f.protocol == "udp"
        local key = udp and -f.host or f.host
        local prev = not f.auto and ports[key]
        if prev and prev.cfg ~= cfg then
          errs[#errs + 1] = fields.msg(n.where, string.format("net[%d].%s[%d]", i, udp and "udp" or "forward", f.host),
            string.format("host port %d%s is already forwarded by VM %s (%s)", f.host, udp and "/udp" or "",
              prev.cfg.name, fields.location(prev.where)))
        elseif not prev and not f.auto then
          ports[key] = { cfg = cfg, where = n.where }
        end
      end
    end
  end
  if #errs > 0 then return nil, errs[1], errs end
  return true
end

return validate
