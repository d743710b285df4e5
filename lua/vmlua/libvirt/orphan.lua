--- Domains that libvirt runs on after the vmlua that started them ended
-- (killed, or its host restarted): what `vmlua ls`, `stop` and `rm` know of
-- them. Each asks libvirt over a short connection of its own, with no
-- events, so that it never keeps vmlua running.
-- @module vmlua.libvirt.orphan
local core = require "vmlua.core"
local task = require "vmlua.task"

local orphan = {}

orphan.timeout = 30 -- seconds for one call
orphan.poll = 0.3   -- seconds between looks at a domain that is powering off

local function await(object, method, ...)
  return task.call(orphan.timeout, object[method], object, ...)
end

-- fn(dom) with domain `name` of `uri`; nil, why, true when there is no such domain.
local function with_domain(uri, name, fn)
  local conn, err = task.call(orphan.timeout, core.virt_connect, uri)
  if not conn then return nil, err end
  local dom
  dom, err = await(conn, "lookup", name)
  local results
  if dom then
    results = table.pack(fn(dom))
    dom:free()
  else
    results = table.pack(nil, err, tostring(err):find("Domain not found", 1, true) ~= nil)
  end
  conn:close()
  return table.unpack(results, 1, results.n)
end

--- The state libvirt gives domain `name`: "running", "paused", "shutoff"...; nil, why and true when it has none.
-- @tparam string uri the libvirt URI
-- @tparam string name the domain's name (the VM's)
-- @treturn string|nil
function orphan.state(uri, name)
  return with_domain(uri, name, function(dom) return await(dom, "state") end)
end

--- Stops domain `name`: ACPI power-off, then a destroy after `timeout` seconds (or at once with force).
-- @tparam string uri the libvirt URI
-- @tparam string name the domain's name
-- @tparam boolean force destroy at once
-- @tparam number timeout seconds for the guest to power off
-- @treturn string|nil "graceful" or "forced"; nil and why
function orphan.stop(uri, name, force, timeout)
  return with_domain(uri, name, function(dom)
    if not force then
      await(dom, "shutdown")
      local deadline = core.now() + timeout
      while core.now() < deadline do
        local state = await(dom, "state")
        if state == nil or state == "shutoff" then return "graceful" end
        task.sleep(orphan.poll)
      end
    end
    local ok, err = await(dom, "destroy")
    if not ok and not tostring(err):find("not running", 1, true) then return nil, err end
    return "forced"
  end)
end

return orphan
