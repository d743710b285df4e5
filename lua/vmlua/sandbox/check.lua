-- What a VM defined by a sandboxed recipe may use, checked on its final
-- configuration before anything starts: files and directories only under
-- the sandbox's directories, no raw QEMU arguments, forwards on loopback.
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local paths = require "vmlua.sandbox.paths"
local qemu = require "vmlua.qemu"

local check = {}

-- Parts of a configuration that are not files on this host: where it was
-- written, the kernel's command line, the key vmlua's own ssh logs in with.
local NOT_FILES = { where = true, cmdline = true, ssh = true, name = true }

-- A plain copy of a configuration: data only, no metatables, no cycles,
-- so that nothing the recipe kept a reference to can change it later.
local function plain(v, field, seen)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return v end
  if t ~= "table" or getmetatable(v) ~= nil then
    error(string.format("%s: %s is not data", field, t == "table" and "a table with a metatable" or "a " .. t), 0)
  end
  if seen[v] then error(field .. ": a table that holds itself", 0) end
  seen[v] = true
  local copy = {}
  for k, x in next, v do
    local kt = type(k)
    if kt ~= "string" and kt ~= "number" then error(field .. ": a key that is a " .. kt, 0) end
    copy[k] = plain(x, field .. (kt == "number" and ("[" .. k .. "]") or ("." .. k)), seen)
  end
  seen[v] = nil
  return copy
end

-- The firmware vmlua itself would choose for the architecture: allowed.
local function default_firmware(arch)
  local ok = {}
  local a = qemu.arches[arch] or {}
  for _, list in ipairs { a.firmware or {}, a.linux_firmware or {} } do
    for _, file in ipairs(list) do ok[paths.resolve(file)] = true end
  end
  return ok
end

local function field_name(prefix, k)
  if type(k) == "number" then return prefix .. "[" .. k .. "]" end
  return prefix == "" and k or (prefix .. "." .. k)
end

-- Every problem of one configuration, as "FILE:LINE: FIELD: why".
local function problems(box, cfg)
  local found = {}
  local function add(where, field, fmt, ...)
    found[#found + 1] = fields.msg(where or cfg.where, field, string.format(fmt, ...))
  end
  if cfg.qemu and next(cfg.qemu) ~= nil then
    add(cfg.where, "qemu", "raw QEMU arguments are refused in the sandbox (they can open any file or device); "
      .. "run the recipe outside the sandbox once you trust it")
  end
  for i, n in ipairs(cfg.net or {}) do
    if n.address ~= nil and n.address ~= "127.0.0.1" then
      add(n.where, string.format("net[%d].address", i), "%s opens the forwarded ports beyond this host; a "
        .. "sandboxed recipe forwards on 127.0.0.1 only", tostring(n.address))
    end
  end
  local firmware = default_firmware(cfg.arch)
  local function walk(t, prefix, where)
    if type(t.where) == "table" and t.where.line then where = t.where end
    for k, v in pairs(t) do
      local name = field_name(prefix, k)
      if NOT_FILES[k] then -- luacheck: ignore 542
      elseif type(v) == "table" then
        walk(v, name, where)
      elseif type(v) == "string" and v:sub(1, 1) == "/" and not v:find("[\n\r]") then
        local dir, real = paths.inside(v, box.dirs)
        if not dir and not firmware[real] then
          add(where, name, "%s is outside what this sandboxed recipe may use (%s); allow it with --allow DIR, "
            .. "or allow = { DIR } in the options", v, paths.list(box.dirs))
        end
      end
    end
  end
  walk(cfg, "", cfg.where)
  table.sort(found)
  return found
end

-- Checks the VMs (real VM objects) the recipe defined or changed; a VM that
-- has not started gets a plain copy of its configuration first. Raises
-- with every problem, naming the recipe, and forgets the refused VMs.
function check.vms(box, vms, machine)
  local all = {}
  for _, vm in ipairs(vms) do
    if vm.state == "stopped" or vm.state == "error" then
      local ok, copy = pcall(plain, vm.config, "vm " .. tostring(vm.name), {})
      if not ok then
        all[#all + 1] = box.name .. ": " .. copy
      else
        vm.config = copy
        for _, p in ipairs(problems(box, copy)) do all[#all + 1] = p end
      end
    end
  end
  if #all == 0 then return end
  local refused = {}
  for _, vm in ipairs(vms) do refused[vm] = true end
  for i = #machine.defined, 1, -1 do
    if refused[machine.defined[i]] then table.remove(machine.defined, i) end
  end
  errors.raise(string.format("%s: refused by the sandbox:\n  %s", box.name, table.concat(all, "\n  ")))
end

return check
