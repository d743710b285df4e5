--- libvirt connection URIs: `vmlua.libvirt{}`'s fields, and which backend a
-- run uses when `--connect` or `VMLUA_BACKEND` overrides the definition.
-- @module vmlua.libvirt.uri
local fields = require "vmlua.fields"

local uri = {}

uri.DEFAULT = "qemu:///system"

-- Why s is not a libvirt URI, or nil.
local function problem(s)
  if type(s) ~= "string" then return "expected a libvirt URI string, got " .. fields.describe(s) end
  if not s:match("^[%a][%w+.-]*://") then
    return string.format('"%s" is not a libvirt URI; e.g. "qemu:///system" or "qemu+ssh://user@host/system"', s)
  end
  return nil
end

--- Checks vmlua.libvirt{}'s spec; returns `{ uri=, pool= }` or raises at `where`.
-- @tparam table where the caller's location
-- @tparam table spec `uri` (default qemu:///system), `pool` (a storage pool on the host)
-- @treturn table
function uri.spec(where, spec)
  local u = spec.uri
  if u == nil then u = uri.DEFAULT end
  local why = problem(u)
  if why then fields.fail(where, "uri", "%s", why) end
  if spec.pool ~= nil and (type(spec.pool) ~= "string" or spec.pool == "") then
    fields.fail(where, "pool", "expected the name of a libvirt storage pool, got %s", fields.describe(spec.pool))
  end
  return { uri = u, pool = spec.pool }
end

--- The backend of a VM: `--connect URI` first, then `VMLUA_BACKEND` ("qemu", "libvirt" or a URI), then the
-- definition's. Returns the fields of a vmlua.libvirt{} (with `by`: who chose it), or nil for QEMU.
-- @tparam table where the definition's location, for errors
-- @tparam table|nil defined the definition's vmlua.libvirt{}, or nil
-- @tparam string|nil connect the URI of --connect
-- @tparam string|nil env VMLUA_BACKEND
-- @treturn table|nil
function uri.choose(where, defined, connect, env)
  local pool = defined and defined.pool
  if connect then return { uri = connect, pool = pool, by = "--connect" } end
  if env and env ~= "" then
    if env == "qemu" then return nil end
    if env == "libvirt" then
      return { uri = defined and defined.uri or uri.DEFAULT, pool = pool, by = "VMLUA_BACKEND" }
    end
    local why = problem(env)
    if why then fields.fail(where, "backend", 'VMLUA_BACKEND: expected "qemu", "libvirt" or a URI; %s', why) end
    return { uri = env, pool = pool, by = "VMLUA_BACKEND" }
  end
  return defined and { uri = defined.uri, pool = defined.pool, by = "backend" }
end

--- Whether a URI names this host (no host part: qemu:///system, qemu:///session?socket=...).
-- @tparam string u the URI
-- @treturn boolean
function uri.is_local(u)
  return u:match("^[%w+.-]+:///") ~= nil
end

return uri
