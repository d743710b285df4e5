-- The private libvirtd of the libvirt specs (tests/support/libvirtd.lua):
-- it boots the cached guest from domain XML, powers it off through ACPI
-- with virsh shutdown, runs beside a second one without either seeing the
-- other's guests, and when stopped leaves no libvirtd or QEMU behind and
-- the host's own libvirt directories as they were.
local core = require "vmlua.core"
local lfs = require "lfs"
local task = require "vmlua.task"
local guest = require "support.guest"
local libvirtd = require "support.libvirtd"

local as_root = libvirtd.usable() and it or pending

local read = require("vmlua.runtime").read_file

local count = 0
-- Writes the XML of a transient domain booting the cached busybox guest,
-- its serial console logged to a file; returns the XML's path, the domain's
-- name and the console log's path.
local function domain_xml(d)
  local files = guest.files("x86_64")
  count = count + 1
  local name = string.format("fixture-%d-%d", core.getpid(), count)
  local console = d.dir .. "/" .. name .. ".console"
  local xml = string.format([[
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
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='file'><source path='%s'/></serial>
  </devices>
</domain>
]], name, files.kernel, files.initrd, console)
  local path = d.dir .. "/" .. name .. ".xml"
  local f = assert(io.open(path, "w"))
  f:write(xml)
  f:close()
  return path, name, console
end

-- Waits until pred() holds, at most `seconds`; whether it did.
local function within(seconds, pred)
  local deadline = core.now() + seconds
  while not pred() do
    if core.now() > deadline then return false end
    task.sleep(0.2)
  end
  return true
end

-- Creates the domain and waits for the guest's shell prompt on its console.
local function boot(d)
  local xml, name, console = domain_xml(d)
  local code, out, err = d:virsh { "create", xml }
  assert(code == 0, "virsh create failed: " .. out .. err .. "\n" .. (read(d:qemu_log(name)) or ""))
  assert(within(120, function() return (read(console) or ""):find("vmlua# ", 1, true) end),
         "no prompt; the console shows:\n" .. (read(console) or ""))
  return name
end

-- The names of the domains that run under d.
local function running(d)
  local code, out, err = d:virsh { "list", "--name" }
  assert(code == 0, err)
  local names = {}
  for line in out:gmatch("[^\n]+") do names[#names + 1] = line end
  return names
end

-- Every file under the host's libvirt directories: "path size mtime" lines.
local host_dirs = { "/etc/libvirt", "/var/lib/libvirt", "/var/log/libvirt", "/var/cache/libvirt", "/run/libvirt" }
local function host_state()
  local lines = {}
  local function walk(path)
    local st = lfs.symlinkattributes(path)
    if not st then return end
    lines[#lines + 1] = string.format("%s %s %d %d", path, st.mode, st.size, st.modification)
    if st.mode ~= "directory" then return end
    for name in lfs.dir(path) do
      if name ~= "." and name ~= ".." then walk(path .. "/" .. name) end
    end
  end
  for _, dir in ipairs(host_dirs) do walk(dir) end
  table.sort(lines)
  return table.concat(lines, "\n")
end

describe("the private libvirtd fixture", function()
  after_each(function()
    libvirtd.stop_all()
    guest.cleanup()
  end)

  as_root("boots the cached guest and powers it off with virsh shutdown", function()
    local d = libvirtd.start()
    assert.truthy(d.uri:find("^qemu:///system%?socket=" .. d.dir:gsub("%p", "%%%0") .. "/run/libvirt%-sock$"))
    local name = boot(d)
    assert.are.same({ name }, running(d))
    local qemus = d:qemu_pids()
    assert.are.equal(1, #qemus)

    local code, _, err = d:virsh { "shutdown", name }
    assert.are.equal(0, code, err)
    assert.is_true(within(60, function() return #running(d) == 0 end), "the domain still runs")
    assert.is_true(guest.gone_within(qemus[1], 10), "its QEMU still runs")

    local daemon, runner, dir = d.daemon_pid, d.pid, d.dir
    d:stop()
    assert.is_false(core.alive(daemon))
    assert.is_false(core.alive(runner))
    assert.is_nil(core.stat(dir))
  end)

  as_root("runs two at once apart, and stops each with its guest running, leaving nothing behind", function()
    local before = host_state()
    local a, b = libvirtd.start(), libvirtd.start()
    assert.are_not.equal(a.uri, b.uri)
    local name_a, name_b = boot(a), boot(b)
    assert.are.same({ name_a }, running(a))
    assert.are.same({ name_b }, running(b))
    local pids = {}
    for _, d in ipairs { a, b } do
      local qemus = d:qemu_pids()
      assert.are.equal(1, #qemus)
      for _, pid in ipairs { qemus[1], d.daemon_pid, d.pid } do
        assert.is_true(core.alive(pid))
        pids[#pids + 1] = pid
      end
    end

    a:stop()
    -- b still serves its guest
    assert.are.same({ name_b }, running(b))
    b:stop()
    for _, pid in ipairs(pids) do
      assert.is_false(core.alive(pid), "process " .. pid .. " is still there")
    end
    if not before:find("/run/libvirt/libvirt-sock ", 1, true) then
      assert.is_nil(core.stat("/run/libvirt/libvirt-sock"), "a libvirt-sock appeared in the host's /run/libvirt")
    end
    assert.are.equal(before, host_state())
  end)
end)
