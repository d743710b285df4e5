-- vmlua.cloudinit{}: the fields, the seed's files (read back from the ISO
-- that xorriso builds), caching by content, and the instance's ssh key in
-- user-data.
local core = require "vmlua.core"
local cloudinit = require "vmlua.cloudinit"
local seed = require "vmlua.cloudinit.seed"
local helpers = require "support.helpers"

local function sh(cmd)
  local ok, out = helpers.sh(cmd)
  assert(ok, cmd .. ": " .. out)
  return out
end

-- The files of an ISO, by name, extracted with xorriso.
local function read_iso(iso, dir)
  sh(string.format("xorriso -osirrox on -indev %s -extract / %s", helpers.shell_quote(iso), helpers.shell_quote(dir)))
  local files = {}
  for _, name in ipairs(helpers.sorted_lines("ls -1 " .. helpers.shell_quote(dir))) do
    local f = assert(io.open(dir .. "/" .. name, "rb"))
    files[name] = f:read("a")
    f:close()
  end
  return files
end

local function volume_id(iso)
  return sh("xorriso -indev " .. helpers.shell_quote(iso) .. " -pvd_info"):match("Volume Id%s*:%s*(%S*)")
end

local function inode(path)
  return sh("stat -c %i " .. helpers.shell_quote(path))
end

describe("vmlua.cloudinit", function()
  local dir, saved_dir, saved_tool

  before_each(function()
    dir = helpers.tmpdir()
    helpers.fixtures(dir)
    saved_dir, saved_tool = cloudinit.dir, cloudinit.tool
    cloudinit.dir = function() return dir .. "/cache/cloudinit" end -- a cache of the spec's own
  end)

  after_each(function()
    cloudinit.dir, cloudinit.tool = saved_dir, saved_tool
    helpers.rmtree(dir)
  end)

  -- A VM's configuration from a definition with this cloudinit and ssh.
  local function cfg_of(cloudinit_src, ssh_src, name)
    local vm = helpers.vm(dir, string.format([[
local vmlua = require "vmlua"
return vmlua.vm { name = %q, boot = vmlua.linux { kernel = "vmlinuz" },
                  disks = { vmlua.disk { path = "root.img" } }, ssh = %s,
                  cloudinit = vmlua.cloudinit %s }
]], name or "ci", ssh_src or "nil", cloudinit_src))
    return vm.config
  end

  local function files_of(cfg, pub)
    local list = assert(cloudinit.files(cfg, pub))
    local t = {}
    for _, f in ipairs(list) do t[f.name] = f.text end
    return t, list
  end

  it("writes user-data, meta-data and network-config, and fills in instance-id and local-hostname", function()
    local files, list = files_of(cfg_of([[{ user_data = "#cloud-config\nruncmd: [ [ touch, /x ] ]\n",
                                             network_config = "version: 2\n" }]], nil, "box"))
    assert.are.same({ "user-data", "meta-data", "network-config" }, { list[1].name, list[2].name, list[3].name })
    assert.are.equal("#cloud-config\nruncmd: [ [ touch, /x ] ]\n", files["user-data"])
    assert.are.equal("version: 2\n", files["network-config"])
    local meta = core.json_decode(files["meta-data"])
    assert.are.equal("box", meta["local-hostname"])
    assert.matches("^box%-%x+$", meta["instance-id"])

    -- a table is "#cloud-config" and JSON (which YAML reads); meta_data wins over the defaults
    files = files_of(cfg_of([[{ user_data = { packages = { "curl" }, write_files = { { path = "/m", content = "x" } } },
                                meta_data = { ["instance-id"] = "mine", region = "here" } }]]))
    assert.matches("^#cloud%-config\n", files["user-data"])
    assert.are.same({ packages = { "curl" }, write_files = { { path = "/m", content = "x" } } },
                    core.json_decode(files["user-data"]:gsub("^#cloud%-config\n", "")))
    assert.are.same({ ["instance-id"] = "mine", ["local-hostname"] = "ci", region = "here" },
                    core.json_decode(files["meta-data"]))
    assert.is_nil(files["network-config"])
  end)

  it("gives changed data a new instance-id, and the same data the same", function()
    local function iid(src) return core.json_decode(files_of(cfg_of(src))["meta-data"])["instance-id"] end
    assert.are.equal(iid [[{ user_data = { runcmd = { "a" } } }]], iid [[{ user_data = { runcmd = { "a" } } }]])
    assert.are_not.equal(iid [[{ user_data = { runcmd = { "a" } } }]], iid [[{ user_data = { runcmd = { "b" } } }]])
  end)

  it("hands the instance's key to root, or to another user, keeping what the user wrote", function()
    local pub = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample vmlua-ci"
    local cfg = cfg_of([[{ user_data = { ssh_authorized_keys = { "ssh-rsa theirs" } } }]], "{}")
    assert.is_true(cfg.ssh.instance_key)
    assert.are.equal("root", cfg.ssh.user)
    local data = core.json_decode(files_of(cfg, pub)["user-data"]:gsub("^#cloud%-config\n", ""))
    assert.are.same({ "ssh-rsa theirs", pub }, data.ssh_authorized_keys)
    assert.is_false(data.disable_root) -- else cloud-init makes root's key print "log in as debian"

    cfg = cfg_of("{}", '{ user = "dev" }')
    data = core.json_decode(files_of(cfg, pub)["user-data"]:gsub("^#cloud%-config\n", ""))
    assert.are.equal("default", data.users[1])
    assert.are.equal("dev", data.users[2].name)
    assert.are.same({ pub }, data.users[2].ssh_authorized_keys)

    -- a text: a MIME multipart of the user's part and vmlua's, which cloud-init merges
    cfg = cfg_of([[{ user_data = "#cloud-config\nhostname: h\n" }]], "true")
    local text = files_of(cfg, pub)["user-data"]
    assert.matches("^Content%-Type: multipart/mixed", text)
    assert.truthy(text:find("\n#cloud-config\nhostname: h\n", 1, true))
    assert.truthy(text:find("Merge-Type: dict(no_replace,recurse_list)+list(append)+str()", 1, true))
    assert.truthy(text:find(pub, 1, true))

    -- without a seed, a key must be given
    local err = helpers.error_of(dir, [[
local vmlua = require "vmlua"
vmlua.vm { boot = vmlua.linux { kernel = "vmlinuz" }, ssh = { user = "root" } }
]])
    assert.matches("def%.lua:2: ssh%.key: expected the path of the private key, got nil; or give the VM "
      .. "cloudinit = vmlua%.cloudinit{%.%.%.}", err)
  end)

  it("builds an ISO 9660 seed labelled cidata that holds the files, with xorriso", function()
    local cfg = cfg_of([[{ user_data = { runcmd = { "true" } }, network_config = { version = 2 } }]])
    local path = assert(seed.prepare(cfg))
    assert.are.equal(path, cfg.cloudinit.seed)
    assert.matches("^" .. dir:gsub("%p", "%%%0") .. "/cache/cloudinit/%x+%.iso$", path)
    assert.are.equal(tonumber("600", 8), core.stat(path).mode)
    assert.are.equal("cidata", volume_id(path))
    local expected = files_of(cfg)
    assert.are.same(expected, read_iso(path, dir .. "/out"))
    local listing = sh("xorriso -indev " .. helpers.shell_quote(path) .. " -ls / 2>/dev/null")
    assert.truthy(listing:find("'user-data'", 1, true), listing)
  end)

  it("caches seeds by content: the same files are the same seed, built once; other files another", function()
    local cfg = cfg_of([[{ user_data = "#cloud-config\n{}\n" }]])
    local first = assert(seed.prepare(cfg))
    local made = inode(first)
    cloudinit.tool = "vmlua-no-such-xorriso" -- a second build would fail
    local again = cfg_of([[{ user_data = "#cloud-config\n{}\n" }]])
    assert.are.equal(first, assert(seed.prepare(again)))
    assert.are.equal(made, inode(first))
    local other = cfg_of([[{ user_data = "#cloud-config\n{ }\n" }]])
    local ok, err = seed.prepare(other)
    assert.is_nil(ok)
    assert.matches("cannot build the seed with vmlua%-no%-such%-xorriso", err)
    cloudinit.tool = saved_tool
    local second = assert(seed.prepare(other))
    assert.are_not.equal(first, second)
    assert.are.equal("#cloud-config\n{ }\n", read_iso(second, dir .. "/out")["user-data"])
  end)

  it("makes the instance's key once (0600), keeps it, and puts its public key in the seed's user-data", function()
    local cfg = cfg_of("{}", "{}")
    cfg.ssh.key = dir .. "/state/ci/id_ed25519"
    local path = assert(seed.prepare(cfg))
    local st = core.stat(cfg.ssh.key)
    assert.are.equal(tonumber("600", 8), st.mode)
    assert.are.equal(tonumber("700", 8), core.stat(dir .. "/state/ci").mode)
    local pub = cloudinit.public_key(cfg)
    assert.matches("^ssh%-ed25519 %S+ vmlua%-ci$", pub)
    local data = core.json_decode(read_iso(path, dir .. "/out")["user-data"]:gsub("^#cloud%-config\n", ""))
    assert.are.same({ pub }, data.ssh_authorized_keys)
    -- the next start keeps the key, and so the seed
    local cfg2 = cfg_of("{}", "{}")
    cfg2.ssh.key = cfg.ssh.key
    assert.are.equal(path, assert(seed.prepare(cfg2)))
    assert.are.equal(pub, cloudinit.public_key(cfg2))
  end)

  it("attaches the seed read-only after the VM's disks, and vmlua plan shows it without building it", function()
    local cfg = cfg_of([[{ user_data = { runcmd = { "true" } } }]])
    local args = table.concat(require("vmlua.qemu").command(cfg, require("vmlua.runtime").paths("ci")).args, " ")
    local expected = cloudinit.seed_path(assert(cloudinit.files(cfg)))
    local disk = args:find("id=disk0", 1, true)
    local at = args:find("-drive if=none,id=seed,file=" .. expected .. ",format=raw,readonly=on "
      .. "-device virtio-blk-pci,drive=seed", 1, true)
    assert.truthy(at, args)
    assert.is_true(disk < at)
    local text = require("vmlua.plan").text(cfg)
    assert.truthy(text:find("cloudinit NoCloud seed (ISO 9660, label cidata)", 1, true), text)
    assert.truthy(text:find(expected .. " (built at start)", 1, true), text)
    assert.is_nil(core.stat(expected))
    local plan = core.json_decode(require("vmlua.plan").json { cfg })
    local described = plan.vms[1].cloudinit
    assert.are.equal(expected, described.seed)
    assert.are.equal("cidata", described.label)
    assert.is_false(described.built)
    assert.matches("^#cloud%-config\n", described.files["user-data"])
  end)

  it("refuses bad fields at the definition's line", function()
    local function err_of(src)
      return helpers.error_of(dir, 'local vmlua = require "vmlua"\nvmlua.cloudinit ' .. src .. "\n")
    end
    assert.matches('def%.lua:2: user_data: cloud%-init ignores user data that does not start with "#cloud%-config"',
      err_of [[{ user_data = "runcmd: [ ls ]" }]])
    assert.matches('def%.lua:2: user_data%.runcmd%[1%]: expected text, a number, true/false or a table, got a function',
      err_of [[{ user_data = { runcmd = { print } } }]])
    assert.matches("def%.lua:2: meta_data: expected a table with named fields", err_of [[{ meta_data = "x" }]])
    assert.matches('def%.lua:2: usr_data: unknown field; did you mean "user_data"%?', err_of [[{ usr_data = "" }]])
  end)
end)
