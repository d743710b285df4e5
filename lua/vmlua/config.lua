-- The configuration model: the constructors users call (vmlua.linux,
-- vmlua.efi, vmlua.disk, vmlua.nat, vmlua.share, vmlua.console,
-- vmlua.cloudinit), vmlua.vm's spec, and
-- the normalized VM configuration the backend and life cycle read:
--
--   { name=, arch=, accel="kvm"|"hvf"|"tcg"|nil, accel_by="accel"|"VMLUA_ACCEL"|nil,
--     cpus=, memory= (bytes),
--     boot = { kind="linux", kernel=, initrd=|nil, cmdline={...}, where= }
--          | { kind="efi", firmware=|nil, vars=, template=|nil, own=, where= } | nil,
--     disks = { { kind="disk", path=, format="raw"|"qcow2", readonly=, size=|nil, base=|nil,
--                 ephemeral=, where= }, ... },
--     net = { { kind="nat", forward={ {host=, guest=, address=, protocol="tcp"|"udp"}, ... }, where= }
--           | { kind="lan", name=, mac=, where= }, ... },
--     shares = { { kind="share", host=, tag=, readonly=, where= }, ... },
--     console = { kind="console", log=|nil, stdio=, where= },
--     reboot = false, qemu = { extra QEMU arguments, unchecked },
--     agent = false (true: a virtio-serial port for the QEMU guest agent, see agent.lua),
--     cloudinit = { kind="cloudinit", user_data=, meta_data=, network_config=,
--                   seed= (its ISO, set at start), where= } | nil,
--     backend = { kind="libvirt", uri=, pool=|nil, by="backend"|"VMLUA_BACKEND"|"--connect", where= }
--             | { kind="libvirt", hosts={ {name=, uri=, pool=}, ... }, named=|nil, by="backend", where=,
--                 uri=, pool=, host= (set at each start by the placement, libvirt/hosts.lua) }
--             | nil (QEMU, run by vmlua),
--     where = { source=, short=, line= } }
--
-- Defaults: name = the defining file's basename, arch = the host's, cpus = 1,
-- memory = 512 MiB, no disks, no network (a VM is offline unless it is given
-- vmlua.nat{}), console logged in the runtime directory. QEMU gets memory in
-- whole MiB, rounded down.
--
-- Paths are absolute. Relative paths resolve against the directory of the
-- file that wrote them. Constructors check types and fields and raise
-- "FILE:LINE: FIELD: MESSAGE"; facts about the host and the file system are
-- checked later by validate.vm.
local core = require "vmlua.core"
local fields = require "vmlua.fields"
local size = require "vmlua.size"
local host = require "vmlua.host"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"

local config = {}

local MiB = 1024 * 1024
config.defaults = { cpus = 1, memory = 512 * MiB }

-- Objects made by the constructors (plain tables, remembered here so that
-- a hand-made look-alike is refused with a clear message).
local made = setmetatable({}, { __mode = "k" })

local function object(kind, where, t)
  t.kind, t.where = kind, where
  made[t] = true
  return t
end

function config.is(v, kind)
  return type(v) == "table" and made[v] == true and (kind == nil or v.kind == kind)
end

local fail = fields.fail

local function describe(v)
  if config.is(v) then return "a " .. v.kind end
  return fields.describe(v)
end

local function spec_table(spec, where, what, example)
  if type(spec) ~= "table" then
    fail(where, what, "expected a table like %s, got %s", example, describe(spec))
  end
end

local function path_field(where, field, v, required)
  if v == nil then
    if required then fail(where, field, "missing; give the path of the file") end
    return nil
  end
  if type(v) ~= "string" then fail(where, field, "expected a path (a string), got %s", describe(v)) end
  if v == "" then fail(where, field, "the path is empty") end
  if v:find("\0", 1, true) then fail(where, field, "the path contains a NUL byte") end
  return fields.resolve(where, v)
end

local function bool_field(where, field, v, default)
  if v == nil then return default end
  if type(v) ~= "boolean" then fail(where, field, "expected true or false, got %s", describe(v)) end
  return v
end

local function port(where, field, v, what)
  if math.type(v) == "float" and math.tointeger(v) then v = math.tointeger(v) end
  if math.type(v) ~= "integer" then
    fail(where, field, "%s port must be a whole number in 1-65535, got %s", what, describe(v))
  end
  if v < 1 or v > 65535 then fail(where, field, "%s port %d is outside 1-65535", what, v) end
  return v
end

-- vmlua.linux { kernel = PATH, initrd = PATH, cmdline = { "root=/dev/vda", ... } | "root=/dev/vda rw",
--               firmware = PATH | false }
-- firmware: loaded with -bios before the kernel. By default an aarch64 guest
-- gets the distribution's UEFI firmware when it is installed: only through
-- it does the guest see ACPI, and so the power button that a graceful stop
-- presses. false boots the kernel directly (faster, but stops are forced).
config.linux = fields.entry(function(where, spec)
  spec_table(spec, where, "linux", '{ kernel = "vmlinuz" }')
  fields.check(spec, { "kernel", "initrd", "cmdline", "firmware" }, where, "vmlua.linux")
  local firmware = spec.firmware
  if firmware ~= false then firmware = path_field(where, "firmware", firmware) end
  local cmdline = {}
  local c = spec.cmdline
  if type(c) == "string" then
    for word in c:gmatch("%S+") do cmdline[#cmdline + 1] = word end
  elseif type(c) == "table" then
    if not fields.is_list(c) then
      fail(where, "cmdline", "expected a list of strings, got a table with named keys")
    end
    for i, word in ipairs(c) do
      if type(word) ~= "string" then
        fail(where, string.format("cmdline[%d]", i), "expected a string, got %s", describe(word))
      end
      cmdline[i] = word
    end
  elseif c ~= nil then
    fail(where, "cmdline", "expected a list of strings or one string, got %s", describe(c))
  end
  for i, word in ipairs(cmdline) do
    if word:find("\0", 1, true) then fail(where, string.format("cmdline[%d]", i), "contains a NUL byte") end
  end
  return object("linux", where, {
    kernel = path_field(where, "kernel", spec.kernel, true),
    initrd = path_field(where, "initrd", spec.initrd),
    cmdline = cmdline,
    firmware = firmware,
  })
end)

-- vmlua.efi { firmware = PATH, vars = PATH }: both optional; the firmware
-- defaults to the distribution's (Debian: ovmf, qemu-efi-aarch64) for the
-- VM's architecture, and the variable store to the VM's own (efi.lua).
config.efi = fields.entry(function(where, spec)
  if spec == nil then spec = {} end
  spec_table(spec, where, "efi", "{ firmware = PATH, vars = PATH }")
  fields.check(spec, { "firmware", "vars" }, where, "vmlua.efi")
  return object("efi", where, {
    firmware = path_field(where, "firmware", spec.firmware),
    vars = path_field(where, "vars", spec.vars),
  })
end)

local formats = { raw = true, qcow2 = true }

-- vmlua.disk { path = PATH, format = "raw"|"qcow2", readonly = false,
--              size = "8G", base = PATH, ephemeral = false }
-- The format defaults to qcow2 for a ".qcow2" file or one with a base, and
-- raw otherwise. What size, base and ephemeral do is disks.lua's.
config.disk = fields.entry(function(where, spec)
  spec_table(spec, where, "disk", '{ path = "root.img" }')
  fields.check(spec, { "path", "format", "readonly", "size", "base", "ephemeral" }, where, "vmlua.disk")
  local path = path_field(where, "path", spec.path, true)
  local base = path_field(where, "base", spec.base)
  local format = spec.format
  if format == nil then
    format = (base or path:lower():match("%.qcow2$")) and "qcow2" or "raw"
  elseif not formats[format] then
    fail(where, "format", "%s is not a disk format; expected \"raw\" or \"qcow2\"",
      type(format) == "string" and string.format("%q", format) or describe(format))
  elseif base and format ~= "qcow2" then
    fail(where, "format", 'a disk with a base is a qcow2 overlay, not %s; drop format or give "qcow2"', format)
  end
  local readonly = bool_field(where, "readonly", spec.readonly, false)
  local ephemeral = bool_field(where, "ephemeral", spec.ephemeral, false)
  local bytes
  if spec.size ~= nil then
    local err
    bytes, err = size.check(spec.size)
    if not bytes then fail(where, "size", err) end
    if bytes == 0 or bytes % 512 ~= 0 then
      fail(where, "size", "%s is not a whole number of 512-byte sectors (at least one)", describe(spec.size))
    end
  end
  if base == path then fail(where, "base", "%s is the disk's own path; a base is another image", base) end
  if readonly and bytes then
    fail(where, "size", "a read-only disk is never created or grown; drop size or readonly")
  elseif readonly and base then
    fail(where, "base", "a disk made from a base is an overlay for the guest to write; drop readonly, "
      .. "or give the base itself as a read-only disk")
  elseif readonly and ephemeral then
    fail(where, "ephemeral", "a read-only disk is never written, so there is nothing to throw away; "
      .. "drop ephemeral or readonly")
  end
  return object("disk", where, {
    path = path,
    format = format,
    readonly = readonly,
    size = bytes,
    base = base,
    ephemeral = ephemeral,
  })
end)

local function ipv4(s)
  if type(s) ~= "string" then return false end
  local parts = { s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
  if #parts ~= 4 then return false end
  for _, p in ipairs(parts) do
    if #p > 3 or tonumber(p) > 255 then return false end
  end
  return true
end

-- vmlua.nat { forward = { [HOSTPORT] = GUESTPORT, ... }, udp = { [HOSTPORT] = GUESTPORT },
--             address = "127.0.0.1" }
-- User-mode NAT. `forward` is TCP and `udp` is UDP; both bind `address` on
-- the host: the default 127.0.0.1 keeps them local; "0.0.0.0" binds on all
-- interfaces. TCP host port 0 is a free port, chosen at each start (auto = true).
config.nat = fields.entry(function(where, spec)
  if spec == nil then spec = {} end
  spec_table(spec, where, "nat", "{ forward = { [2222] = 22 } }")
  fields.check(spec, { "forward", "udp", "address" }, where, "vmlua.nat")
  local address = spec.address
  if address == nil then
    address = "127.0.0.1"
  elseif not ipv4(address) then
    fail(where, "address", 'expected an IPv4 address such as "127.0.0.1" or "0.0.0.0" (all interfaces), got %s',
      describe(address))
  end
  local forward = {}
  for _, kind in ipairs { { "forward", "tcp", 2222, 22 }, { "udp", "udp", 5353, 53 } } do
    local name, protocol, example_host, example_guest = table.unpack(kind)
    local f = spec[name]
    if f ~= nil and type(f) ~= "table" then
      fail(where, name, "expected a table { [HOSTPORT] = GUESTPORT }, got %s", describe(f))
    end
    if f and f[1] ~= nil then
      fail(where, name .. "[1]", "this forwards host port 1; write { [HOSTPORT] = GUESTPORT }, e.g. { [%d] = %d }",
        example_host, example_guest)
    end
    for hp, gp in pairs(f or {}) do
      local key = type(hp) == "string" and string.format("%q", hp) or tostring(hp)
      local field = name .. "[" .. key .. "]"
      if hp == 0 and protocol == "udp" then
        fail(where, field, "a free host port is chosen for TCP forwards only; give the UDP host port")
      end
      local h = hp == 0 and 0 or port(where, field, hp, "host")
      forward[#forward + 1] = { host = h, guest = port(where, field, gp, "guest"), address = address,
                                auto = h == 0 or nil, protocol = protocol }
    end
  end
  table.sort(forward, function(a, b)
    if a.protocol ~= b.protocol then return a.protocol < b.protocol end
    return a.host < b.host
  end)
  return object("nat", where, { forward = forward })
end)

-- vmlua.share { host = DIR, tag = "src", readonly = false }
-- A host directory the guest mounts by its tag (mount -t virtiofs TAG DIR);
-- qemu/virtiofsd.lua serves it. A tag is what fstab and mount take as the
-- device: 1 to 36 letters, digits, '.', '_' or '-'.
config.share = fields.entry(function(where, spec)
  spec_table(spec, where, "share", '{ host = ".", tag = "src" }')
  fields.check(spec, { "host", "tag", "readonly" }, where, "vmlua.share")
  if spec.host == nil then fail(where, "host", "missing; give the host directory to share") end
  local tag = spec.tag
  if tag == nil then
    fail(where, "tag", 'missing; give the name the guest mounts it by, e.g. tag = "src"')
  elseif type(tag) ~= "string" then
    fail(where, "tag", "expected a string, got %s", describe(tag))
  elseif not tag:match("^[%w._-]+$") or #tag > 36 then
    fail(where, "tag", "%q is not a tag: use 1 to 36 letters, digits, '.', '_' or '-'", tag)
  end
  return object("share", where, {
    host = path_field(where, "host", spec.host),
    tag = tag,
    readonly = bool_field(where, "readonly", spec.readonly, false),
  })
end)

-- vmlua.cloudinit { user_data = "#cloud-config ..." | {...}, meta_data = {...},
--                  network_config = "..." | {...} }: a NoCloud seed (cloudinit.lua).
config.cloudinit = fields.entry(function(where, spec)
  return object("cloudinit", where, require("vmlua.cloudinit").spec(where, spec))
end)

-- vmlua.lan { name = "lab" }: a private Ethernet network between the VMs
-- on it, of this script and of any other vmlua process (lan.lua).
config.lan = fields.entry(function(where, spec)
  spec_table(spec, where, "lan", '{ name = "lab" }')
  fields.check(spec, { "name" }, where, "vmlua.lan")
  local name = spec.name
  if name == nil then
    fail(where, "name", 'missing; give the LAN a name, e.g. name = "lab" (VMs on LANs of one name share it)')
  elseif type(name) ~= "string" then
    fail(where, "name", "expected a string, got %s", describe(name))
  end
  local problem = require("vmlua.lan").name_problem(name)
  if problem then fail(where, "name", "%s", problem) end
  return object("lan", where, { name = name })
end)

-- vmlua.libvirt { uri = "qemu+ssh://user@host/system", pool = "default" }:
-- the backend that runs the VM (backend/libvirt.lua).
config.libvirt = fields.entry(function(where, spec)
  spec = spec == nil and {} or spec
  spec_table(spec, where, "libvirt", '{ uri = "qemu:///system" }')
  fields.check(spec, { "uri", "pool" }, where, "vmlua.libvirt")
  return object("libvirt", where, require("vmlua.libvirt.uri").spec(where, spec))
end)

-- vmlua.hosts { rack1 = vmlua.libvirt{...}, rack2 = vmlua.libvirt{...} }: as a VM's
-- backend, each new VM goes to the host with the most free memory, or to
-- the one hosts:on("rack1") names (libvirt/hosts.lua).
config.hosts = fields.entry(function(where, spec)
  return object("hosts", where, require("vmlua.libvirt.hosts").spec(where, spec))
end)

-- qemu = { "-device", "..." }: arguments appended to QEMU's, as given.
local function qemu_field(where, v)
  if v == nil then return {} end
  if type(v) ~= "table" or config.is(v) or not fields.is_list(v) then
    fail(where, "qemu", 'expected a list of strings such as { "-device", "virtio-rng-pci" }, got %s',
      type(v) == "table" and not config.is(v) and "a table with named keys" or describe(v))
  end
  local list = {}
  for i, arg in ipairs(v) do
    if type(arg) ~= "string" then
      fail(where, string.format("qemu[%d]", i), "expected a string, got %s", describe(arg))
    elseif arg:find("\0", 1, true) then
      fail(where, string.format("qemu[%d]", i), "contains a NUL byte")
    end
    list[i] = arg
  end
  return list
end

-- vmlua.console { log = PATH } | vmlua.console "stdio" | vmlua.console { stdio = true }
-- Without a log, the console is logged in the VM's runtime directory.
config.console = fields.entry(function(where, spec)
  if spec == nil then spec = {} end
  if spec == "stdio" then spec = { stdio = true } end
  if type(spec) == "string" then
    fail(where, "console", '%q is not a console; use "stdio" or { log = "FILE" }', spec)
  end
  spec_table(spec, where, "console", '{ log = "console.log" } or "stdio"')
  fields.check(spec, { "log", "stdio" }, where, "vmlua.console")
  local stdio = bool_field(where, "stdio", spec.stdio, false)
  local log = path_field(where, "log", spec.log)
  if log and stdio then
    fail(where, "stdio", "a console goes to a log file or to the terminal, not both; drop log or stdio")
  end
  return object("console", where, { log = log, stdio = stdio })
end)

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

-- The final kernel command line: the user's, plus the serial console and
-- panic=-1 (with -no-reboot a panic then ends the VM) unless given.
local function final_cmdline(cmdline, arch)
  local out, has = {}, {}
  for i, word in ipairs(cmdline) do
    out[i] = word
    local key = word:match("^([^=]+)=")
    if key then has[key] = true end
  end
  local a = qemu.arches[arch]
  if a and not has.console then out[#out + 1] = "console=" .. a.console end
  if not has.panic then out[#out + 1] = "panic=-1" end
  return out
end

-- The first of a list of candidate files that exists.
local function first_file(candidates)
  for _, file in ipairs(candidates or {}) do
    local st = core.stat(file)
    if st and st.type == "file" then return file end
  end
  return nil
end

local function boot_field(where, v, arch, name)
  if v == nil then return nil end
  if not (config.is(v, "linux") or config.is(v, "efi")) then
    fail(where, "boot", "expected vmlua.linux{...} or vmlua.efi{...}, got %s", describe(v))
  end
  local b = copy(v)
  local a = qemu.arches[arch]
  if b.kind == "linux" then
    b.cmdline = final_cmdline(v.cmdline, arch)
    if b.firmware == nil then b.firmware = first_file(a and a.linux_firmware) end
    if b.firmware == false then b.firmware = nil end
  elseif b.kind == "efi" then
    require("vmlua.efi").resolve(b, name, a and a.firmware)
  end
  return b
end

-- A list of devices of `kind` (a kind, or a set of kinds) for `field`.
local function devices(where, field, v, kind, ctor)
  local kinds = type(kind) == "table" and kind or { [kind] = true }
  if v == nil then return {} end
  if type(v) ~= "table" then
    fail(where, field, "expected a list of %s{...}, got %s", ctor, describe(v))
  end
  if config.is(v) then v = { v } end -- one device for a list of one
  if not fields.is_list(v) then
    fail(where, field, "expected a list of %s{...}, got a table with named keys", ctor)
  end
  local list = {}
  for i, d in ipairs(v) do
    if not (config.is(d) and kinds[d.kind]) then
      fail(where, string.format("%s[%d]", field, i), "expected %s{...}, got %s", ctor, describe(d))
    end
    list[i] = copy(d)
  end
  return list
end

local function cloudinit_field(where, v)
  if v == nil then return nil end
  if not config.is(v, "cloudinit") then
    fail(where, "cloudinit", 'expected vmlua.cloudinit{ user_data = ... }, got %s', describe(v))
  end
  return copy(v)
end

-- Each LAN device gets its VM's MAC address on that LAN (lan.mac).
local function lan_macs(net, vm_name)
  for _, n in ipairs(net) do
    if n.kind == "lan" then n.mac = require("vmlua.lan").mac(vm_name, n.name) end
  end
  return net
end

local function default_name(where)
  local base = where.source and where.source:match("([^/]*)$") or ""
  base = base:gsub("%.lua$", ""):gsub("[^%w._-]+", "-"):gsub("^[^%w]+", ""):gsub("-+$", "")
  if base == "" then return "vm" end
  return base
end

local VM_FIELDS = { "name", "arch", "accel", "cpus", "memory", "boot", "disks", "net", "console", "ssh",
                    "shares", "reboot", "qemu", "cloudinit", "agent", "backend" }

config.accels = { "kvm", "hvf", "tcg" }

local function accel_problem(v)
  local names = '"' .. table.concat(config.accels, '", "') .. '"'
  if type(v) ~= "string" then return string.format("expected one of %s, got %s", names, describe(v)) end
  for _, name in ipairs(config.accels) do
    if v == name then return nil end
  end
  local near = fields.suggest(v, config.accels)
  if near then return string.format('"%s" is not an accelerator; did you mean "%s"? (one of %s)', v, near, names) end
  return string.format('"%s" is not an accelerator; use one of %s', v, names)
end

-- accel: what the definition asks for; VMLUA_ACCEL overrides it for a run.
-- nil: vmlua chooses (see vmlua.accel). Returns the name and who asked.
local function accel_field(where, v)
  if v ~= nil then
    local problem = accel_problem(v)
    if problem then fail(where, "accel", "%s", problem) end
  end
  local env = os.getenv("VMLUA_ACCEL")
  if env and env ~= "" then
    local problem = accel_problem(env)
    if problem then fail(where, "accel", "VMLUA_ACCEL: %s", problem) end
    return env, "VMLUA_ACCEL"
  end
  return v, v and "accel" or nil
end

-- backend: vmlua.libvirt{} or nil (QEMU). For a run, --connect URI (the
-- CLI sets config.connect) or VMLUA_BACKEND ("qemu", "libvirt", or a
-- libvirt URI) overrides it, as VMLUA_ACCEL does accel.
config.connect = nil
local function backend_field(where, v)
  if v ~= nil and not config.is(v, "libvirt") and not config.is(v, "hosts") then
    fail(where, "backend", 'expected vmlua.libvirt{ uri = ... } or vmlua.hosts{ ... }, or nil for QEMU, got %s',
      describe(v))
  end
  local env = os.getenv("VMLUA_BACKEND")
  if config.is(v, "hosts") then -- placed as it starts; --connect URI or VMLUA_BACKEND=URI|qemu override it
    if not config.connect and (env == nil or env == "" or env == "libvirt") then
      return object("libvirt", where, { hosts = v.hosts, named = v.named, by = "backend" })
    end
    v = nil
  end
  if v == nil and not config.connect and (env == nil or env == "") then return nil end
  local chosen = require("vmlua.libvirt.uri").choose(where, v, config.connect, env)
  return chosen and object("libvirt", where, chosen)
end

local function where_of(level)
  if type(level) == "table" then return level end
  local where = fields.where((level or 2) + 1) -- not a tail call: it would hide this frame
  return where
end

-- config.vm(spec, level) -> the normalized configuration. `level` is the
-- user's stack level counted from config.vm, as in error(msg, level), or
-- the user's `where` itself (see fields.entry).
function config.vm(spec, level)
  local where = where_of(level)
  if config.spec_hook then spec = config.spec_hook(spec, where) end -- a recipe extension's vm = {...}
  spec_table(spec, where, "vm", '{ memory = "1G", boot = vmlua.linux{...} }')
  fields.check(spec, VM_FIELDS, where, "vmlua.vm")

  local name = spec.name
  if name == nil then
    name = default_name(where)
  elseif type(name) ~= "string" then
    fail(where, "name", "expected a string, got %s", describe(name))
  elseif runtime.name_problem(name) then
    fail(where, "name", "%s", runtime.name_problem(name))
  end

  local arch = spec.arch
  if arch == nil then
    arch = host.facts().arch
  elseif type(arch) ~= "string" then
    fail(where, "arch", 'expected a string such as "x86_64" or "aarch64", got %s', describe(arch))
  elseif not arch:match("^[%w_]+$") then
    fail(where, "arch", '%q is not an architecture name; expected "x86_64" or "aarch64"', arch)
  end

  local cpus = spec.cpus
  if cpus == nil then
    cpus = config.defaults.cpus
  elseif math.type(cpus) == nil then
    fail(where, "cpus", "expected a whole number, got %s", describe(cpus))
  elseif not math.tointeger(cpus) then
    fail(where, "cpus", "%s is not a whole number", tostring(cpus))
  end
  cpus = math.tointeger(cpus)

  local memory = spec.memory
  if memory == nil then
    memory = config.defaults.memory
  else
    local bytes, err = size.check(memory)
    if not bytes then fail(where, "memory", err) end
    memory = bytes
  end

  local accel, accel_by = accel_field(where, spec.accel)

  local console = spec.console
  if console == nil then
    console = { kind = "console", stdio = false, where = where }
  elseif not config.is(console, "console") then
    fail(where, "console", 'expected vmlua.console{...} or vmlua.console "stdio", got %s', describe(console))
  else
    console = copy(console)
  end

  return {
    name = name,
    arch = arch,
    accel = accel,
    accel_by = accel_by,
    cpus = cpus,
    memory = memory,
    boot = boot_field(where, spec.boot, arch, name),
    disks = devices(where, "disks", spec.disks, "disk", "vmlua.disk"),
    net = lan_macs(devices(where, "net", spec.net, { nat = true, lan = true }, "vmlua.nat{...} or vmlua.lan"), name),
    shares = devices(where, "shares", spec.shares, "share", "vmlua.share"),
    console = console,
    reboot = bool_field(where, "reboot", spec.reboot, false),
    agent = bool_field(where, "agent", spec.agent, false),
    qemu = qemu_field(where, spec.qemu),
    cloudinit = cloudinit_field(where, spec.cloudinit),
    backend = backend_field(where, spec.backend),
    ssh = spec.ssh ~= nil and require("vmlua.ssh").field(where, spec.ssh, { name = name,
                                                                           cloudinit = spec.cloudinit ~= nil }) or nil,
    where = where,
  }
end

-- config.add(cfg, device, level): appends a disk, a NAT device, a LAN or a share; `level`
-- as for config.vm.
function config.add(cfg, device, level)
  local where = where_of(level)
  if config.is(device, "disk") then
    cfg.disks[#cfg.disks + 1] = copy(device)
  elseif config.is(device, "nat") or config.is(device, "lan") then
    cfg.net[#cfg.net + 1] = lan_macs({ copy(device) }, cfg.name)[1]
  elseif config.is(device, "share") then
    cfg.shares[#cfg.shares + 1] = copy(device)
  elseif config.is(device) then
    local field = device.kind == "console" and "console" or "boot"
    fail(where, "add", "a %s is not a device to add; set it with vmlua.vm{ %s = ... }", device.kind, field)
  else
    fail(where, "add", "expected a device made by vmlua.disk{...}, vmlua.nat{...}, vmlua.lan{...} or "
      .. "vmlua.share{...}, got %s",
      describe(device))
  end
  return cfg
end

-- A resolved configuration as JSON, and back: an instance's keeper and a
-- snapshot rebuild the VM from it. Lists that JSON cannot tell from
-- objects when empty come back as lists.
function config.encode(cfg)
  return core.json_encode(cfg)
end

-- config.decode of a file: the configuration, or nil, why and (when the
-- file cannot be opened) true.
function config.load(path)
  local f, err = io.open(path)
  if not f then return nil, err, true end
  local text = f:read("a")
  f:close()
  return config.decode(text)
end

function config.decode(text)
  local cfg, err = core.json_decode(text)
  if type(cfg) ~= "table" then return nil, "not a VM configuration: " .. tostring(err) end
  for _, key in ipairs { "name", "arch", "cpus", "memory", "console" } do
    if cfg[key] == nil then return nil, "not a VM configuration: no " .. key end
  end
  cfg.disks, cfg.net, cfg.shares, cfg.qemu = cfg.disks or {}, cfg.net or {}, cfg.shares or {}, cfg.qemu or {}
  for _, n in ipairs(cfg.net) do
    if n.kind ~= "lan" then n.forward = n.forward or {} end
  end
  if cfg.boot and cfg.boot.kind == "linux" then cfg.boot.cmdline = cfg.boot.cmdline or {} end
  cfg.cpus, cfg.memory = math.tointeger(cfg.cpus), math.tointeger(cfg.memory)
  return cfg
end

return config
