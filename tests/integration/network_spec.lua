-- User-mode NAT on a real guest: a forwarded port reaches a server in the
-- guest, and it listens on 127.0.0.1 only unless the definition says so.
local helpers = require "support.helpers"
local guest = require "support.guest"

describe("NAT", function()
  after_each(guest.cleanup)

  it("forwards a host port on 127.0.0.1 to a server in the guest", function()
    local vmlua = require "vmlua"
    local port = 20000 + math.random(0, 20000)
    local vm = guest.vm("x86_64", { net = { vmlua.nat { forward = { [port] = 80 } } } })
    guest.boot(vm)
    local _, status = vm:run("mkdir -p /www && echo served-by-guest > /www/index.html && httpd -p 80 -h /www")
    assert.are.equal(0, status)
    assert.are.same({ "0100007F" }, helpers.listeners(port)) -- 127.0.0.1, and nothing else
    assert.are.equal("served-by-guest\n", helpers.http_get(port))
    local out = vm:run("ip -4 addr show eth0 | grep -o 'inet [0-9.]*'")
    assert.are.equal("inet 10.0.2.15\n", out)
    vm:kill()
  end)
end)
