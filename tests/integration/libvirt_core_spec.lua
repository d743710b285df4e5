-- The C glue to libvirt (vmlua.core's virt_* calls) against a real, private
-- libvirtd (support.libvirtd): a busybox guest created paused, its console
-- opened before it runs, commands through the console, QMP through libvirt,
-- lifecycle and QMP events in order, a graceful shutdown, and libvirt's own
-- messages in the errors.
local core = require "vmlua.core"
local task = require "vmlua.task"
local guest = require "support.guest"

-- Calls f(..., wake) and waits for what it passes to wake.
local function await(f, ...) return task.call(120, f, ...) end

local function domain_xml(name)
  local files = guest.files("x86_64")
  return ([[
<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>%s</kernel>
    <initrd>%s</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>]]):format(name, files.kernel, files.initrd)
end

describe("the libvirt glue", function()
  local daemon, conn
  local names = 0

  local function new_name()
    names = names + 1
    return string.format("spec-virt-%d-%d", core.getpid(), names)
  end

  lazy_setup(function()
    daemon = require("support.libvirtd").start()
    local err
    conn, err = await(core.virt_connect, daemon.uri)
    assert(conn, err)
  end)

  lazy_teardown(function()
    if conn then
      local list = await(conn.domains, conn) or {}
      for _, d in ipairs(list) do
        if d.name:find("^spec%-virt%-") and d.state ~= "shutoff" then
          local dom = await(conn.lookup, conn, d.name)
          if dom then await(dom.destroy, dom) end
        end
      end
      await(conn.close, conn)
    end
    if daemon then daemon:stop() end
    guest.cleanup()
  end)

  it("boots a guest created paused, with its whole console, QMP, events in order and a graceful stop", function()
    local events, qmp = {}, {}
    local changed = task.condition()
    local name = new_name()
    conn:on_lifecycle(function(domain, event, detail)
      if domain == name then events[#events + 1] = event .. " " .. detail end
      changed.notify()
    end)
    conn:on_monitor_event(function(domain, event, data)
      if domain == name then qmp[#qmp + 1] = { event = event, data = data } end
      changed.notify()
    end)

    local dom, err = await(conn.create, conn, domain_xml(name), { paused = true, autodestroy = true })
    assert(dom, err)
    assert.are.equal(name, dom:name())
    assert.are.same({ "paused", "user" }, { await(dom.state, dom) })

    local out, ended = {}, nil
    local console
    console, err = await(dom.console, dom, {
      on_data = function(s)
        out[#out + 1] = s
        changed.notify()
      end,
      on_end = function(e)
        ended = { e }
        changed.notify()
      end,
    })
    assert(console, err)
    local function wait_output(pattern)
      assert(changed.wait(function() return table.concat(out):find(pattern) ~= nil end, 120),
             "no " .. pattern .. " in the console: " .. table.concat(out):sub(-300))
    end

    assert.is_true(await(dom.resume, dom))
    wait_output("vmlua# ")
    -- The console was open before the CPUs ran: the kernel's first line is there.
    assert.truthy(table.concat(out):find("Linux version", 1, true))

    out = {}
    assert.is_true(console:write("echo $((6 * 7))-answer\n"))
    wait_output("42%-answer")

    local reply
    reply, err = await(dom.monitor, dom, '{"execute":"query-status"}')
    assert(reply, err)
    assert.are.equal("running", core.json_decode(reply)["return"].status)

    local function count(list, item)
      local n = 0
      for _, v in ipairs(list) do
        if (type(v) == "table" and v.event or v) == item then n = n + 1 end
      end
      return n
    end
    assert.is_true(await(dom.suspend, dom))
    assert(changed.wait(function() return count(events, "suspended paused") >= 2 and count(qmp, "STOP") >= 1 end, 30))
    assert.are.same({ "paused", "user" }, { await(dom.state, dom) })
    assert.is_true(await(dom.resume, dom))
    assert(changed.wait(function() return count(events, "resumed unpaused") >= 2 and count(qmp, "RESUME") >= 2 end, 30))

    local list = await(conn.domains, conn)
    local mine
    for _, d in ipairs(list) do if d.name == name then mine = d end end
    assert.are.equal("running", mine.state)
    assert.is_number(mine.id)

    assert.is_true(await(dom.shutdown, dom))
    assert(changed.wait(function() return count(events, "stopped shutdown") == 1 and ended ~= nil end, 60),
           "the guest did not stop: " .. table.concat(events, ", "))
    assert.is_nil(ended[1]) -- the console ends cleanly with the domain

    -- Created paused: started, suspended; then resumed, suspended, resumed, shut down, stopped.
    assert.are.same({ "started booted", "suspended paused", "resumed unpaused", "suspended paused",
                      "resumed unpaused", "shutdown guest", "stopped shutdown" }, events)
    local seen = {}
    for _, e in ipairs(qmp) do
      if e.event == "STOP" or e.event == "RESUME" or (e.event == "SHUTDOWN" and #seen < 3) then
        seen[#seen + 1] = e.event
      end
    end
    assert.are.same({ "RESUME", "STOP", "RESUME" }, { seen[1], seen[2], seen[3] })
    local shutdown
    for _, e in ipairs(qmp) do
      if e.event == "SHUTDOWN" and not shutdown then shutdown = core.json_decode(e.data) end
    end
    assert.are.equal("guest-shutdown", shutdown.reason)
    assert.is_nil(console:write("too late\n"))
    conn:on_lifecycle(nil)
    conn:on_monitor_event(nil)
  end)

  it("ends the console with the domain when it is destroyed", function()
    local name = new_name()
    local dom, err = await(conn.create, conn, domain_xml(name), { paused = true, autodestroy = true })
    assert(dom, err)
    local ended
    local changed = task.condition()
    local console
    console, err = await(dom.console, dom, { on_end = function(e)
      ended = { e }
      changed.notify()
    end })
    assert(console, err)
    assert.is_true(await(dom.destroy, dom))
    assert(changed.wait(function() return ended ~= nil end, 30), "the console did not end")
    assert.matches("closed", tostring(console))
    local state, err2 = await(dom.state, dom)
    assert.is_nil(state) -- a transient domain is gone once destroyed
    assert.matches("Domain not found", err2)
  end)

  it("carries libvirt's message in its errors", function()
    local dom, err = await(conn.create, conn, "<domain type='qemu'><name>x</name>", nil)
    assert.is_nil(dom)
    assert.matches("^cannot create the domain: .*Premature end of data in tag domain", err)

    dom, err = await(conn.lookup, conn, "no-such-domain")
    assert.is_nil(dom)
    assert.matches("^cannot look up domain no%-such%-domain: Domain not found", err)

    local bad
    bad, err = await(core.virt_connect, "qemu:///system?socket=/nonexistent/vmlua-spec/sock")
    assert.is_nil(bad)
    assert.matches("^cannot connect to qemu:///system%?socket=/nonexistent/vmlua%-spec/sock: "
                   .. "Failed to connect socket to '/nonexistent/vmlua%-spec/sock'", err)
  end)

  it("reads the host's free memory and lists domains", function()
    local bytes, err = await(conn.free_memory, conn)
    assert(bytes, err)
    assert.is_true(bytes > 0 and bytes <= core.host().memory, tostring(bytes))
    local list
    list, err = await(conn.domains, conn)
    assert(list, err)
    assert.is_table(list)
  end)

  it("saves a running guest into a file and restores it paused, with its memory", function()
    local name = new_name()
    local dom, err = await(conn.create, conn, domain_xml(name), { paused = true, autodestroy = true })
    assert(dom, err)
    local out = ""
    local changed = task.condition()
    local function on_data(s)
      out = out .. s
      changed.notify()
    end
    local console = assert(await(dom.console, dom, { on_data = on_data }))
    assert.is_true(await(dom.resume, dom))
    assert(changed.wait(function() return out:find("vmlua# ") end, 120), "no prompt: " .. out:sub(-300))
    console:write("echo kept-in-memory > /tmp/mark\n")
    assert(changed.wait(function() return out:find("vmlua# [^\n]*\n.*vmlua# ") end, 30))

    local dir = guest.tmpdir()
    assert.is_true(await(dom.save, dom, dir .. "/saved"))
    assert.matches("Domain not found", select(2, await(dom.state, dom)))
    err = select(2, await(conn.restore, conn, dir .. "/missing", nil))
    assert.matches("^cannot restore the domain from " .. dir:gsub("%p", "%%%0") .. "/missing: .*No such file", err)
    assert.is_true(await(conn.restore, conn, dir .. "/saved", { paused = true }))
    local back = assert(await(conn.lookup, conn, name))
    assert.are.equal("paused", (await(back.state, back)))
    out = ""
    console = assert(await(back.console, back, { on_data = on_data }))
    assert.is_true(await(back.resume, back))
    console:write("cat /tmp/mark\n")
    assert(changed.wait(function() return out:find("kept%-in%-memory\r?\n") end, 30), "no mark: " .. out)
    assert.is_true(await(back.destroy, back))
  end)

  it("tells when the daemon goes away, and fails calls with libvirt's message", function()
    local other = require("support.libvirtd").start()
    local ok, err = pcall(function()
      local c = assert(await(core.virt_connect, other.uri))
      local reason
      local changed = task.condition()
      c:on_close(function(why)
        reason = why
        changed.notify()
      end)
      c:on_lifecycle(function() end) -- waits for events: keeps the loop alive
      other:stop()
      assert(changed.wait(function() return reason ~= nil end, 30), "no on_close")
      assert.are.equal("eof", reason)
      local bytes, msg = await(c.free_memory, c)
      assert.is_nil(bytes)
      assert.matches("^cannot read the host's free memory: .+", msg)
      await(c.close, c)
    end)
    other:stop()
    assert(ok, err)
  end)

  it("refuses calls on a closed connection", function()
    local c, err = await(core.virt_connect, daemon.uri)
    assert(c, err)
    assert.matches("open", tostring(c))
    await(c.close, c)
    c:close() -- twice is fine
    assert.matches("closed", tostring(c))
    assert.has_error(function() c:free_memory(function() end) end,
                     "the libvirt connection to " .. daemon.uri .. " is closed")
  end)
end)
