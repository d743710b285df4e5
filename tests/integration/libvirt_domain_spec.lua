-- The domain XML of libvirt/domain.lua on a real libvirtd (the private one
-- of tests/support/libvirtd.lua): `virsh create` boots the cached busybox
-- guest from it to its shell prompt, a NAT forward reaches a server in the
-- guest from 127.0.0.1 (and from nowhere else), and `virsh shutdown`
-- powers the guest off through ACPI.
local core = require "vmlua.core"
local task = require "vmlua.task"
local config = require "vmlua.config"
local domain = require "vmlua.libvirt.domain"
local helpers = require "support.helpers"
local guest = require "support.guest"
local libvirtd = require "support.libvirtd"

local as_root = libvirtd.usable() and it or pending

-- The guest's serial console as a TCP server of QEMU's on 127.0.0.1:port,
-- in place of the pty that vmlua streams through libvirt's API: the spec
-- only needs to read the prompt and type a command.
local function tcp_console(xml, port)
  local serial = string.format("<serial type='tcp'><source mode='bind' host='127.0.0.1' service='%d'/>"
    .. "<protocol type='raw'/><target port='0'/></serial>", port)
  local n1, n2
  xml, n1 = xml:gsub("<serial type='pty'>.-</serial>", serial)
  xml, n2 = xml:gsub("<console type='pty'>.-</console>", "")
  assert(n1 == 1 and n2 == 1, "no pty serial console in:\n" .. xml)
  return xml
end

-- Connects to the console (retrying while QEMU starts): { text=, send=, expect=, close= }.
local function console(port, timeout)
  local c = { text = "", changed = task.condition() }
  local deadline = core.now() + timeout
  while not c.stream do
    local s, err = task.await(function(wake)
      local _, failed = core.connect_tcp("127.0.0.1", port, wake)
      if failed then wake(nil, failed) end
    end, 5)
    if s then
      c.stream = s
    else
      assert(core.now() < deadline, "cannot connect to the console on port " .. port .. ": " .. tostring(err))
      task.sleep(0.1)
    end
  end
  c.stream:read(function(data)
    if data then c.text = c.text .. data end
    c.closed = data == nil
    c.changed.notify()
  end)
  function c.send(s) assert(c.stream:write(s)) end
  -- Waits for a Lua pattern in what the console printed after `from`.
  function c.expect(pattern, seconds, from)
    local ok = c.changed.wait(function() return c.text:find(pattern, from or 1) ~= nil end, seconds)
    assert(ok, string.format("no %q on the console within %d s; it shows:\n%s", pattern, seconds, c.text))
  end
  function c.close() c.stream:close() end
  return c
end

describe("libvirt domain XML", function()
  local d

  setup(function()
    if libvirtd.usable() then d = libvirtd.start() end
  end)

  teardown(function()
    if d then d:stop() end
    guest.cleanup()
  end)

  for _, arch in ipairs { "x86_64", "aarch64" } do
    as_root(arch .. ": boots to the prompt, forwards a port from 127.0.0.1, and shuts down by ACPI", function()
      local files = guest.files(arch)
      local name = string.format("libvirt-domain-%d-%s", core.getpid(), arch)
      local host_port, console_port = assert(core.free_port("127.0.0.1")), assert(core.free_port("127.0.0.1"))
      local cfg = config.vm({
        name = name, arch = arch, memory = "256M",
        boot = config.linux { kernel = files.kernel, initrd = files.initrd },
        net = { config.nat { forward = { [host_port] = 80 } } },
      }, 2)
      if arch == "aarch64" then assert(cfg.boot.firmware, "no aarch64 firmware: install qemu-efi-aarch64") end
      local xml = assert(domain.xml(cfg))
      local file = guest.tmpdir() .. "/domain.xml"
      local f = assert(io.open(file, "w"))
      f:write(tcp_console(xml, console_port))
      f:close()
      local c
      finally(function()
        if c then c.close() end
        d:virsh { "destroy", name }
      end)

      local code, out, err = d:virsh { "create", file }
      assert(code == 0, "virsh create: " .. out .. err)
      c = console(console_port, 30)
      c.send("\n") -- a fresh prompt, should the first have come before the connection
      c.expect("vmlua# ", 180)

      local mark = #c.text
      c.send("mkdir -p /www && echo served-through-libvirt > /www/index.html && httpd -p 80 -h /www; echo httpd-$?\n")
      c.expect("httpd%-0", 60, mark)
      assert.are.same({ "0100007F" }, helpers.listeners(host_port)) -- 127.0.0.1, and nothing else
      assert.are.equal("served-through-libvirt\n", helpers.http_get(host_port))

      code, out, err = d:virsh { "shutdown", name }
      assert(code == 0, "virsh shutdown: " .. out .. err)
      local deadline, gone = core.now() + 120
      repeat
        task.sleep(0.2)
        local _, names = d:virsh { "list", "--name" }
        gone = not names:find(name, 1, true)
      until gone or core.now() > deadline
      assert(gone, "the guest did not power off; its console shows:\n" .. c.text)
    end)
  end
end)
