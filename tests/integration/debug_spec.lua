-- VMLUA_DEBUG=qmp: every QMP message vmlua sends and receives, on stderr;
-- -q silences notices, not this.
local core = require "vmlua.core"
local guest = require "support.guest"
local helpers = require "support.helpers"

local BIN = os.getenv("VMLUA_BIN") or "build/bin/vmlua"

describe("VMLUA_DEBUG=qmp", function()
  after_each(guest.cleanup)

  it("shows the QMP traffic on stderr", function()
    local dir = guest.tmpdir()
    local files = guest.files("x86_64")
    local script = helpers.write(dir .. "/vm.lua", string.format([[
local vmlua = require "vmlua"
local vm = vmlua.vm { name = %q, arch = "x86_64", memory = "256M",
  boot = vmlua.linux { kernel = %q, initrd = %q } }
vm:start()
print(vm:qmp_command("query-status").status)
vm:kill()
]], "debug-" .. core.getpid(), files.kernel, files.initrd))
    local run = "timeout 120 " .. helpers.shell_quote(BIN) .. " -q " .. helpers.shell_quote(script)
    local p = assert(io.popen("VMLUA_DEBUG=qmp " .. run .. " 2>" .. helpers.shell_quote(dir .. "/err")))
    local out = p:read("a")
    local _, _, code = p:close()
    local f = assert(io.open(dir .. "/err"))
    local err = f:read("a")
    f:close()
    assert.are.equal(0, code, err)
    assert.are.equal("running\n", out)
    assert.matches('\nvmlua: qmp: <%- {"QMP":', "\n" .. err)
    assert.matches('\nvmlua: qmp: %-> {[^\n]*"execute":"qmp_capabilities"', err)
    assert.matches('\nvmlua: qmp: %-> {[^\n]*"execute":"query%-status"', err)
    assert.matches('\nvmlua: qmp: <%- {"return": {[^\n]*"status": "running"', err)
    assert.is_nil(err:find("vmlua: [^q]"), err) -- -q: nothing but the traffic
  end)
end)
