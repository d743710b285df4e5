-- cloud-init: the Debian guest of scripts/build-debian.sh (which has
-- cloud-init) configures itself from a NoCloud seed that vmlua builds: a
-- marker file, its host name, and root's ssh key, a key of the VM's own
-- that vmlua made (not the key baked into the image).
local core = require "vmlua.core"
local store = require "vmlua.instance.store"
local vmlua = require "vmlua"
local cli = require "support.cli"
local guest = require "support.guest"

local read = require("vmlua.runtime").read_file

describe("a cloud-init seed", function()
  local name

  after_each(function()
    guest.cleanup()
    if name then -- the VM's key lives in its state directory: a spec leaves none behind
      local paths = store.paths(name)
      os.remove(paths.key)
      os.remove(paths.key .. ".pub")
      os.remove(paths.dir)
    end
  end)

  it("configures the Debian guest, which lets vmlua in with the VM's own key", function()
    local image = guest.debian()
    name = "cloudinit-" .. core.getpid()
    local vm = vmlua.vm {
      name = name, arch = "x86_64", cpus = 2, memory = "1G",
      boot = vmlua.linux { kernel = image .. "vmlinuz", initrd = image .. "initrd.img",
                           cmdline = { "root=/dev/vda", "rw" } },
      disks = { vmlua.disk { path = guest.tmpdir() .. "/debian.qcow2", base = image .. "root.ext4" } },
      net = { vmlua.nat { forward = { [0] = 22 } } },
      ssh = { user = "root" },
      -- a text: vmlua adds its key as a second MIME part, which cloud-init merges
      cloudinit = vmlua.cloudinit { user_data = [[
#cloud-config
write_files:
  - path: /root/marker
    content: "seeded by vmlua\n"
runcmd:
  - [ sh, -c, "echo ran > /root/runcmd" ]
]] },
    }
    local key = vm.config.ssh.key
    assert.are.equal(store.paths(name).key, key)
    assert.are_not.equal(image .. "id_ed25519", key)
    vm:start()
    assert.are.equal(tonumber("600", 8), core.stat(key).mode)
    vm:wait_ssh { timeout = 300 }
    assert.are.same({ "seeded by vmlua\n", 0 }, { vm:ssh("cat /root/marker") })
    assert.are.same({ name .. "\n", 0 }, { vm:ssh("hostname") })
    -- runcmd runs late in the boot (cloud-final): wait for cloud-init to finish
    local status = vm:ssh("cloud-init status --wait >/dev/null; cloud-init status", { timeout = 300 })
    assert.matches("status: done", status)
    assert.are.same({ "ran\n", 0 }, { vm:ssh("cat /root/runcmd") })
    -- root trusts the VM's key, as the seed said (and vm:ssh used it: IdentitiesOnly)
    local pub = read(key .. ".pub"):match("^(%S+ %S+)")
    local authorized = vm:ssh("cat /root/.ssh/authorized_keys")
    assert.truthy(authorized:find(pub, 1, true), authorized)
    -- the seed is a read-only disk after the root, labelled cidata
    assert.are.same({ "cidata\n", 0 }, { vm:ssh("blkid -s LABEL -o value /dev/vdb") })
    -- a table is written as #cloud-config and JSON: the guest's cloud-init takes it as valid
    local as_table = vmlua.vm { name = name .. "-t", boot = vmlua.linux { kernel = image .. "vmlinuz" },
      ssh = { user = "dev" },
      cloudinit = vmlua.cloudinit { user_data = { write_files = { { path = "/m", content = "x" } },
                                                  runcmd = { { "true" } } } } }
    local text = require("vmlua.cloudinit").files(as_table.config, "ssh-ed25519 AAAA vmlua-spec")[1].text
    assert.matches("^#cloud%-config\n{", text)
    assert.are.equal(0, select(2, vm:ssh("cat > /tmp/user-data <<'EOF'\n" .. text .. "EOF")))
    local verdict, valid = vm:ssh("cloud-init schema --config-file /tmp/user-data 2>&1")
    assert.are.equal(0, valid, verdict)
    assert.matches("Valid cloud%-config", verdict)
    -- vmlua ssh NAME reaches it with the same key
    local code, out, err = cli.run({ "ssh", name, "cat", "/root/marker" }, 60)
    assert.are.same({ 0, "seeded by vmlua\n" }, { code, out }, err)
    assert.are.equal("graceful", vm:stop { timeout = 60 })
  end)
end)
