-- The guest agent's pure parts: base64, the framing of what the agent
-- sends (0xFF resync, lines split across reads), exit statuses, the login
-- prompt check, and `agent = true` in the configuration, QEMU's argv and
-- `vmlua plan`. tests/integration/agent_spec.lua talks to a real agent.
local agent = require "vmlua.agent"
local core = require "vmlua.core"
local plan = require "vmlua.plan"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"
local helpers = require "support.helpers"

local HEAD = 'local vmlua = require "vmlua"\n'

describe("the guest agent", function()
  describe("base64", function()
    it("encodes and decodes RFC 4648's vectors", function()
      local vectors = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
                        fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
      for plain, coded in pairs(vectors) do
        assert.are.equal(coded, agent.base64_encode(plain))
        assert.are.equal(plain, agent.base64_decode(coded))
      end
    end)

    it("round-trips every byte value and ignores line breaks", function()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes)
      local coded = agent.base64_encode(all)
      assert.are.equal(all, agent.base64_decode(coded))
      assert.are.equal(all, agent.base64_decode(coded:sub(1, 40) .. "\n" .. coded:sub(41)))
    end)

    it("refuses what is not base64", function()
      assert.are.same({ nil, "not base64" }, { agent.base64_decode("Zm9") })
      assert.are.same({ nil, "not base64" }, { agent.base64_decode("Zm!v") })
      assert.are.same({ nil, "not base64" }, { agent.base64_decode("Zg=v") })
    end)
  end)

  describe("reader", function()
    it("splits lines, also across reads", function()
      local r = agent.reader()
      assert.are.same({}, r.feed('{"return": {"pi'))
      assert.are.same({ { ["return"] = { pid = 7 } }, { ["return"] = {} } },
                      r.feed('d": 7}}\n{"return": {}}\n{"ret'))
      assert.are.same({ { ["return"] = 1 } }, r.feed('urn": 1}\n'))
    end)

    it("after a resync drops everything up to the next 0xFF", function()
      local r = agent.reader()
      r.resync()
      -- the agent's answer to the 0xFF it was sent, then a stale reply, then the sync's
      assert.are.same({}, r.feed('{"error": {"class": "GenericError", "desc": "JSON parse error"}}\n'))
      assert.are.same({}, r.feed('{"return": 3}\n'))
      assert.are.same({ { ["return"] = 42 } }, r.feed('\255{"return": 42}\n'))
      r.resync()
      assert.are.same({ { ["return"] = 43 } }, r.feed('{"return": 1}\n\255{"return": 43}\n'))
    end)

    it("passes on a line that is not JSON as such", function()
      assert.are.same({ { bad = "garbage" } }, agent.reader().feed("garbage\n"))
    end)
  end)

  it("writes one request a line", function()
    local line = agent.request("guest-exec-status", { pid = 12 })
    assert.matches("\n$", line)
    assert.are.same({ execute = "guest-exec-status", arguments = { pid = 12 } }, core.json_decode(line))
  end)

  it("merges stderr into the output and gives a shell's status", function()
    assert.are.same({ "hi\noops\n", 3, false },
      { agent.outcome { exited = true, exitcode = 3, ["out-data"] = agent.base64_encode("hi\n"),
                        ["err-data"] = agent.base64_encode("oops\n") } })
    assert.are.same({ "", 0, false }, { agent.outcome { exited = true, exitcode = 0 } })
    assert.are.same({ "", 137, false }, { agent.outcome { exited = true, signal = 9 } })
    assert.are.same({ "x", 0, true },
      { agent.outcome { exited = true, exitcode = 0, ["out-data"] = "eA==", ["out-truncated"] = true } })
  end)

  it("runs the command with stderr merged, in the home directory", function()
    local script = agent.script("echo $HOME")
    assert.matches("^exec 2>&1;", script)
    assert.matches("\necho %$HOME$", script)
  end)

  it("knows a console waiting at a login prompt", function()
    assert.is_true(agent.at_login("Debian GNU/Linux 12 debian ttyS0\r\n\r\ndebian login: "))
    assert.is_true(agent.at_login("Login:"))
    assert.is_false(agent.at_login("debian login: root\r\nPassword: "))
    assert.is_false(agent.at_login("vmlua# "))
    assert.is_false(agent.at_login(""))
    assert.is_false(agent.at_login(nil))
  end)

  describe("agent = true", function()
    local dir, def
    before_each(function()
      dir = helpers.tmpdir()
      def = dir .. "/def.lua"
      helpers.fixtures(dir)
    end)
    after_each(function() helpers.rmtree(dir) end)

    local function vm(src) return helpers.vm(dir, HEAD .. src) end

    it("adds the virtio-serial port, which QEMU serves on a socket in the runtime directory", function()
      local cfg = vm('return vmlua.vm { name = "a", boot = vmlua.linux { kernel = "vmlinuz" }, agent = true }').config
      assert.is_true(cfg.agent)
      local paths = runtime.paths("a")
      local args = table.concat(qemu.command(cfg, paths).args, " ")
      local expected = "-device virtio-serial-pci,id=agent-serial -chardev socket,id=agent,path=" .. paths.dir
        .. "/qga.sock,server=on,wait=off -device virtserialport,bus=agent-serial.0,chardev=agent,"
        .. "name=org.qemu.guest_agent.0"
      assert.is_truthy(args:find(expected, 1, true), args)
      assert.matches("agent     a virtio-serial port for the QEMU guest agent", plan.text(cfg), 1, true)
      assert.is_true(core.json_decode(plan.json { cfg }).vms[1].agent)
    end)

    it("is off by default, and checked at the definition's line", function()
      local cfg = vm('return vmlua.vm { name = "b", boot = vmlua.linux { kernel = "vmlinuz" } }').config
      assert.is_false(cfg.agent)
      assert.is_nil(table.concat(qemu.command(cfg, runtime.paths("b")).args, " "):find("virtserialport"))
      assert.are.equal(def .. ':2: agent: expected true or false, got string "yes"',
        helpers.error_of(dir, HEAD .. 'local v = vmlua.vm { agent = "yes" }'))
    end)
  end)
end)
