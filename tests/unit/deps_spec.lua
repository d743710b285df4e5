-- scripts/install-deps.sh installs every Debian package that vmlua names
-- in its messages: QEMU for each architecture and its UEFI firmware.
local qemu = require "vmlua.qemu"

describe("scripts/install-deps.sh", function()
  it("installs QEMU and the firmware of every architecture", function()
    local f = assert(io.open("scripts/install-deps.sh"))
    local text = f:read("a")
    f:close()
    local listed = {}
    for body in text:gmatch("packages=%((.-)\n%)") do
      for line in body:gmatch("[^\n]+") do
        for word in line:gsub("#.*", ""):gmatch("%S+") do listed[word] = true end
      end
    end
    for arch, a in pairs(qemu.arches) do
      for _, pkg in ipairs { a.package, a.firmware_package } do
        assert.is_true(listed[pkg] == true, arch .. ": " .. pkg .. " is not installed by install-deps.sh")
      end
    end
  end)
end)
