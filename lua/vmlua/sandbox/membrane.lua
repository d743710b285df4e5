-- The wall between a sandboxed recipe and the host. Values crossing it are
-- converted both ways:
--   into the sandbox: a VM becomes a proxy with only its definition
--   methods (add, validate, plan) and read-only fields; another object
--   with a metatable becomes a read-only proxy; a host function becomes a
--   wrapper that converts its arguments and results; plain tables are
--   copied (the objects of vmlua.disk{} and the like pass as they are);
--   out of the sandbox: a proxy is its object again; a recipe's function
--   becomes one that runs it under the sandbox's limits (run.call); the
--   recipe's tables are copied without their metatables.
local core = require "vmlua.core"
local config = require "vmlua.config"
local errors = require "vmlua.errors"
local fields = require "vmlua.fields"
local machine = require "vmlua.machine"

local membrane = {}

local VM_METHODS = { add = true, validate = true, plan = true }
local VM_FIELDS = { name = true, state = true, reason = true, accel = true, pid = true, config = true }

local function weak() return setmetatable({}, { __mode = "k" }) end

-- The membrane's tables for a box: inside[host value] = its sandbox
-- form, outside[sandbox value] = its host form.
function membrane.init(box)
  box.inside, box.outside, box.vms = weak(), weak(), {}
end

local to_host, to_sandbox

local function all(convert, box, ...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = convert(box, t[i], {}) end
  return table.unpack(t, 1, t.n)
end

function membrane.to_host(box, ...) return all(to_host, box, ...) end
function membrane.to_sandbox(box, ...) return all(to_sandbox, box, ...) end

local function remember(box, host, inside)
  box.inside[host], box.outside[inside] = inside, host
  return inside
end

-- A function the recipe may call that raises "NAME: refused by the sandbox: WHY".
function membrane.refuse(name, why)
  return function()
    errors.raise(string.format("%s: refused by the sandbox: %s", name, why), 2)
  end
end

-- A host function for the recipe. A vmlua entry (fields.entry) sees the
-- recipe's line as its caller, so relative paths and errors are the recipe's.
local function host_function(box, f)
  return core.located(function(info, ...)
    local args = table.pack(membrane.to_host(box, ...))
    fields.pinned = fields.from_info(info)
    local r = table.pack(pcall(f, table.unpack(args, 1, args.n)))
    fields.pinned = nil
    if not r[1] then error(r[2], 0) end
    return membrane.to_sandbox(box, table.unpack(r, 2, r.n))
  end)
end

-- A recipe's function for the host: its own run, under the limits.
local function guarded(box, fn)
  return function(...)
    return box:call(function(...)
      return membrane.to_host(box, fn(membrane.to_sandbox(box, ...)))
    end, ...)
  end
end

local function vm_proxy(box, vm)
  box.vms[#box.vms + 1] = vm
  return setmetatable({}, {
    __index = function(_, k)
      if VM_METHODS[k] then return to_sandbox(box, machine.VM[k], {}) end
      if VM_FIELDS[k] then return to_sandbox(box, vm[k], {}) end
      if type(k) == "string" and type(machine.class()[k]) == "function" then
        return membrane.refuse("vm:" .. k, "a sandboxed recipe defines VMs and does not drive them; vmlua "
          .. "--sandbox starts what it defines once checked")
      end
      return nil
    end,
    __newindex = function() errors.raise("a VM is read-only in the sandbox; use vm:add()", 2) end,
    __tostring = function() return tostring(vm) end,
    __metatable = false,
  })
end

local function object_proxy(box, obj)
  local call = getmetatable(obj).__call and function(_, ...) return obj(...) end
  return setmetatable({}, {
    __call = call and to_sandbox(box, call, {}),
    __index = function(_, k)
      if type(k) == "string" and k:sub(1, 1) == "_" then return nil end
      return to_sandbox(box, obj[k], {})
    end,
    __newindex = function() errors.raise("this vmlua object is read-only in the sandbox", 2) end,
    __metatable = false,
  })
end

function to_sandbox(box, v, seen)
  local t = type(v)
  if t == "nil" or t == "boolean" or t == "number" or t == "string" then return v end
  if box.inside[v] ~= nil then return box.inside[v] end
  if t == "function" then return remember(box, v, host_function(box, v)) end
  if t ~= "table" then errors.raise("a " .. t .. " cannot pass into the sandbox", 2) end
  local mt = getmetatable(v)
  if mt == machine.VM then return remember(box, v, vm_proxy(box, v)) end
  if mt ~= nil then return remember(box, v, object_proxy(box, v)) end
  if config.is(v) then return v end
  if seen[v] then return seen[v] end
  local copy = {}
  seen[v] = copy
  for k, x in next, v do copy[to_sandbox(box, k, seen)] = to_sandbox(box, x, seen) end
  return copy
end

function to_host(box, v, seen)
  local t = type(v)
  if t == "nil" or t == "boolean" or t == "number" or t == "string" then return v end
  if box.outside[v] ~= nil then return box.outside[v] end
  if t == "function" then
    local g = guarded(box, v)
    box.outside[v], box.inside[g] = g, v
    return g
  end
  if t ~= "table" then errors.raise("a " .. t .. " cannot pass out of the sandbox", 2) end
  if config.is(v) then return v end
  if seen[v] then return seen[v] end
  local copy = {}
  seen[v] = copy
  for k, x in next, v do copy[to_host(box, k, seen)] = to_host(box, x, seen) end
  return copy
end

return membrane
