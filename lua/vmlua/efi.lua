-- UEFI boot (vmlua.efi): the firmware's code on a read-only flash unit and
-- its variable store (boot entries, settings) on a writable one.
--
--   firmware  default: the distribution's for the VM's architecture
--             (qemu.arches[arch].firmware)
--   vars      a file of the user's, made from the firmware's template when
--             missing; default: the VM's own copy, efi-vars.fd in its state
--             directory (instance/store.lua), kept across starts of the same
--             name and removed by vmlua rm
--
-- The template is what the firmware's QEMU descriptor names as its
-- nvram-template (/usr/share/qemu/firmware/*.json), or else the file beside
-- the firmware named with VARS for CODE. A store must be its template's
-- size: OVMF_CODE_4M.fd goes with OVMF_VARS_4M.fd, not OVMF_VARS.fd. On
-- aarch64, QEMU's virt machine maps both flash units at 64 MiB.
local core = require "vmlua.core"

local efi = {}

local MiB = 1024 * 1024
efi.VIRT_FLASH = 64 * MiB

-- Where QEMU firmware descriptors live (QEMU's docs/interop/firmware.json),
-- in the order QEMU's own users search them.
function efi.descriptor_dirs()
  local home = os.getenv("HOME") or ""
  local config_home = os.getenv("XDG_CONFIG_HOME")
  if not config_home or config_home == "" then config_home = home .. "/.config" end
  return { "/etc/qemu/firmware", config_home .. "/qemu/firmware", "/usr/share/qemu/firmware",
           "/usr/local/share/qemu/firmware", "/opt/homebrew/share/qemu/firmware" }
end

local function is_file(path)
  local st = path and core.stat(path)
  return st ~= nil and st.type == "file"
end

local function real(path)
  return core.realpath(path) or path
end

local function has(list, word)
  for _, v in ipairs(type(list) == "table" and list or {}) do
    if v == word then return true end
  end
  return false
end

-- The firmware descriptors in `dirs` that map flash code to a template:
-- { executable=, template=, enrolled= }, in QEMU's order (by file name).
local function descriptors(dirs)
  local ok, lfs = pcall(require, "lfs")
  if not ok then return {} end
  local list = {}
  for _, dir in ipairs(dirs) do
    if lfs.attributes(dir, "mode") == "directory" then
      local names = {}
      for name in lfs.dir(dir) do
        if name:match("%.json$") then names[#names + 1] = name end
      end
      table.sort(names)
      for _, name in ipairs(names) do
        local f = io.open(dir .. "/" .. name)
        local d = f and core.json_decode(f:read("a"))
        if f then f:close() end
        local m = type(d) == "table" and type(d.mapping) == "table" and d.mapping or {}
        local exe, nvram = m.executable, m["nvram-template"]
        if m.device == "flash" and type(exe) == "table" and type(exe.filename) == "string"
            and type(nvram) == "table" and type(nvram.filename) == "string" then
          list[#list + 1] = { executable = exe.filename, template = nvram.filename,
                              enrolled = has(d.features, "enrolled-keys") }
        end
      end
    end
  end
  return list
end

-- The nvram-template a descriptor gives for `firmware`: one naming that
-- very path first, else one naming the same file (Debian links several
-- names to one code file) whose template has no Secure Boot keys enrolled.
local function described_template(firmware, dirs)
  local list = descriptors(dirs)
  for _, d in ipairs(list) do
    if d.executable == firmware and is_file(d.template) then return d.template end
  end
  local want = real(firmware)
  for _, d in ipairs(list) do
    if not d.enrolled and real(d.executable) == want and is_file(d.template) then return d.template end
  end
  return nil
end

-- The variable store template beside `firmware`: its name with VARS for
-- CODE (code for vars), without a Secure Boot variant's suffix.
local function sibling_template(firmware)
  local dir, base = firmware:match("^(.*/)([^/]*)$")
  if not dir then dir, base = "", firmware end
  for _, swap in ipairs { { "CODE", "VARS" }, { "code", "vars" } } do
    local name, n = base:gsub(swap[1], swap[2])
    if n > 0 then
      local plain = name:gsub("%.secboot", ""):gsub("%.ms", ""):gsub("%.snakeoil", "")
      for _, candidate in ipairs { name, plain } do
        if is_file(dir .. candidate) then return dir .. candidate end
      end
    end
  end
  return nil
end

-- efi.template(firmware, dirs) -> the variable store template for the
-- firmware (an absolute path), or nil. `dirs`: efi.descriptor_dirs().
function efi.template(firmware, dirs)
  if not firmware then return nil end
  return described_template(firmware, dirs or efi.descriptor_dirs()) or sibling_template(firmware)
end

-- The path of a VM's own variable store.
function efi.own_vars(name)
  return require("vmlua.instance.store").paths(name).efi_vars
end

-- Fills in an efi boot of the VM `name` (a copy of what vmlua.efi made):
-- firmware (the first of `candidates` that exists, unless given),
-- template, and vars (the VM's own store unless given: own = true).
function efi.resolve(boot, name, candidates)
  if not boot.firmware then
    for _, file in ipairs(candidates or {}) do
      if is_file(file) then boot.firmware = file break end
    end
  end
  boot.template = efi.template(boot.firmware)
  if not boot.vars then boot.vars, boot.own = efi.own_vars(name), true end
  boot.own = boot.own or false
  return boot
end

-- The size a variable store must have for this firmware, and why; nil when
-- nothing says.
local function store_size(boot, arch)
  local st = boot.template and core.stat(boot.template)
  if st then return st.size, "the size of its template " .. boot.template end
  if arch == "aarch64" then return efi.VIRT_FLASH, "what QEMU's virt machine maps" end
  return nil
end

local function sized(n)
  return require("vmlua.size").format(n)
end

-- Facts about an efi boot on this host that make starting the VM fail:
-- calls problem(field, message) for each. `package`: the Debian package
-- with the architecture's firmware.
function efi.check(boot, arch, package, problem, file_problem)
  if not boot.firmware then
    problem("boot.firmware", string.format("no EFI firmware found for %s; %sgive firmware = PATH", tostring(arch),
      package and ("install the Debian package " .. package .. ", or ") or ""))
  else
    local p = file_problem(boot.firmware, "r", { nonempty = true })
    if p then
      problem("boot.firmware", p)
    elseif arch == "aarch64" and core.stat(boot.firmware).size ~= efi.VIRT_FLASH then
      problem("boot.firmware", string.format("%s is %s, but QEMU's virt machine takes a flash image of exactly %s "
        .. "(Debian's is /usr/share/AAVMF/AAVMF_CODE.fd; or pad a copy: truncate -s 64M FILE)", boot.firmware,
        sized(core.stat(boot.firmware).size), sized(efi.VIRT_FLASH)))
    end
  end
  local vars = boot.vars
  if not vars then return end -- a configuration saved before vmlua kept stores
  local st = core.stat(vars)
  if st then
    local p = file_problem(vars, "rw")
    if p then return problem("boot.vars", p) end
    local want, why = store_size(boot, arch)
    if want and st.size ~= want then
      problem("boot.vars", string.format("%s is %s, but the variable store of %s is %s (%s): it is another "
        .. "firmware's; remove it to start afresh from the template", vars, sized(st.size),
        boot.firmware or "the firmware", sized(want), why))
    end
    return
  end
  local dir = vars:match("^(.*)/[^/]*$")
  if not boot.own and not (core.stat(dir ~= "" and dir or "/") or {}).type then
    problem("boot.vars", string.format("the directory %s does not exist, so %s cannot be made there", dir, vars))
  elseif boot.firmware and not boot.template then
    problem("boot.vars", string.format("%s does not exist, and no variable store template was found for %s to "
      .. "make it from (a QEMU firmware descriptor's nvram-template, or a file beside it named with VARS for CODE); "
      .. "give vars = PATH of an existing store", vars, boot.firmware))
  end
end

-- Copies `from` to a new file `to` (mode 0600) with holes where `from` has
-- zeros (AAVMF's 64 MiB store is nearly all zeros); atomically.
local function sparse_copy(from, to)
  local src, err = io.open(from, "rb")
  if not src then return nil, err end
  local tmp = to .. ".tmp"
  os.remove(tmp)
  local ok
  ok, err = core.create_file(tmp, tonumber("600", 8))
  if not ok then src:close() return nil, err or (tmp .. " exists") end
  local dst = assert(io.open(tmp, "r+b"))
  local BLOCK = 64 * 1024
  local zeros, size, hole = string.rep("\0", BLOCK), 0, false
  while true do
    local block = src:read(BLOCK)
    if not block then break end
    size = size + #block
    hole = block == zeros
    if hole then dst:seek("cur", #block) else dst:write(block) end
  end
  src:close()
  if hole then -- the file ends in a hole: its last byte gives it its size
    dst:seek("set", size - 1)
    dst:write("\0")
  end
  ok, err = dst:close()
  if not ok then os.remove(tmp) return nil, err end
  ok, err = os.rename(tmp, to)
  if not ok then os.remove(tmp) return nil, err end
  return true
end

-- Makes the variable store of a VM about to start when it is missing: a
-- copy of the template (the VM's own one in its private state directory).
-- Returns true, and whether it was made; or nil and why.
function efi.prepare(cfg)
  local boot = cfg.boot
  if not (boot and boot.kind == "efi" and boot.vars) or core.stat(boot.vars) then return true, false end
  if not boot.template then return nil, "no UEFI variable store template to make " .. boot.vars .. " from" end
  if boot.own then
    local _, err = require("vmlua.instance.store").prepare(cfg.name)
    if err then return nil, err end
  end
  local ok, err = sparse_copy(boot.template, boot.vars)
  if not ok then return nil, string.format("cannot make the UEFI variable store %s: %s", boot.vars, err) end
  return true, true
end

-- Lines for `vmlua plan`: whose store it is and what starting does to it.
function efi.describe(boot, name)
  local lines = { boot.own and string.format("this VM's own, kept across its starts (vmlua rm %s removes it)", name)
                  or "given by the definition, kept" }
  if not core.stat(boot.vars) then
    lines[2] = string.format("made from %s at the first start", boot.template or "(no template found)")
  end
  return lines
end

return efi
