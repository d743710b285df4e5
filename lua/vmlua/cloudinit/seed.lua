-- What a VM with vmlua.cloudinit{} makes as it starts: its own ssh key
-- (once, kept in its state directory across runs) and its NoCloud seed,
-- built by xorriso into the cache unless the same files are there already.
-- Commands run on the event loop (vmlua.exec), with argv arrays.
local core = require "vmlua.core"
local cloudinit = require "vmlua.cloudinit"
local exec = require "vmlua.exec"
local runtime = require "vmlua.runtime"

local seed = {}

seed.timeout = 60 -- seconds, for ssh-keygen and for xorriso

local PRIVATE = tonumber("600", 8)
local builds = 0

-- Makes `dir` and its missing parents; those it makes are private (0700),
-- and `dir` itself must be (its files may hold secrets of user-data).
local function make_dirs(dir)
  local parent = dir:match("^(.+)/[^/]+$")
  if parent and not core.stat(parent) then
    local ok, err = make_dirs(parent)
    if not ok then return nil, err end
  end
  return core.mkdir_private(dir)
end

local function run(argv)
  local ok, out, status, err = pcall(exec.run, argv, { timeout = seed.timeout })
  if not ok then return nil, tostring(out):gsub("^vmlua%.exec: ", "") end
  if status ~= 0 then
    local why = ((err ~= "" and err or out):gsub("%s+$", ""))
    return nil, string.format("%s exited with status %d%s", argv[1], status, why ~= "" and (": " .. why) or "")
  end
  return true
end

-- The instance's key pair at `key` (made now if it is not there): its public key, or nil and why.
function seed.instance_key(key, name)
  if not core.stat(key) then
    local dir = key:match("^(.*)/[^/]*$")
    local ok, err = make_dirs(dir)
    if not ok then return nil, "cannot make the directory of the instance's ssh key: " .. err end
    os.remove(key .. ".pub")
    ok, err = run { "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vmlua-" .. name, "-f", key }
    if not ok then return nil, "cannot make the instance's ssh key " .. key .. ": " .. err end
  end
  local pub = cloudinit.public_key { ssh = { instance_key = true, key = key } }
  if not pub then -- the public half was lost: derive it again
    local out, status = exec.run({ "ssh-keygen", "-y", "-f", key }, { timeout = seed.timeout })
    if status ~= 0 or not out:match("^ssh%-") then return nil, "cannot read the instance's ssh key " .. key end
    runtime.write_file(key .. ".pub", out)
    pub = out:match("^[^\n]*")
  end
  return pub
end

local function remove_tree(dir, names)
  for _, name in ipairs(names) do os.remove(dir .. "/" .. name) end
  os.remove(dir)
end

-- Builds the ISO for `files` at `path`: staged in a private directory
-- beside it, then renamed into place, so a seed in the cache is whole.
function seed.build(files, path)
  local dir = cloudinit.dir()
  local ok, err = make_dirs(dir)
  if not ok then return nil, "cannot use the cache directory " .. err end
  builds = builds + 1 -- two VMs of this process may build the same seed at once
  local tmp = string.format("%s.%d-%d.tmp", path, core.getpid(), builds)
  local stage = tmp .. ".d"
  local names = {}
  remove_tree(stage, { "user-data", "meta-data", "network-config" })
  ok, err = core.mkdir_private(stage)
  if not ok then return nil, "cannot stage the seed's files: " .. err end
  for i, f in ipairs(files) do
    names[i] = f.name
    ok, err = runtime.write_file(stage .. "/" .. f.name, f.text)
    if not ok then
      remove_tree(stage, names)
      return nil, "cannot write the seed's " .. f.name .. ": " .. tostring(err)
    end
  end
  os.remove(tmp)
  core.create_file(tmp, PRIVATE) -- xorriso writes into it, and keeps its mode
  ok, err = run { cloudinit.tool, "-as", "mkisofs", "-quiet", "-output", tmp, "-volid", cloudinit.LABEL,
                  "-joliet", "-rock", stage }
  remove_tree(stage, names)
  if ok then ok, err = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    return nil, "cannot build the seed with " .. cloudinit.tool .. ": " .. tostring(err)
  end
  return path
end

-- At start: the VM's key (when it has one of its own), its files, and its
-- seed, built unless cached. Records the seed's path in cfg.cloudinit.seed
-- (QEMU's argv reads it) and returns it, or nil and why.
function seed.prepare(cfg)
  local ci = cfg.cloudinit
  if not ci then return true end
  local pub, err
  if cfg.ssh and cfg.ssh.instance_key then
    pub, err = seed.instance_key(cfg.ssh.key, cfg.name)
    if not pub then return nil, err end
  end
  local files
  files, err = cloudinit.files(cfg, pub)
  if not files then return nil, "cloud-init seed: " .. err end
  local path = cloudinit.seed_path(files)
  if not core.stat(path) then
    path, err = seed.build(files, path)
    if not path then return nil, "cloud-init seed: " .. err end
  end
  ci.seed = path
  return path
end

return seed
