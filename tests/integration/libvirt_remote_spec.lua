-- A libvirt host reached over ssh: a private sshd on 127.0.0.1
-- (support.sshd) in front of a private libvirtd (support.libvirtd), through
-- libvirt's own ssh client (qemu+libssh://, the sshd's generated keys and
-- known_hosts). The busybox guest's kernel and initrd are uploaded into a
-- pool of that host by content (vmlua.libvirt.upload), a second start
-- uploads nothing, a writable disk is uploaded once under the VM's name
-- (sparse: its holes stay holes), and the guest boots from the uploaded
-- files to its prompt on a console streamed over the same connection.
local core = require "vmlua.core"
local task = require "vmlua.task"
local config = require "vmlua.config"
local domain = require "vmlua.libvirt.domain"
local upload = require "vmlua.libvirt.upload"
local guest = require "support.guest"
local helpers = require "support.helpers"
local libvirtd = require "support.libvirtd"
local sshd = require "support.sshd"

local usable, why = libvirtd.usable()
if usable then usable, why = sshd.usable() end

-- Calls f(..., wake) and waits for what it passes to wake.
local function await(f, ...) return task.call(120, f, ...) end

local function sha256(path)
  return await(core.sha256_file, path)
end

-- The bytes a file has on disk (du's count).
local function allocated(path)
  local _, out = libvirtd.run { "du", "--block-size=1", path }
  return tonumber(out:match("^%d+"))
end

local function by_name(list)
  local t = {}
  for _, v in ipairs(list) do t[v.name] = v end
  return t
end

local function actions(plan)
  local t = {}
  for _, item in ipairs(plan) do t[item.field] = item.action end
  return t
end

describe("a remote libvirt host (qemu+libssh through a private sshd)", function()
  if not usable then
    pending("remote libvirt specs: " .. tostring(why))
    return
  end
  local daemon, server, conn, pool
  local pool_name, pool_dir = "vmlua-spec", nil
  local count = 0

  local function new_cfg(fields)
    count = count + 1
    local files = guest.files("x86_64")
    local t = {
      name = string.format("spec-remote-%d-%d", core.getpid(), count), arch = "x86_64", memory = "256M",
      boot = config.linux { kernel = files.kernel, initrd = files.initrd },
    }
    for k, v in pairs(fields or {}) do t[k] = v end
    return config.vm(t, 2)
  end

  lazy_setup(function()
    daemon = libvirtd.start()
    server = sshd.start { libvirt_run = daemon.dir .. "/run" }
    local err
    conn, err = await(core.virt_connect, server:uri())
    assert(conn, err)
    -- The host's pool: a directory of the fixture's, as a transient dir pool.
    pool_dir = daemon.dir .. "/pool"
    pool, err = await(conn.create_pool, conn, string.format(
      "<pool type='dir'><name>%s</name><target><path>%s</path></target></pool>", pool_name, pool_dir))
    assert(pool, err)
  end)

  lazy_teardown(function()
    if conn then
      for _, d in ipairs(await(conn.domains, conn) or {}) do
        if d.name:find("^spec%-remote%-") and d.state ~= "shutoff" then
          local dom = await(conn.lookup, conn, d.name)
          if dom then await(dom.destroy, dom) end
        end
      end
      if pool then pool:free() end
      await(conn.close, conn)
    end
    if server then server:stop() end
    if daemon then daemon:stop() end
    guest.cleanup()
  end)

  it("reaches the private daemon through the sshd, and only with the generated key", function()
    assert.truthy(conn:uri():find("^qemu%+libssh://root@127%.0%.0%.1:%d+/system%?"))
    assert.is_table(await(conn.domains, conn))
    assert.truthy(server:log():find("Accepted publickey for root", 1, true))
    -- A known_hosts file without this host's key: libvirt refuses the host.
    local empty = guest.tmpdir() .. "/known_hosts"
    io.open(empty, "w"):close()
    local other, err = await(core.virt_connect, (server:uri():gsub("known_hosts=[^&]*", "known_hosts=" .. empty)))
    assert.is_nil(other)
    assert.truthy(err:find("cannot connect", 1, true), err)
  end)

  it("uploads kernel and initrd once, named by their content, and a second start uploads nothing", function()
    local cfg = new_cfg()
    local files, plan = upload.prepare(conn, pool_name, cfg, { dry = true })
    assert(files, plan)
    assert.are.same({ ["boot.kernel"] = "would upload", ["boot.initrd"] = "would upload" }, actions(plan))
    assert.are.same({}, await(pool.volumes, pool)) -- a dry run uploads nothing

    plan = select(2, assert(upload.prepare(conn, pool_name, cfg)))
    assert.are.same({ ["boot.kernel"] = "upload", ["boot.initrd"] = "upload" }, actions(plan))
    local volumes = by_name(await(pool.volumes, pool))
    for _, item in ipairs(plan) do
      local hex = sha256(item.path)
      assert.are.equal("vmlua-sha256-" .. hex, item.volume)
      local v = volumes[item.volume]
      assert(v, "no volume " .. item.volume)
      assert.truthy(volumes[item.volume .. ".ok"], "no marker for " .. item.volume)
      assert.are.equal(pool_dir .. "/" .. item.volume, v.path)
      assert.are.equal(item.host, v.path)
      assert.are.equal(core.stat(item.path).size, v.capacity)
      assert.are.equal(hex, sha256(v.path)) -- the "host" is this machine: the bytes arrived whole
      assert.are.equal(core.stat(item.path).size, item.bytes)
    end

    -- Another VM with the same files: nothing is sent.
    local again
    files, again = upload.prepare(conn, pool_name, new_cfg())
    assert(files, again)
    assert.are.same({ ["boot.kernel"] = "reuse", ["boot.initrd"] = "reuse" }, actions(again))
    assert.are.equal(plan[1].host, files(cfg.boot.kernel))
    assert.are.equal(4, #await(pool.volumes, pool))

    -- An upload cut short leaves no marker: once it has stopped growing, that volume is sent again.
    assert.is_true(await(pool.delete, pool, plan[2].volume .. ".ok"))
    local stall = upload.stall
    upload.stall = 1
    local ok, sent, err = pcall(upload.prepare, conn, pool_name, new_cfg())
    upload.stall = stall
    assert(ok and sent, tostring(sent) .. " " .. tostring(err))
    again = err
    assert.are.same({ ["boot.kernel"] = "reuse", ["boot.initrd"] = "upload" }, actions(again))
    assert.are.equal(sha256(plan[2].path), sha256(again[2].host))
  end)

  it("sends the same bytes once when two starts upload them at once: the other waits until they are whole", function()
    local kernel = guest.copy(guest.files("x86_64").initrd, guest.tmpdir() .. "/unique")
    local f = assert(io.open(kernel, "ab"))
    f:write(string.format("%d-%d", core.getpid(), math.random(1e9))) -- bytes no earlier spec sent
    f:close()
    local hex = sha256(kernel)
    local results, done = {}, 0
    for i = 1, 2 do
      task.spawn(function()
        local ok, files, plan = pcall(upload.prepare, conn, pool_name,
                                      new_cfg { boot = config.linux { kernel = kernel } })
        local r = { ok = ok, files = files, plan = plan }
        if ok and files then -- what the host has as this start goes on
          r.marked = by_name(await(pool.volumes, pool))["vmlua-sha256-" .. hex .. ".ok"] ~= nil
          r.hash = sha256(files(kernel))
        end
        results[i], done = r, done + 1
      end)
    end
    local deadline = core.now() + 120
    while done < 2 and core.now() < deadline do task.sleep(0.1) end
    assert.are.equal(2, done)
    local seen = {}
    for _, r in ipairs(results) do
      assert(r.ok and r.files, tostring(r.plan))
      assert.is_true(r.marked, "a start went on before the upload was whole")
      assert.are.equal(hex, r.hash)
      seen[#seen + 1] = actions(r.plan)["boot.kernel"]
    end
    table.sort(seen)
    assert.are.same({ "reuse", "upload" }, seen)
  end)

  it("uploads a writable disk once under the VM's name, holes as holes; then the host's copy is the disk", function()
    local disk = guest.tmpdir() .. "/data.ext4"
    assert.are.equal(0, libvirtd.run { "cp", "--sparse=always", guest.files("x86_64").data, disk })
    assert.is_true(core.stat(disk).size > 2 * allocated(disk), "the copy is not sparse")
    local cfg = new_cfg { disks = { config.disk { path = disk } } }
    local plan = select(2, assert(upload.prepare(conn, pool_name, cfg)))
    local item = plan[#plan]
    assert.are.equal("disks[1].path", item.field)
    assert.are.equal("upload", item.action)
    assert.are.equal("vmlua-" .. cfg.name .. "-disk1", item.volume)
    local v = by_name(await(pool.volumes, pool))[item.volume]
    assert.are.equal(core.stat(disk).size, v.capacity)
    assert.is_true(v.allocation < v.capacity // 2, "the holes were sent as data: " .. v.allocation)
    assert.is_true(allocated(v.path) < v.capacity // 2, "the holes on the host are data")
    assert.are.equal(sha256(disk), sha256(v.path))

    -- The guest's disk lives on the host now: a changed local file is not sent again.
    local f = assert(io.open(disk, "r+b"))
    f:write("changed")
    f:close()
    plan = select(2, assert(upload.prepare(conn, pool_name, cfg)))
    assert.are.equal("reuse", plan[#plan].action)
    assert.are_not.equal(sha256(disk), sha256(v.path))
  end)

  it("boots the guest from the uploaded files, with its console over the remote connection", function()
    local cfg = new_cfg()
    local files = assert(upload.prepare(conn, pool_name, cfg))
    local xml = assert(domain.xml(cfg, { files = files }))
    assert.is_nil(xml:find(cfg.boot.kernel, 1, true)) -- the host's paths, not this machine's
    assert.truthy(xml:find(pool_dir .. "/vmlua-sha256-", 1, true))

    local changed, events = task.condition(), {}
    conn:on_lifecycle(function(name, event)
      if name == cfg.name then events[#events + 1] = event end
      changed.notify()
    end)
    local dom, err = await(conn.create, conn, xml, { paused = true, autodestroy = true })
    assert(dom, err)
    local out = {}
    local console
    console, err = await(dom.console, dom, {
      on_data = function(s) out[#out + 1] = s; changed.notify() end,
      on_end = function() changed.notify() end,
    })
    assert(console, err)
    local function wait_output(pattern)
      assert(changed.wait(function() return table.concat(out):find(pattern) ~= nil end, 180),
             "no " .. pattern .. " on the console: " .. table.concat(out):sub(-300))
    end
    assert.is_true(await(dom.resume, dom))
    wait_output("vmlua# ")
    out = {}
    assert.is_true(console:write("echo $((6 * 7))-remote\n"))
    wait_output("42%-remote")

    assert.is_true(await(dom.shutdown, dom))
    assert(changed.wait(function()
      for _, e in ipairs(events) do if e == "stopped" then return true end end
    end, 120), "the guest did not power off: " .. table.concat(events, " "))
    console:close()
    conn:on_lifecycle(nil)
  end)
  it("runs a vmlua.vm{} definition unchanged: uploads, boots, runs commands and powers off", function()
    local vmlua = require "vmlua"
    local files = guest.files("x86_64")
    local vm = vmlua.vm {
      name = string.format("spec-remote-vm-%d", core.getpid()), memory = "256M",
      boot = vmlua.linux { kernel = files.kernel, initrd = files.initrd },
      backend = vmlua.libvirt { uri = server:uri(), pool = pool_name },
      net = { vmlua.nat { forward = { [0] = 80 } } },
    }
    vm:start()
    local ok, err = pcall(function()
      vm:expect("vmlua# ", { timeout = 120 })
      assert.are.same({ "x86_64\n", 0 }, { vm:run("uname -m") })
      -- the guest's port 80, on the other host, is brought back to 127.0.0.1 here by ssh
      local _, status = vm:run("mkdir -p /www && echo served-from-afar > /www/index.html && httpd -p 80 -h /www")
      assert.are.equal(0, status)
      local port = vm:ports()[80]
      assert.matches("served-from-afar", helpers.http_get(port), 1, true)
      assert.is_nil(vm.pid) -- QEMU runs on the other host
      assert.are.equal("graceful", vm:stop { timeout = 60 })
    end)
    if not ok then pcall(vm.kill, vm) end
    assert(ok, err)
    assert.are.equal("stopped", vm.state)
    assert.are.equal("stopped by vmlua", vm.reason)
  end)
end)
