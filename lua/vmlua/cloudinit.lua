-- cloud-init's NoCloud data source: vmlua.cloudinit { user_data =,
-- meta_data =, network_config = } and what its seed holds.
--
-- The seed is an ISO 9660 volume labelled "cidata" with the files
-- user-data, meta-data and (when given) network-config, attached to the VM
-- as a read-only virtio disk after its own disks. cloudinit/seed.lua builds
-- it at start with xorriso, into vmlua's cache, named by a hash of the
-- files' bytes: the same files are the same seed, built once.
--
-- user_data is a string that cloud-init knows by its first line
-- ("#cloud-config", "#!" for a script, ...) or a table, written as
-- "#cloud-config" and JSON (JSON is YAML). meta_data is a table; vmlua fills
-- in instance-id (the VM's name and a hash of user-data and network-config,
-- so that changed data is a new instance that cloud-init configures again)
-- and local-hostname (the VM's name). network_config is a string (network
-- config version 1 or 2, YAML) or a table (written as JSON).
--
-- With ssh = { user = ... } and no key, the VM gets a key of its own
-- (ssh.lua): its public key goes into user-data, for root with
-- disable_root: false, for another user as a users entry. A string
-- user_data becomes a MIME multipart of the user's part and vmlua's, which
-- cloud-init merges (the user's values win; lists are appended).
local core = require "vmlua.core"
local fields = require "vmlua.fields"
local runtime = require "vmlua.runtime"

local cloudinit = {}

cloudinit.LABEL = "cidata"
cloudinit.FIELDS = { "user_data", "meta_data", "network_config" }
cloudinit.tool, cloudinit.package = "xorriso", "xorriso"
-- The public key written in place of one not made yet (vmlua plan).
cloudinit.PENDING_KEY = "ssh-ed25519 (the instance's key, made at its first start)"

local fail, describe = fields.fail, fields.describe

-- What cloud-init reads from the first line of user-data (its handlers).
local STARTS = { "#cloud-config", "#!", "#include", "#cloud-boothook", "#part-handler", "## template: jinja",
                 "Content-Type:" }

local function known_start(text)
  for _, start in ipairs(STARTS) do
    if text:sub(1, #start) == start then return start end
  end
  return nil
end

-- Checks that v (at field path `field`) is data JSON can write: strings
-- (UTF-8), numbers, booleans, lists and tables with string keys.
local function check_data(where, field, v, depth)
  local t = type(v)
  if t == "string" then
    if not utf8.len(v) then fail(where, field, "the text is not UTF-8") end
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then fail(where, field, "%s is not a number JSON can hold", v) end
  elseif t == "table" then
    if depth > 32 then fail(where, field, "nested too deeply (a table that holds itself?)") end
    if next(v) ~= nil and fields.is_list(v) then
      for i, item in ipairs(v) do check_data(where, string.format("%s[%d]", field, i), item, depth + 1) end
      return
    end
    for k, item in pairs(v) do
      if type(k) ~= "string" then
        fail(where, string.format("%s[%s]", field, tostring(k)),
          "a table is a list (1, 2, 3, ...) or has names for keys, not both")
      end
      check_data(where, field .. "." .. k, item, depth + 1)
    end
  elseif t ~= "boolean" then
    fail(where, field, "expected text, a number, true/false or a table, got %s", describe(v))
  end
end

local function text_or_table(where, field, v, example)
  if v == nil then return nil end
  if type(v) == "string" then
    if not utf8.len(v) then fail(where, field, "the text is not UTF-8") end
    return v
  elseif type(v) ~= "table" then
    fail(where, field, "expected a string or a table such as %s, got %s", example, describe(v))
  end
  check_data(where, field, v, 1)
  return v
end

-- The fields of vmlua.cloudinit{}, checked: { user_data=, meta_data=, network_config= }.
function cloudinit.spec(where, spec)
  if type(spec) ~= "table" then
    fail(where, "cloudinit", 'expected a table like { user_data = "#cloud-config\\n..." }, got %s', describe(spec))
  end
  fields.check(spec, cloudinit.FIELDS, where, "vmlua.cloudinit")
  local user_data = text_or_table(where, "user_data", spec.user_data, "{ runcmd = { ... } }")
  if type(user_data) == "string" and not known_start(user_data) then
    fail(where, "user_data", 'cloud-init ignores user data that does not start with "#cloud-config" (or "#!" '
      .. 'for a script, or another of its headers); got %s', describe(user_data))
  end
  local meta = spec.meta_data
  if meta ~= nil and (type(meta) ~= "table" or (next(meta) ~= nil and fields.is_list(meta))) then
    fail(where, "meta_data", 'expected a table with named fields such as { ["instance-id"] = "dev-1" }, got %s',
      type(meta) == "table" and "a list" or describe(meta))
  end
  if meta then check_data(where, "meta_data", meta, 1) end
  local net = text_or_table(where, "network_config", spec.network_config, "{ version = 2, ethernets = { ... } }")
  if net == "" then fail(where, "network_config", "the text is empty; drop the field for cloud-init's default") end
  return { user_data = user_data, meta_data = meta, network_config = net }
end

-- Where the per-instance ssh key of the VM named `name` lives: its state
-- directory ($XDG_STATE_HOME/vmlua/NAME), which outlives its runs.
function cloudinit.key_path(name)
  return require("vmlua.instance.store").paths(name).key
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, item in pairs(v) do c[k] = copy(item) end
  return c
end

local function json(v)
  if type(v) == "table" and next(v) == nil then return "{}" end
  return core.json_encode(v, true)
end

local function append(list, item)
  list[#list + 1] = item
  return list
end

-- The cloud-config that lets `user` in with `pub`, merged into `data` (a
-- table the caller owns): what the user wrote stays.
local function add_key(data, user, pub)
  if user == "root" then
    if data.disable_root == nil then data.disable_root = false end
    data.ssh_authorized_keys = append(type(data.ssh_authorized_keys) == "table" and data.ssh_authorized_keys or {},
                                      pub)
    return data
  end
  local users = type(data.users) == "table" and data.users or { "default" }
  for _, u in ipairs(users) do
    if type(u) == "table" and u.name == user then
      u.ssh_authorized_keys = append(type(u.ssh_authorized_keys) == "table" and u.ssh_authorized_keys or {}, pub)
      data.users = users
      return data
    end
  end
  data.users = append(users, { name = user, shell = "/bin/bash", sudo = "ALL=(ALL) NOPASSWD:ALL",
                               lock_passwd = true, ssh_authorized_keys = { pub } })
  return data
end

-- A string user_data and vmlua's cloud-config as one MIME multipart that
-- cloud-init merges in order: the user's part first, then vmlua's, whose
-- Merge-Type keeps what the user set and appends to lists.
local function multipart(text, ours)
  local boundary = "vmlua-" .. core.sha256(text .. ours):sub(1, 24)
  local lines = {
    'Content-Type: multipart/mixed; boundary="' .. boundary .. '"', "MIME-Version: 1.0", "",
    "--" .. boundary, "Content-Type: text/x-not-multipart", 'Content-Disposition: attachment; filename="user-data"',
    "", text, "--" .. boundary, "Content-Type: text/cloud-config",
    "Merge-Type: dict(no_replace,recurse_list)+list(append)+str()",
    'Content-Disposition: attachment; filename="vmlua-ssh"', "", ours, "--" .. boundary .. "--", "",
  }
  return table.concat(lines, "\n")
end

local function user_data(ci, key)
  local data = ci.user_data
  if type(data) == "string" then
    if not key then return data end
    if data:sub(1, #"Content-Type:") == "Content-Type:" then
      return nil, "vmlua cannot add the instance's ssh key to a MIME multipart user_data; give it as a "
        .. "#cloud-config text or a table, or give ssh.key"
    end
    return multipart(data, "#cloud-config\n" .. json(add_key({}, key.user, key.pub)) .. "\n")
  end
  data = copy(data or {})
  if key then add_key(data, key.user, key.pub) end
  return "#cloud-config\n" .. json(data) .. "\n"
end

local function text_of(v)
  if type(v) == "table" then return json(v) .. "\n" end
  return v
end

-- The seed's files for a VM's configuration: { { name=, text= }, ... } in
-- the order they go in, or nil and why. `pub` is the instance's public
-- key (ssh.lua's instance_key), or nil when it is not made yet.
function cloudinit.files(cfg, pub)
  local ci = cfg.cloudinit
  local key
  if cfg.ssh and cfg.ssh.instance_key then
    key = { user = cfg.ssh.user, pub = (pub or cloudinit.PENDING_KEY):gsub("%s+$", "") }
  end
  local ud, why = user_data(ci, key)
  if not ud then return nil, why end
  local net = text_of(ci.network_config)
  local meta = copy(ci.meta_data or {})
  if meta["instance-id"] == nil then
    meta["instance-id"] = cfg.name .. "-" .. core.sha256(ud .. "\0" .. (net or "")):sub(1, 12)
  end
  if meta["local-hostname"] == nil then meta["local-hostname"] = cfg.name end
  local list = { { name = "user-data", text = ud }, { name = "meta-data", text = json(meta) .. "\n" } }
  if net then list[3] = { name = "network-config", text = net } end
  return list
end

-- The hash that names a seed: of each file's name, length and bytes.
function cloudinit.digest(files)
  local parts = {}
  for _, f in ipairs(files) do parts[#parts + 1] = string.format("%s\0%d\0%s", f.name, #f.text, f.text) end
  return core.sha256(table.concat(parts))
end

function cloudinit.dir()
  return runtime.cache() .. "/cloudinit"
end

function cloudinit.seed_path(files)
  return string.format("%s/%s.iso", cloudinit.dir(), cloudinit.digest(files))
end

-- The instance's public key, if it is made.
function cloudinit.public_key(cfg)
  if not (cfg.ssh and cfg.ssh.instance_key) then return nil end
  local f = io.open(cfg.ssh.key .. ".pub")
  if not f then return nil end
  local pub = f:read("l")
  f:close()
  return pub
end

-- What the seed of a VM is, without making anything (vmlua plan):
-- { seed = path|nil (nil: the key is made at start), built = whether it is
-- in the cache, files = { { name=, text= } }, key = path|nil, key_made = }.
function cloudinit.describe(cfg)
  if not cfg.cloudinit then return nil end
  local pub = cloudinit.public_key(cfg)
  local pending = cfg.ssh and cfg.ssh.instance_key and not pub
  local files, why = cloudinit.files(cfg, pub)
  local d = { files = files or {}, problem = why, key = cfg.ssh and cfg.ssh.instance_key and cfg.ssh.key or nil,
              key_made = pub ~= nil }
  if files and not pending then
    d.seed = cloudinit.seed_path(files)
    d.built = core.stat(d.seed) ~= nil
  end
  return d
end

-- The seed's path for QEMU's argv: the one made at start, else what it
-- will be, else a stand-in that says when it is known.
function cloudinit.seed_arg(cfg)
  local ci = cfg.cloudinit
  if not ci then return nil end
  if ci.seed then return ci.seed end
  local d = cloudinit.describe(cfg)
  return d.seed or (cloudinit.dir() .. "/SEED-MADE-AT-START.iso")
end

-- What this host lacks to start the VM's seed, or nil: xorriso when the
-- seed is not in the cache, ssh-keygen when the instance key is not made.
function cloudinit.problem(cfg)
  local d = cloudinit.describe(cfg)
  if not d then return nil end
  if d.problem then return "cloudinit", d.problem end
  local which = require("vmlua.host").which
  if not d.built and not which(cloudinit.tool) then
    return "cloudinit", string.format("building the seed needs %s, which is not on PATH (Debian package %s)",
                                      cloudinit.tool, cloudinit.package)
  end
  if d.key and not d.key_made and not which("ssh-keygen") then
    return "ssh", "making the instance's key needs ssh-keygen, which is not on PATH (Debian package openssh-client)"
  end
  return nil
end

return cloudinit
