-- LANs (vmlua.lan) and UDP forwards, without a hypervisor: the definition,
-- its errors, the MAC addresses, QEMU's argv and the plan.
local core = require "vmlua.core"
local config = require "vmlua.config"
local lan = require "vmlua.lan"
local plan = require "vmlua.plan"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"
local validate = require "vmlua.validate"

local function vm(spec)
  spec.boot = spec.boot or config.linux { kernel = "/k/vmlinuz" }
  spec.arch = spec.arch or "x86_64"
  return config.vm(spec, 2)
end

local function args_of(cfg)
  return qemu.command(cfg, runtime.paths(cfg.name), "tcg").args
end

-- The argument after each occurrence of `option` in argv.
local function values(args, option)
  local list = {}
  for i = 1, #args - 1 do
    if args[i] == option then list[#list + 1] = args[i + 1] end
  end
  return list
end

-- validate.vm's problems with the net devices (the kernel here does not exist).
local function net_problems(cfg)
  local _, _, all = validate.vm(cfg)
  local list = {}
  for _, m in ipairs(all or {}) do
    if m:find(": net%[") then list[#list + 1] = m end
  end
  return list
end

local function error_of(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return tostring(err)
end

describe("vmlua.lan", function()
  it("makes a LAN device that net and vm:add take, beside NAT", function()
    local lab = config.lan { name = "lab" }
    assert.is_true(config.is(lab, "lan"))
    local cfg = vm { name = "web", net = { config.nat { forward = { [8080] = 80 } }, lab } }
    assert.are.equal("nat", cfg.net[1].kind)
    assert.are.equal("lan", cfg.net[2].kind)
    assert.are.equal("lab", cfg.net[2].name)
    config.add(cfg, config.lan { name = "backend" }, 2)
    assert.are.equal("backend", cfg.net[3].name)
    assert.are.equal(lan.mac("web", "backend"), cfg.net[3].mac)
  end)

  it("gives each VM a stable, locally administered unicast MAC per LAN", function()
    local a = vm { name = "a", net = { config.lan { name = "lab" } } }
    local again = vm { name = "a", net = { config.lan { name = "lab" } } }
    local b = vm { name = "b", net = { config.lan { name = "lab" } } }
    local other = vm { name = "a", net = { config.lan { name = "other" } } }
    local mac = a.net[1].mac
    assert.matches("^%x%x:%x%x:%x%x:%x%x:%x%x:%x%x$", mac)
    assert.are.equal(mac, again.net[1].mac)
    assert.are_not.equal(mac, b.net[1].mac)
    assert.are_not.equal(mac, other.net[1].mac)
    local first = tonumber(mac:sub(1, 2), 16)
    assert.are.equal(2, first & 3) -- locally administered (bit 1), unicast (bit 0 clear)
    -- the same in every process: it depends on the names only
    assert.are.equal("02:61:7c:41:5f:06", lan.mac("lab-1", "lab"))
  end)

  it("survives the saved configuration (a detached instance's keeper reads it)", function()
    local cfg = vm { name = "keep", net = { config.lan { name = "lab" } } }
    local back = assert(config.decode(config.encode(cfg)))
    assert.are.same({ "lan", "lab", cfg.net[1].mac }, { back.net[1].kind, back.net[1].name, back.net[1].mac })
    assert.is_nil(back.net[1].forward)
  end)

  it("refuses a missing, wrong or unusable name at the definition's line", function()
    local line = debug.getinfo(1, "l").currentline + 1
    local err = error_of(function() config.lan {} end)
    assert.matches("lan_spec.lua:" .. line .. ": name: missing", err, 1, true)
    assert.matches("name: expected a string, got number 3", error_of(function() config.lan { name = 3 } end), 1, true)
    assert.matches('may only use letters', error_of(function() config.lan { name = "my lan" } end), 1, true)
    assert.matches("must start with a letter", error_of(function() config.lan { name = ".." } end), 1, true)
    assert.matches("longer than 32", error_of(function() config.lan { name = string.rep("x", 33) } end), 1, true)
    assert.matches('unknown field; did you mean "name"', error_of(function() config.lan { nmae = "x" } end), 1, true)
    assert.matches("net%[1%]: expected vmlua.nat{...} or vmlua.lan{...}, got string",
      error_of(function() vm { net = { "lab" } } end))
  end)

  it("refuses a VM on one LAN twice", function()
    local lab = config.lan { name = "lab" }
    local cfg = vm { name = "twice", net = { lab, lab } }
    local problems = net_problems(cfg)
    assert.are.equal(1, #problems)
    assert.matches("net%[2%]: vm twice is already on LAN lab %(net%[1%]", problems[1])
  end)

  it("plugs into the LAN's switch with QEMU's vde netdev, holding the switch's FIFO", function()
    local cfg = vm { name = "web", net = { config.nat {}, config.lan { name = "lab" } } }
    local args = args_of(cfg)
    local p = lan.paths("lab")
    assert.are.same({ "user,id=net0", "vde,id=net1,sock=" .. p.switch }, values(args, "-netdev"))
    local devices = values(args, "-device")
    assert.are.same({ "virtio-net-pci,netdev=net0", "virtio-net-pci,netdev=net1,mac=" .. cfg.net[2].mac }, devices)
    local chardevs = values(args, "-chardev")
    assert.are.equal("file,id=net1-hold,path=" .. p.hold, chardevs[#chardevs])
    assert.are.equal(runtime.root() .. "/.lan/lab", p.dir) -- private, and no VM name (a leading dot)
    assert.truthy(runtime.name_problem(".lan"))
  end)

  it("runs the switch on a private socket, with the hold FIFO as its input", function()
    local cmd = lan.switch_command("lab")
    assert.are.same({ "--sock", lan.paths("lab").switch, "--mode", "0600", "--dirmode", "0700" },
      { table.unpack(cmd.args, 2) })
  end)

  it("shows the LAN in plan text and JSON", function()
    local cfg = vm { name = "web", net = { config.nat { forward = { [8080] = 80 }, udp = { [5353] = 53 } },
                                           config.lan { name = "lab" } } }
    local text = plan.text(cfg)
    assert.matches("net1      lan lab, mac " .. cfg.net[2].mac, text, 1, true)
    assert.matches("switch (shared by every VM on lab, ends with the last): ", text, 1, true)
    assert.matches("127.0.0.1:5353 -> guest 53/udp", text, 1, true)
    assert.matches("127.0.0.1:8080 -> guest 80/tcp", text, 1, true)
    local json = core.json_decode(plan.json({ cfg }))
    local net = json.vms[1].net
    assert.are.equal("lan", net[2].kind)
    assert.are.equal("lab", net[2].name)
    assert.are.equal(cfg.net[2].mac, net[2].mac)
    assert.are.equal(lan.paths("lab").switch, net[2].switch.socket)
    assert.are.same(lan.switch_command("lab").args, net[2].switch.argv)
    local protocols = {}
    for _, f in ipairs(net[1].forward) do protocols[f.host] = f.protocol end
    assert.are.same({ [8080] = "tcp", [5353] = "udp" }, protocols)
  end)
end)

describe("NAT forwards", function()
  it("forwards several TCP and UDP ports", function()
    local cfg = vm { name = "fw", net = { config.nat { forward = { [2222] = 22, [8080] = 80 },
                                                      udp = { [5353] = 53, [6000] = 6000 } } } }
    assert.are.same({
      "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:8080-:80,"
        .. "hostfwd=udp:127.0.0.1:5353-:53,hostfwd=udp:127.0.0.1:6000-:6000",
    }, values(args_of(cfg), "-netdev"))
  end)

  it("lets a TCP and a UDP forward share a port number, but not two of one protocol", function()
    local cfg = vm { name = "both", net = { config.nat { forward = { [5353] = 53 }, udp = { [5353] = 53 } } } }
    assert.are.same({}, net_problems(cfg))
    cfg = vm { name = "twice", net = { config.nat { udp = { [5353] = 53 } }, config.nat { udp = { [5353] = 5353 } } } }
    local problems = net_problems(cfg)
    assert.are.equal(1, #problems)
    assert.matches("net%[2%]%.udp%[5353%]: host port 5353/udp is already forwarded by net%[1%]", problems[1])
  end)

  it("refuses bad UDP forwards at the definition's line", function()
    local line = debug.getinfo(1, "l").currentline + 1
    local err = error_of(function() config.nat { udp = { [70000] = 53 } } end)
    assert.matches("lan_spec.lua:" .. line .. ": udp[70000]: host port 70000 is outside 1-65535", err, 1, true)
    assert.matches("udp[0]: a free host port is chosen for TCP forwards only",
      error_of(function() config.nat { udp = { [0] = 53 } } end), 1, true)
    assert.matches("udp[1]: this forwards host port 1",
      error_of(function() config.nat { udp = { 53 } } end), 1, true)
    assert.matches("udp: expected a table",
      error_of(function() config.nat { udp = "5353:53" } end), 1, true)
  end)

end)
