--- The libvirt domain XML for a resolved VM configuration (config.vm): the
-- same machine that qemu.command's argv starts, in libvirt's words.
--
-- What libvirt 9.0 cannot say is said to QEMU through the qemu namespace
-- (<qemu:commandline>): NAT networks, because libvirt drops <portForward>
-- on user interfaces without a word, LANs (QEMU's vde netdev on vmlua's
-- switch, lan.lua) and the definition's own qemu = {...}. Their NICs sit
-- on the root bus at fixed slots from domain.nic_slot up, above the slots
-- libvirt fills from 1 (its root ports) and below the ones q35 keeps (0x1b
-- audio, 0x1d USB, 0x1e bridge, 0x1f LPC and SATA).
-- QEMU makes such plain -device arguments before libvirt's own (JSON)
-- ones, so a PCI device in qemu = {...} needs its own bus and addr too,
-- or it takes slot 1 from libvirt's first root port and QEMU refuses.
-- What libvirt cannot run yet is refused with a message naming the field.
-- @module vmlua.libvirt.domain
local cloudinit = require "vmlua.cloudinit"
local disks = require "vmlua.disks"
local fields = require "vmlua.fields"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"

local domain = {}

domain.namespace = "http://libvirt.org/schemas/domain/qemu/1.0"
domain.nic_slot = 0x10 -- the first NAT NIC's slot on the root bus
domain.nic_slots = 11  -- 0x10 to 0x1a

local MiB = 1024 * 1024

-- Refusals travel as errors of this type up to domain.xml.
local Refusal = {}

local function refuse(where, field, text)
  local msg = where and where.short and fields.msg(where, field, text) or (field .. ": " .. text)
  error(setmetatable({ msg = msg }, Refusal), 0)
end

local unsupported = " not supported on the libvirt backend yet"

-- XML 1.0 carries UTF-8 without most control characters, and libvirt's
-- schema takes no line breaks in names and paths.
local function xml_text(where, field, s)
  s = tostring(s)
  if not utf8.len(s) then refuse(where, field, "is not UTF-8, which libvirt's XML cannot carry") end
  if s:find("[%z\1-\8\10-\31\127]") then
    refuse(where, field, "contains a control character, which libvirt's XML cannot carry")
  end
  return s
end

local entities = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ["'"] = "&apos;", ['"'] = "&quot;",
                   ["\t"] = "&#9;" }

-- Text or an attribute value, escaped: nothing in it is markup, and a tab
-- survives attribute normalization.
local function escape(s)
  return (s:gsub("[&<>'\"\t]", entities))
end

-- el(name, attrs, ...): an element; attrs (or nil) is a table of attributes,
-- written in name order; the rest are children, elements or strings (text).
local function el(name, attrs, ...)
  return { name = name, attrs = attrs or {}, ... }
end

local function render(node, out, indent)
  local attrs, names = {}, {}
  for k in pairs(node.attrs) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do attrs[#attrs + 1] = string.format(" %s='%s'", k, escape(tostring(node.attrs[k]))) end
  local open = indent .. "<" .. node.name .. table.concat(attrs)
  if #node == 0 then
    out[#out + 1] = open .. "/>"
  elseif #node == 1 and type(node[1]) ~= "table" then
    out[#out + 1] = string.format("%s>%s</%s>", open, escape(tostring(node[1])), node.name)
  else
    out[#out + 1] = open .. ">"
    for _, child in ipairs(node) do render(child, out, indent .. "  ") end
    out[#out + 1] = indent .. "</" .. node.name .. ">"
  end
end

-- The libvirt <cpu> for a QEMU -cpu model.
local function cpu(model)
  if model == "host" then return el("cpu", { mode = "host-passthrough" }) end
  if model == "max" then return el("cpu", { mode = "maximum" }) end
  return el("cpu", { mode = "custom", match = "exact" }, el("model", { fallback = "forbid" }, model))
end

-- The virtio disk name of the i-th disk: vda ... vdz, vdaa ...
local function disk_target(i)
  local name, n = "", i
  repeat
    n = n - 1
    name = string.char(97 + n % 26) .. name
    n = n // 26
  until n == 0
  return "vd" .. name
end

-- The URI of the VM's libvirt host when that is another machine, else nil.
local function elsewhere(cfg)
  local u = cfg.backend and cfg.backend.uri
  if u and not require("vmlua.libvirt.uri").is_local(u) then return u end
  return nil
end

-- A virtio-fs share. libvirt starts QEMU's virtiofsd for a read-write one
-- with the domain and ends it with the domain (so it serves a domain that
-- outlives its vmlua). libvirt 9.0 runs virtiofsd without a read-only mode,
-- so a read-only share's daemon is vmlua's own, as on the QEMU backend (in
-- a mount namespace where the directory is read-only), and libvirt's QEMU
-- connects to its socket. The directory is this machine's, so only a domain
-- on this host gets one.
local function share(cfg, s, i, paths)
  local w, field, host = s.where or cfg.where, string.format("shares[%d]", i), elsewhere(cfg)
  if host then
    refuse(w, field, "a share is a directory of this machine, and the VM runs on another host (" .. host
      .. "): virtio-fs shares there are" .. unsupported)
  end
  local fs = el("filesystem", { type = "mount", accessmode = "passthrough" }, el("driver", { type = "virtiofs" }))
  if s.readonly then
    fs[#fs + 1] = el("source", { socket = xml_text(w, field, runtime.share_socket(paths, i)) })
  else
    local virtiofsd = require "vmlua.qemu.virtiofsd"
    fs[#fs + 1] = el("binary", { path = xml_text(w, field, virtiofsd.binary() or virtiofsd.candidates[1]) })
    fs[#fs + 1] = el("source", { dir = xml_text(w, field .. ".host", s.host) })
  end
  fs[#fs + 1] = el("target", { dir = xml_text(w, field .. ".tag", s.tag) })
  return fs
end

local function build(cfg, opts)
  local where = cfg.where
  local a = qemu.arches[cfg.arch]
  if not a then
    refuse(where, "arch", string.format("%s is not supported (%s)", tostring(cfg.arch),
      table.concat(qemu.supported(), ", ")))
  end
  local accel = opts.accel or "tcg"
  local kind = ({ tcg = "qemu", kvm = "kvm", hvf = "hvf" })[accel]
  if not kind then refuse(nil, "accel", string.format('"%s" is not an accelerator libvirt runs', tostring(accel))) end
  local files = opts.files or function(p) return p end
  local paths = opts.paths or runtime.paths(cfg.name)
  local function file(w, field, p) return xml_text(w, field, files(p)) end

  -- os: the machine, and what it boots
  local os_el = el("os", nil, el("type", { arch = cfg.arch, machine = a.machine }, "hvm"))
  local boot = cfg.boot
  local efi_boot = boot and boot.kind == "efi"
  if boot and boot.kind == "linux" then
    if boot.firmware then
      local firmware = file(boot.where, "boot.firmware", boot.firmware)
      os_el[#os_el + 1] = el("loader", { type = "rom", readonly = "yes" }, firmware) -- -bios
    end
    os_el[#os_el + 1] = el("kernel", nil, file(boot.where, "boot.kernel", boot.kernel))
    if boot.initrd then os_el[#os_el + 1] = el("initrd", nil, file(boot.where, "boot.initrd", boot.initrd)) end
    os_el[#os_el + 1] = el("cmdline", nil, xml_text(boot.where, "boot.cmdline", table.concat(boot.cmdline, " ")))
  elseif boot and boot.kind == "efi" then
    if not boot.firmware then refuse(boot.where, "boot.firmware", "no EFI firmware found for " .. cfg.arch) end
    os_el[#os_el + 1] = el("loader", { type = "pflash", readonly = "yes" },
      file(boot.where, "boot.firmware", boot.firmware))
    if boot.vars then
      local template = boot.template and file(boot.where, "boot.firmware", boot.template)
      os_el[#os_el + 1] = el("nvram", { template = template }, file(boot.where, "boot.vars", boot.vars))
    end
  end

  -- ACPI is how a graceful stop reaches the guest (the power button); on
  -- aarch64 only firmware provides it. libvirt refuses <acpi/> there unless
  -- the firmware is on flash, so a kernel behind -bios firmware gets ACPI
  -- by a later -machine acpi=on, which overrides libvirt's -no-acpi.
  local features, acpi_by_qemu = el("features"), false
  if cfg.arch ~= "aarch64" or (efi_boot and boot.firmware) then
    features[#features + 1] = el("acpi")
  elseif boot and boot.firmware then
    acpi_by_qemu = true
  end
  if a.machine == "virt" and (accel == "kvm" or cfg.cpus > 8) then -- GICv2 stops at 8 CPUs
    features[#features + 1] = el("gic", { version = accel == "kvm" and "host" or "3" })
  end

  local devices = el("devices")
  local function add(node) devices[#devices + 1] = node end
  if opts.emulator then add(el("emulator", nil, xml_text(nil, "emulator", opts.emulator))) end
  for i, d in ipairs(cfg.disks) do
    local field = string.format("disks[%d].path", i)
    local path, format = disks.drive(d, i, paths)
    local disk = el("disk", { type = "file", device = "disk" },
      el("driver", { name = "qemu", type = format }),
      el("source", { file = file(d.where or where, field, path) }),
      el("target", { dev = disk_target(i), bus = "virtio" }))
    if d.readonly then disk[#disk + 1] = el("readonly") end
    if efi_boot then disk[#disk + 1] = el("boot", { order = i }) end
    add(disk)
  end
  -- The cloud-init seed: read-only, after the VM's own disks (root stays /dev/vda).
  local seed = cloudinit.seed_arg(cfg)
  if seed then
    add(el("disk", { type = "file", device = "disk" },
      el("driver", { name = "qemu", type = "raw" }),
      el("source", { file = file(cfg.cloudinit.where or where, "cloudinit", seed) }),
      el("target", { dev = disk_target(#cfg.disks + 1), bus = "virtio" }),
      el("readonly")))
  end
  for i, s in ipairs(cfg.shares) do add(share(cfg, s, i, paths)) end
  add(el("controller", { type = "usb", model = "none" }))
  add(el("serial", { type = "pty" }, el("target", { port = 0 })))
  add(el("console", { type = "pty" }, el("target", { type = "serial", port = 0 })))
  add(el("memballoon", { model = "none" }))
  if cfg.agent then -- libvirt connects to it and passes commands through (virDomainQemuAgentCommand)
    add(el("channel", { type = "unix" }, el("target", { type = "virtio", name = require("vmlua.agent").PORT })))
  end

  -- NAT networks and the definition's own arguments, as QEMU arguments.
  local args, nics = {}, 0
  local function arg(field, v) args[#args + 1] = el("qemu:arg", { value = xml_text(where, field, v) }) end
  for i, n in ipairs(cfg.net) do
    local id, field = "net" .. (i - 1), string.format("net[%d]", i)
    if nics == domain.nic_slots then
      refuse(n.where or where, field, string.format("more than %d networks are%s", domain.nic_slots, unsupported))
    end
    local slot = string.format(",bus=pcie.0,addr=0x%x", domain.nic_slot + nics)
    if n.kind == "lan" then -- QEMU joins the LAN's switch on this machine (lan.lua)
      local host = elsewhere(cfg)
      if host then
        refuse(n.where or where, field, "LAN " .. n.name .. " is a switch on this machine, and the VM runs on "
          .. "another host (" .. host .. "): LANs there are" .. unsupported)
      end
      require("vmlua.lan").qemu_args(n, id, function(...)
        for _, v in ipairs { ... } do arg(field, v) end
      end, qemu.escape, slot)
    else
      local opt = { "user", "id=" .. id }
      for _, f in ipairs(n.forward) do
        opt[#opt + 1] = string.format("hostfwd=%s:%s:%d-:%d", f.protocol or "tcp", f.address, f.host, f.guest)
      end
      arg(field, "-netdev")
      arg(field, table.concat(opt, ","))
      arg(field, "-device")
      arg(field, "virtio-net-pci,netdev=" .. id .. slot)
    end
    nics = nics + 1
  end
  if acpi_by_qemu then
    arg("boot.firmware", "-machine")
    arg("boot.firmware", "acpi=on")
  end
  for i, v in ipairs(cfg.qemu or {}) do arg(string.format("qemu[%d]", i), v) end

  local root = el("domain", { type = kind, ["xmlns:qemu"] = domain.namespace },
    el("name", nil, xml_text(where, "name", cfg.name)),
    el("memory", { unit = "MiB" }, cfg.memory // MiB),
    el("vcpu", nil, cfg.cpus),
    os_el,
    features,
    cpu(a.cpu[accel] or "max"),
    el("on_poweroff", nil, "destroy"),
    el("on_reboot", nil, cfg.reboot and "restart" or "destroy"), -- a guest's reboot ends the VM
    el("on_crash", nil, "destroy"),
    devices)
  if #cfg.shares > 0 then -- virtiofsd maps the guest's memory
    table.insert(root, 4, el("memoryBacking", nil, el("source", { type = "memfd" }), el("access", { mode = "shared" })))
  end
  if #args > 0 then root[#root + 1] = el("qemu:commandline", nil, table.unpack(args)) end
  return root
end

--- The libvirt domain XML for a resolved VM configuration.
-- Mirrors qemu.command: the same machine, boot, disks, seed, console and
-- NAT forwards. Paths go through opts.files, the paths the libvirt host
-- sees them by.
-- @tparam table cfg what config.vm makes
-- @tparam[opt] table opts accel ("tcg" or "kvm": domain type qemu or kvm),
-- files (function(path) returning the host's path; identity by default),
-- emulator (a path), paths (runtime.paths of the VM, for ephemeral overlays)
-- @treturn string the XML, or nil and a message naming the field that
-- libvirt cannot express yet
function domain.xml(cfg, opts)
  local ok, root = pcall(build, cfg, opts or {})
  if not ok then
    if getmetatable(root) == Refusal then return nil, root.msg end
    error(root, 0)
  end
  local out = {}
  render(root, out, "")
  return table.concat(out, "\n") .. "\n"
end

return domain
