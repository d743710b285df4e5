--- Placement across libvirt hosts: `vmlua.hosts{ rack1 = vmlua.libvirt{...}, ... }` as a VM's backend
-- puts each new VM on the host with the most free memory (libvirt's virNodeGetFreeMemory), or on the
-- one `hosts:on("rack1")` names; `vmlua ls` lists the domains of every host. Nothing more: libvirt
-- runs the VMs.
--
-- Hosts are named by their keys, as ssh_config's Host aliases and libvirt's uri_aliases name
-- machines; a host given as a list item is named by its URI's host ("localhost" without one).
-- @module vmlua.libvirt.hosts
local connection = require "vmlua.libvirt.connection"
local fields = require "vmlua.fields"
local size = require "vmlua.size"
local task = require "vmlua.task"

local hosts = {}

local fail = fields.fail

-- The host part of a libvirt URI: "qemu+ssh://me@rack1.lan:22/system" -> "rack1.lan".
local function uri_host(u)
  local authority = u:match("^[%w+.-]+://([^/?]*)") or ""
  authority = authority:gsub("^.*@", ""):gsub(":%d*$", "")
  authority = authority:gsub("^%[(.*)%]$", "%1") -- [::1]
  if authority == "" then return "localhost" end
  return authority
end

-- The field a host was given in: hosts[2], hosts.rack1, hosts["rack 1"].
local function field_of(key)
  if math.type(key) == "integer" then return string.format("hosts[%d]", key) end
  if key:match("^[%a_][%w_]*$") then return "hosts." .. key end
  return string.format("hosts[%q]", key)
end

local function name_problem(name)
  if #name > 64 then return string.format("%q is longer than 64 characters", name) end
  if not name:match("^[%w._-]+$") then
    return string.format("%q may only use letters, digits, '.', '_' and '-'", name)
  elseif not name:match("^%w") then
    return string.format("%q must start with a letter or a digit", name)
  end
  return nil
end

local Hosts = {}
Hosts.__index = Hosts

-- The vmlua.libvirt{} objects a hosts object was made of, for Hosts:on.
local given = setmetatable({}, { __mode = "k" })

--- Checks `vmlua.hosts{}`'s spec: libvirt hosts, named by key (`rack1 = vmlua.libvirt{...}`) or given as
-- list items (named by their URI's host). Raises "FILE:LINE: hosts.rack1: why" at `where`.
-- @tparam table where the caller's location
-- @tparam table spec the hosts
-- @treturn table `{ kind = "hosts", hosts = { { name=, uri=, pool= }, ... } }`: list items first, in
-- order, then named hosts by name; with the method `on`
function hosts.spec(where, spec)
  local is = require("vmlua.config").is
  local function describe(v)
    if is(v) then return "a " .. v.kind end
    return fields.describe(v)
  end
  local example = '{ rack1 = vmlua.libvirt{ uri = "qemu+ssh://me@rack1/system" }, ... }'
  if type(spec) ~= "table" or is(spec) then
    fail(where, "hosts", "expected a table of hosts like %s, got %s", example, describe(spec))
  end
  local keys, listed = {}, #spec
  for k in pairs(spec) do
    if type(k) == "string" then
      keys[#keys + 1] = k
    elseif math.type(k) ~= "integer" or k < 1 or k > listed then
      fail(where, "hosts", "%s is not a host name; name hosts with strings, e.g. %s", describe(k), example)
    end
  end
  table.sort(keys)
  for i = 1, listed do table.insert(keys, i, i) end
  if #keys == 0 then fail(where, "hosts", "no hosts; give at least one, e.g. %s", example) end

  local list, by_name, by_uri, objects = {}, {}, {}, {}
  for _, key in ipairs(keys) do
    local field, v = field_of(key), spec[key]
    if not is(v, "libvirt") then
      fail(where, field, "expected vmlua.libvirt{ uri = ... }, got %s", describe(v))
    end
    local name = type(key) == "string" and key or uri_host(v.uri)
    local problem = type(key) == "string" and name_problem(name)
    if problem then fail(where, field, "%s", problem) end
    local other = by_name[name] -- list items come first: `other` is one
    if other and type(key) == "string" then
      fail(where, field, "%q is already the name of %s, after its URI's host; give that one a name too", name,
        other.field)
    elseif other then
      fail(where, field, "%s is named %q after its URI's host, as %s is; name them: %s", v.uri, name,
        other.field, '{ a = vmlua.libvirt{...}, b = vmlua.libvirt{...} }')
    end
    other = by_uri[v.uri]
    if other then fail(where, field, "%s is already %s; give each host once", v.uri, other.field) end
    local h = { name = name, uri = v.uri, pool = v.pool }
    by_name[name], by_uri[v.uri] = { field = field }, { field = field }
    list[#list + 1], objects[name] = h, v
  end
  local t = setmetatable({ kind = "hosts", hosts = list }, Hosts)
  given[t] = objects
  return t
end

--- The names of the hosts, in order.
-- @treturn table
function Hosts:names()
  local names = {}
  for i, h in ipairs(self.hosts) do names[i] = h.name end
  return names
end

--- The same hosts, with every new VM placed on the one named: `backend = cluster:on("rack1")`.
-- @function on
-- @tparam string name a host's name
-- @treturn table a hosts object of that one host
Hosts.on = fields.entry(function(where, self, name)
  if getmetatable(self) ~= Hosts then
    fail(where, "on", 'call it as a method of vmlua.hosts{...}: cluster:on("rack1")')
  end
  local names = self:names()
  if type(name) ~= "string" then
    fail(where, "on", "expected a host's name (one of %s), got %s", table.concat(names, ", "), fields.describe(name))
  end
  local v = given[self] and given[self][name]
  if not v then
    local near = fields.suggest(name, names)
    if near then fail(where, "on", 'no host is named %q; did you mean "%s"?', name, near) end
    fail(where, "on", "no host is named %q; the hosts are %s", name, table.concat(names, ", "))
  end
  fields.pinned = where
  local one = require("vmlua.config").hosts { [name] = v }
  one.named = name
  return one
end)

--- How plan shows a placement: "rack1 (qemu+ssh://...), rack2 (...): the most free memory".
-- @tparam table list the hosts, as `hosts.spec` gives them (or an object with `hosts` and `named`)
-- @treturn string
function hosts.describe(list)
  local named = list.named
  list = list.hosts or list
  local out = {}
  for i, h in ipairs(list) do
    out[i] = string.format("%s (%s%s)", h.name, h.uri, h.pool and (", pool " .. h.pool) or "")
  end
  if named then return table.concat(out, ", ") .. ": named in the definition" end
  return table.concat(out, ", ") .. ": the one with the most free memory when it starts"
end

-- Queries hold a host's connection under a key of their own (no domain name has a NUL).
local queries = 0

-- Runs fn(host, conn) for each host at once, each in a task of its own, with the host's connection
-- held meanwhile; waits for them all. Returns one result table per host: { conn=, ... what fn set }.
local function each_host(list, fn)
  queries = queries + 1
  local hold = "\0hosts " .. queries
  local results, left, done = {}, #list, task.condition()
  results.hold = hold
  for i, h in ipairs(list) do
    results[i] = { host = h }
    task.spawn(function()
      local r = results[i]
      local ok, err = pcall(function()
        local c, why = connection.get(h.uri)
        if not c then -- its label shows the URI already
          local prefix = "cannot connect to " .. h.uri .. ": "
          if why and why:sub(1, #prefix) == prefix then why = "cannot connect: " .. why:sub(#prefix + 1) end
          r.problem = why
          return
        end
        r.connection = c
        c:watch(hold, {})
        fn(h, c, r)
      end)
      if not ok then r.problem = tostring(err) end
      left = left - 1
      done.notify()
    end)
  end
  done.wait(function() return left == 0 end)
  return results
end

-- Lets go of the connections each_host held, closing those no VM uses.
local function release(results)
  for _, r in ipairs(results) do
    if r.connection then r.connection:unwatch(results.hold) end
  end
end

-- "rack1 (qemu+ssh://...)"
local function label(h)
  return string.format("%s (%s)", h.name, h.uri)
end

--- Chooses the host for a new VM: of the hosts that answer and have at least the VM's memory free, the
-- one with the most free memory (the first of equals); with one named host (`hosts:on`), that one.
-- Runs in a task; asks every host at once. The chosen host's connection stays open, held under the
-- VM's name, for the backend's own watch of that name to take over (release it with
-- `connection:unwatch(cfg.name)` when no VM follows).
-- @tparam table list the hosts (`hosts.spec`'s object or its `hosts` list)
-- @tparam table cfg the VM's configuration: `name` and `memory` (bytes)
-- @tparam[opt] table opts `free_memory`: function(host) returning bytes, or nil and why; by default
-- libvirt's virNodeGetFreeMemory on the host's connection
-- @treturn table|nil the chosen `{ name=, uri=, pool=, free= }`, or nil when no host can take the VM
-- @treturn string why this host (or why none): every host that was passed over, and why
function hosts.choose(list, cfg, opts)
  opts = opts or {}
  local named = list.named
  list = list.hosts or list
  local results
  if opts.free_memory then
    results = {}
    for i, h in ipairs(list) do
      local free, why = opts.free_memory(h)
      results[i] = { host = h, free = free, problem = not free and tostring(why) or nil }
    end
  else
    results = each_host(list, function(_, c, r)
      local free, why = connection.call(c.conn, "free_memory")
      if free then r.free = free else r.problem = "cannot read its free memory: " .. tostring(why) end
    end)
  end

  local best, passed = nil, {}
  for _, r in ipairs(results) do
    local h = r.host
    if r.problem then
      passed[#passed + 1] = string.format("%s: %s", label(h), r.problem)
    elseif r.free < cfg.memory then
      passed[#passed + 1] = string.format("%s: %s free, less than the VM's %s", label(h), size.format(r.free),
        size.format(cfg.memory))
    elseif not best or r.free > best.free then
      best = r
    end
  end

  if not best then
    release(results)
    local what = named and string.format("the host named in the definition (%s)", named)
      or #list == 1 and "its one host" or string.format("any of its %d hosts", #list)
    return nil, string.format("cannot place vm %s on %s: %s", cfg.name, what, table.concat(passed, "; "))
  end

  local c = best.connection
  if c and not c.watchers[cfg.name] then c:watch(cfg.name, {}) end -- the backend's watch takes it over
  release(results)

  local h = best.host
  local why
  if named then
    why = string.format("%s, named in the definition: %s free", label(h), size.format(best.free))
  else
    local others = {}
    for _, r in ipairs(results) do
      if r ~= best and r.free and r.free >= cfg.memory then
        others[#others + 1] = string.format("%s %s", r.host.name, size.format(r.free))
      end
    end
    why = string.format("%s: the most free memory, %s", label(h), size.format(best.free))
    if #others > 0 then why = why .. string.format(" (%s)", table.concat(others, ", ")) end
  end
  if #passed > 0 then why = why .. "; passed over " .. table.concat(passed, "; ") end
  return { name = h.name, uri = h.uri, pool = h.pool, free = best.free }, why
end

--- Every host's domains, for `vmlua ls` across hosts. Runs in a task; asks every host at once.
-- @tparam table list the hosts (`hosts.spec`'s object or its `hosts` list)
-- @treturn table one entry per host, in order: `{ name=, uri=, domains = { { name=, state=, reason=, id= },
-- ... } }`, sorted by domain name, or `{ name=, uri=, error = why }` for a host that did not answer
function hosts.list(list)
  list = list.hosts or list
  local results = each_host(list, function(_, c, r)
    local domains, why = connection.call(c.conn, "domains")
    if domains then r.domains = domains else r.problem = "cannot list its domains: " .. tostring(why) end
  end)
  release(results)
  local out = {}
  for i, r in ipairs(results) do
    local h = r.host
    if r.domains then
      table.sort(r.domains, function(a, b) return a.name < b.name end)
      out[i] = { name = h.name, uri = h.uri, domains = r.domains }
    else
      out[i] = { name = h.name, uri = h.uri, error = r.problem }
    end
  end
  return out
end

return hosts
