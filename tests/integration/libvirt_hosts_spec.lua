-- Placement across libvirt hosts (vmlua.libvirt.hosts): the hosts a
-- definition gives and its mistakes at the user's line; the choice by free
-- memory (numbers injected, as both fixtures share this machine's memory);
-- and over two private libvirtds: a host that cannot be reached or has too
-- little memory passed over with its reason, each host's domains listed,
-- and one busybox guest run on each host.
local config = require "vmlua.config"
local connection = require "vmlua.libvirt.connection"
local core = require "vmlua.core"
local guest = require "support.guest"
local helpers = require "support.helpers"
local hosts = require "vmlua.libvirt.hosts"
local libvirtd = require "support.libvirtd"

local GiB = 1024 * 1024 * 1024
local WHERE = { short = "def.lua", line = 7 }

-- vmlua.libvirt{} objects, made as a definition makes them.
local function lv(uri, pool) return config.libvirt { uri = uri, pool = pool } end

local function spec_error(spec)
  local ok, err = pcall(hosts.spec, WHERE, spec)
  assert.is_false(ok, "no error")
  return err
end

describe("vmlua.hosts{}", function()
  it("names hosts by key, list items by their URI's host, list items first", function()
    local t = hosts.spec(WHERE, {
      lv("qemu+ssh://me@build.lan:2222/system", "vms"),
      rack2 = lv("qemu+ssh://rack2/system"),
      rack1 = lv("qemu+libssh://root@10.0.0.1/system?known_hosts=k", "default"),
    })
    assert.are.equal("hosts", t.kind)
    assert.are.same({
      { name = "build.lan", uri = "qemu+ssh://me@build.lan:2222/system", pool = "vms" },
      { name = "rack1", uri = "qemu+libssh://root@10.0.0.1/system?known_hosts=k", pool = "default" },
      { name = "rack2", uri = "qemu+ssh://rack2/system" },
    }, t.hosts)
    assert.are.same({ "localhost" }, hosts.spec(WHERE, { lv("qemu:///system") }):names())
  end)

  it("refuses what is not a host, at the definition's line, naming the field", function()
    assert.are.equal('def.lua:7: hosts.rack2: expected vmlua.libvirt{ uri = ... }, got string "qemu:///system"',
      spec_error { rack1 = lv("qemu:///system"), rack2 = "qemu:///system" })
    assert.are.equal("def.lua:7: hosts[2]: expected vmlua.libvirt{ uri = ... }, got a disk",
      spec_error { lv("qemu:///system"), config.disk { path = "/x.img" } })
    assert.matches("^def%.lua:7: hosts: no hosts; give at least one", spec_error {})
    assert.matches("^def%.lua:7: hosts: expected a table of hosts", spec_error(lv("qemu:///system")))
    assert.matches('^def%.lua:7: hosts%["rack 1"%]: "rack 1" may only use letters',
      spec_error { ["rack 1"] = lv("qemu:///system") })
    assert.are.equal("def.lua:7: hosts.b: qemu+ssh://r/system is already hosts.a; give each host once",
      spec_error { a = lv("qemu+ssh://r/system"), b = lv("qemu+ssh://r/system") })
    -- two local daemons are both "localhost": they need names
    assert.matches('^def%.lua:7: hosts%[2%]: qemu:///system%?socket=/b is named "localhost" after its URI\'s host, '
      .. "as hosts%[1%] is; name them",
      spec_error { lv("qemu:///system?socket=/a"), lv("qemu:///system?socket=/b") })
    assert.are.equal('def.lua:7: hosts.r1: "r1" is already the name of hosts[1], after its URI\'s host; '
      .. "give that one a name too", spec_error { lv("qemu+ssh://r1/system"), r1 = lv("qemu+ssh://r2/system") })
  end)

  local with_config = config.hosts and it or pending
  with_config("is vmlua.hosts, a backend of vmlua.vm{}, and hosts:on names one, errors at the user's line", function()
    local dir = helpers.tmpdir()
    finally(function() helpers.rmtree(dir) end)
    helpers.fixtures(dir)
    local head = 'local vmlua = require "vmlua"\n'
      .. 'local cluster = vmlua.hosts { a = vmlua.libvirt { uri = "qemu+ssh://a/system" },\n'
      .. '                              b = vmlua.libvirt { uri = "qemu+ssh://b/system", pool = "p" } }\n'
    local vm = helpers.vm(dir, head .. 'return vmlua.vm { backend = cluster }')
    local b = vm.config.backend
    assert.are.equal("libvirt", b.kind)
    assert.are.same({ "a", "b" }, { b.hosts[1].name, b.hosts[2].name })
    assert.is_nil(b.uri) -- chosen as it starts
    vm = helpers.vm(dir, head .. 'return vmlua.vm { backend = cluster:on("b") }')
    assert.are.same({ { name = "b", uri = "qemu+ssh://b/system", pool = "p" } }, vm.config.backend.hosts)
    assert.are.equal("b", vm.config.backend.named)
    assert.are.equal(dir .. '/def.lua:4: on: no host is named "c"; the hosts are a, b',
      helpers.error_of(dir, head .. 'return vmlua.vm { backend = cluster:on("c") }'))
    assert.are.equal(dir .. '/def.lua:4: on: no host is named "A"; did you mean "a"?',
      helpers.error_of(dir, head .. 'local x = cluster:on("A")'))
    assert.are.equal(dir .. '/def.lua:2: hosts.b: expected vmlua.libvirt{ uri = ... }, got string "qemu:///system"',
      helpers.error_of(dir, 'local vmlua = require "vmlua"\n'
        .. 'vmlua.hosts { a = vmlua.libvirt {}, b = "qemu:///system" }'))
  end)
end)

describe("placing a VM", function()
  local list = hosts.spec(WHERE, {
    a = lv("qemu+ssh://a/system"), b = lv("qemu+ssh://b/system", "big"), c = lv("qemu+ssh://c/system"),
  })
  local function choose(free, memory)
    return hosts.choose(list, { name = "dev", memory = memory or GiB }, {
      free_memory = function(h)
        local v = free[h.name]
        if type(v) == "string" then return nil, v end
        return v
      end,
    })
  end

  it("chooses the host with the most free memory, and says why", function()
    local chosen, why = choose { a = 2 * GiB, b = math.tointeger(3.5 * GiB), c = 3 * GiB }
    assert.are.same({ name = "b", uri = "qemu+ssh://b/system", pool = "big", free = math.tointeger(3.5 * GiB) }, chosen)
    assert.are.equal("b (qemu+ssh://b/system): the most free memory, 3.5 GiB (a 2 GiB, c 3 GiB)", why)
    -- the first of equals
    assert.are.equal("a", choose({ a = 3 * GiB, b = 3 * GiB, c = 3 * GiB }).name)
    assert.are.equal("c", choose({ a = 1, b = 2, c = 3 }, 1).name)
  end)

  it("passes over a host that cannot be reached or has less free memory than the VM, with the reason", function()
    local chosen, why = choose({ a = 8 * GiB, b = "cannot connect: no route", c = 2 * GiB }, 10 * GiB)
    assert.is_nil(chosen)
    assert.are.equal("cannot place vm dev on any of its 3 hosts: a (qemu+ssh://a/system): 8 GiB free, less than "
      .. "the VM's 10 GiB; b (qemu+ssh://b/system): cannot connect: no route; c (qemu+ssh://c/system): 2 GiB free, "
      .. "less than the VM's 10 GiB", why)
    chosen, why = choose({ a = 8 * GiB, b = "cannot connect: no route", c = 12 * GiB }, 10 * GiB)
    assert.are.equal("c", chosen.name)
    assert.are.equal("c (qemu+ssh://c/system): the most free memory, 12 GiB; passed over a (qemu+ssh://a/system): "
      .. "8 GiB free, less than the VM's 10 GiB; b (qemu+ssh://b/system): cannot connect: no route", why)
  end)

  it("places on the host named in the definition, and only there", function()
    local one = hosts.spec(WHERE, { a = lv("qemu+ssh://a/system") })
    one.named = "a"
    local free = function() return 4 * GiB end
    local chosen, why = hosts.choose(one, { name = "dev", memory = GiB }, { free_memory = free })
    assert.are.equal("a", chosen.name)
    assert.are.equal("a (qemu+ssh://a/system), named in the definition: 4 GiB free", why)
    chosen, why = hosts.choose(one, { name = "dev", memory = 8 * GiB }, { free_memory = free })
    assert.is_nil(chosen)
    assert.are.equal("cannot place vm dev on the host named in the definition (a): a (qemu+ssh://a/system): "
      .. "4 GiB free, less than the VM's 8 GiB", why)
  end)
end)

describe("placement over two libvirt hosts", function()
  local usable, why_not = libvirtd.usable()
  if not usable then
    pending("two private libvirtds: " .. tostring(why_not))
    return
  end
  local da, db, list
  local count = 0
  local function new_name()
    count = count + 1
    return string.format("spec-hosts-%d-%d", core.getpid(), count)
  end

  -- The domains a daemon runs, by virsh.
  local function running(d)
    local code, out, err = d:virsh { "list", "--name" }
    assert.are.equal(0, code, err)
    local names = {}
    for name in out:gmatch("%S+") do names[name] = true end
    return names
  end

  lazy_setup(function()
    da, db = libvirtd.start(), libvirtd.start()
    list = hosts.spec(WHERE, { a = lv(da.uri), b = lv(db.uri) })
  end)

  lazy_teardown(function()
    guest.cleanup()
    libvirtd.stop_all()
  end)

  it("asks each host for its free memory, keeps the chosen host's connection for the VM, lets go of the rest",
    function()
      local held = {}
      for i, d in ipairs { da, db } do
        held[i] = assert(connection.get(d.uri))
        held[i]:watch("spec-hold", {})
      end
      finally(function()
        for _, c in ipairs(held) do c:unwatch("spec-hold") end
      end)
      local chosen, why = hosts.choose(list, { name = "dev", memory = 64 * 1024 * 1024 })
      assert(chosen, why)
      assert.truthy(chosen.name == "a" or chosen.name == "b")
      assert.are.equal(chosen.name == "a" and da.uri or db.uri, chosen.uri)
      assert.is_true(chosen.free > 0)
      assert.matches("^" .. chosen.name .. " %(.*%): the most free memory, [%d.]+ [KMG]iB "
        .. "%([ab] [%d.]+ [KMG]iB%)$", why)
      local c = held[chosen.name == "a" and 1 or 2]
      local other = held[chosen.name == "a" and 2 or 1]
      assert.truthy(c.watchers.dev) -- held for the VM named dev, whose watch takes it over
      assert.are.equal(2, c.users)
      assert.are.equal(1, other.users) -- only this spec's own hold
      c:unwatch("dev")
    end)

  it("refuses every host when none has the VM's memory free, with each host's numbers", function()
    local chosen, why = hosts.choose(list, { name = "huge", memory = 1024 * 1024 * GiB })
    assert.is_nil(chosen)
    assert.matches("^cannot place vm huge on any of its 2 hosts: a %(.-%): [%d.]+ [KMG]iB free, less than the VM's "
      .. "1 PiB; b %(.-%): [%d.]+ [KMG]iB free, less than the VM's 1 PiB$", why)
  end)

  it("runs one busybox guest on each host and lists each host's domains", function()
    local placed = {} -- { name=, host= } of each guest
    if config.hosts then -- through the libvirt backend
      local vmlua = require "vmlua"
      local cluster = vmlua.hosts { a = vmlua.libvirt { uri = da.uri }, b = vmlua.libvirt { uri = db.uri } }
      local vms = {}
      finally(function() for _, vm in ipairs(vms) do pcall(vm.kill, vm) end end)
      vms[1] = guest.boot(guest.vm("x86_64", { backend = cluster:on("b") }))
      assert.are.equal("b", vms[1].config.backend.host)
      assert.are.equal(db.uri, vms[1].config.backend.uri)
      assert.matches("^b %(.*%), named in the definition", vms[1].placement)
      vms[2] = guest.boot(guest.vm("x86_64", { backend = cluster }))
      assert.matches("the most free memory", vms[2].placement)
      local out = vms[2]:run("echo $((6 * 7))")
      assert.are.equal("42", out:match("%S+"))
      for i, vm in ipairs(vms) do placed[i] = { name = vm.name, host = vm.config.backend.host } end
    else -- until the backend places VMs: domain XML on the chosen host's connection
      local domain = require "vmlua.libvirt.domain"
      local doms = {}
      finally(function()
        for _, d in ipairs(doms) do pcall(connection.call, d.dom, "destroy") end
        for _, d in ipairs(doms) do d.c:unwatch(d.name) end
      end)
      for _, which in ipairs { "b", "a" } do
        local one = hosts.spec(WHERE, { [which] = lv(which == "a" and da.uri or db.uri) })
        one.named = which
        local cfg = guest.vm("x86_64").config
        cfg.name = new_name()
        local chosen, why = hosts.choose(one, cfg)
        assert(chosen, why)
        local c = assert(connection.get(chosen.uri))
        local xml = assert(domain.xml(cfg, { accel = "tcg" }))
        local dom, err = connection.call(c.conn, "create", xml, { autodestroy = true })
        assert(dom, err)
        doms[#doms + 1] = { dom = dom, c = c, name = cfg.name }
        placed[#placed + 1] = { name = cfg.name, host = chosen.name }
      end
    end
    local daemons = { a = da, b = db }
    for _, p in ipairs(placed) do
      assert.is_true(running(daemons[p.host])[p.name], p.name .. " does not run on " .. p.host)
      assert.is_nil(running(daemons[p.host == "a" and "b" or "a"])[p.name], p.name .. " runs on both")
    end

    local listed = hosts.list(list)
    assert.are.same({ "a", "b" }, { listed[1].name, listed[2].name })
    assert.are.same({ da.uri, db.uri }, { listed[1].uri, listed[2].uri })
    local found = {}
    for _, h in ipairs(listed) do
      assert.is_nil(h.error)
      for _, d in ipairs(h.domains) do found[d.name] = h.name .. " " .. d.state end
    end
    for _, p in ipairs(placed) do assert.are.equal(p.host .. " running", found[p.name]) end
  end)

  it("passes over a host that was stopped, naming it and libvirt's reason, and lists it as unreachable", function()
    db:stop()
    local chosen, why = hosts.choose(list, { name = "dev", memory = 64 * 1024 * 1024 })
    assert(chosen, why)
    assert.are.equal("a", chosen.name)
    assert.are.equal(da.uri, chosen.uri)
    assert.matches("^a %(.-%): the most free memory, [%d.]+ [KMG]iB; passed over b %(" .. db.uri:gsub("%p", "%%%0")
      .. "%): cannot connect: Failed to connect socket to '.*libvirt%-sock'", why)
    assert(connection.get(da.uri)):unwatch("dev")

    local listed = hosts.list(list)
    assert.is_table(listed[1].domains)
    assert.is_nil(listed[2].domains)
    assert.matches("^cannot connect: Failed to connect socket to '.*libvirt%-sock'", listed[2].error)

    da:stop()
    chosen, why = hosts.choose(list, { name = "dev", memory = 64 * 1024 * 1024 })
    assert.is_nil(chosen)
    assert.matches("^cannot place vm dev on any of its 2 hosts: a %(.-%): .+; b %(.-%): .+$", why)
  end)
end)
