-- What a VM would run, for people (plan.text) and programs (plan.json):
-- the resolved configuration, the accelerator and why, and the exact QEMU
-- argv.
local core = require "vmlua.core"
local fields = require "vmlua.fields"
local size = require "vmlua.size"
local host = require "vmlua.host"
local qemu = require "vmlua.qemu"
local runtime = require "vmlua.runtime"

-- What only some VMs use (disks, LANs, shares, UEFI variables, cloud-init)
-- is loaded when a VM does: use "disks" is vmlua.disks.
local function use(name)
  return require("vmlua." .. name)
end

local plan = {}

-- Quotes one argument for a POSIX shell, only when it needs it.
function plan.quote(s)
  if s ~= "" and not s:find("[^%w@%%+=:,./_-]") then return s end
  return "'" .. s:gsub("'", [['\'']]) .. "'"
end

-- The argv as shell text, an option and its value on each line.
local function command_text(args, indent)
  local lines, i = {}, 2
  lines[1] = indent .. plan.quote(args[1])
  while i <= #args do
    local line = plan.quote(args[i])
    if args[i]:sub(1, 1) == "-" and args[i + 1] and args[i + 1]:sub(1, 1) ~= "-" then
      line = line .. " " .. plan.quote(args[i + 1])
      i = i + 1
    end
    lines[#lines + 1] = indent .. "  " .. line
    i = i + 1
  end
  return table.concat(lines, " \\\n")
end

local function command(cfg)
  if not qemu.arches[cfg.arch] then return nil end
  return qemu.command(cfg, runtime.paths(cfg.name))
end

-- plan.text(cfg) -> several lines: the resolved VM and its QEMU command.
function plan.text(cfg)
  local out = {}
  local function say(fmt, ...) out[#out + 1] = fmt:format(...) end
  say("vm %s (%s)", cfg.name, fields.location(cfg.where))
  local made = plan.recipe(cfg)
  if made then
    say("  recipe    %s (%s)%s", made.name, made.where, made.extends and (", extends " .. made.extends) or "")
    for _, p in ipairs(made.params) do
      say("  param     %s = %s (%s%s)", p.name, p.text, p.source, p.env and (", " .. p.env) or "")
    end
  end
  local supported = qemu.arches[cfg.arch] ~= nil
  say("  arch      %s%s", cfg.arch, supported and "" or " (not supported)")
  if supported then
    local accel, why = qemu.accel(cfg)
    say("  accel     %s", accel and (accel .. ": " .. why) or why)
  end
  say("  cpus      %d", cfg.cpus)
  say("  memory    %s", size.format(cfg.memory))
  local boot = cfg.boot
  if not boot then
    say("  boot      none")
  elseif boot.kind == "linux" then
    say("  boot      linux kernel %s", boot.kernel)
    if boot.initrd then say("                  initrd %s", boot.initrd) end
    say("                  cmdline %s", table.concat(boot.cmdline, " "))
    if boot.firmware then
      say("                  firmware %s", boot.firmware)
    elseif cfg.arch == "aarch64" then
      say("            note: no UEFI firmware, so no ACPI: the guest never sees the power button")
      say("                  and vm:stop() forces it off after its timeout (Debian: qemu-efi-aarch64)")
    end
  else
    say("  boot      efi firmware %s (read-only)", boot.firmware or "(none found)")
    say("                vars %s", boot.vars or "(none: UEFI variables are not kept)")
    for _, line in ipairs(boot.vars and use("efi").describe(boot, cfg.name) or {}) do
      say("                     %s", line)
    end
  end
  if #cfg.disks == 0 then say("  disks     none") end
  for i, d in ipairs(cfg.disks) do
    say("  disk%-5d %s (%s, %s)", i - 1, d.path, d.format, d.readonly and "read-only" or "read-write")
    local happens = use("disks").describe(d)
    if happens then say("            %s", happens) end
  end
  if #cfg.net == 0 then say("  net       none") end
  for i, n in ipairs(cfg.net) do
    if n.kind == "lan" then
      local sw = use("lan").switch_command(n.name)
      say("  net%-6d lan %s, mac %s", i - 1, n.name, n.mac)
      say("            switch (shared by every VM on %s, ends with the last): %s", n.name, table.concat(sw.args, " "))
    elseif #n.forward == 0 then
      say("  net%-6d nat, no forwards", i - 1)
    end
    for j, f in ipairs(n.forward or {}) do
      say("  %-9s %s:%s -> guest %d/%s", j == 1 and ("net" .. (i - 1)) or "", f.address,
          f.auto and "(a free port, chosen at start)" or tostring(f.host), f.guest, f.protocol or "tcp")
    end
  end
  local paths = runtime.paths(cfg.name)
  for i, s in ipairs(cfg.shares or {}) do
    say("  share%-4d %s as tag %s (%s)", i - 1, s.host, s.tag, s.readonly and "read-only" or "read-write")
    if cfg.backend and not s.readonly then
      say("            virtiofsd: libvirt's, started and ended with the domain (its <filesystem>)")
    else
      say("            virtiofsd%s:", s.readonly and ", in a mount namespace of its own where the directory is a "
        .. "read-only bind mount" or "")
      out[#out + 1] = command_text(use("qemu.virtiofsd").command(s, i, paths).args, "              ")
    end
  end
  local seed = cfg.cloudinit and use("cloudinit").describe(cfg)
  if seed then
    say("  cloudinit NoCloud seed (ISO 9660, label %s), a read-only disk after the others", use("cloudinit").LABEL)
    say("            %s", seed.seed and (seed.seed .. (seed.built and " (in the cache)" or " (built at start)"))
      or "built at start, named by its files' hash, once the instance's key is made")
    for _, f in ipairs(seed.files) do
      local first = f.text:match("^[^\n]*")
      local meta = f.name == "meta-data" and core.json_decode(f.text)
      if type(meta) == "table" then
        first = string.format("instance-id %s, local-hostname %s", tostring(meta["instance-id"]),
                              tostring(meta["local-hostname"]))
      end
      say("            %-14s %d bytes: %s", f.name, #f.text, #first > 60 and (first:sub(1, 57) .. "...") or first)
    end
    if seed.key then
      say("  ssh       %s's key of its own, %s: %s", cfg.ssh.user, seed.key_made and "made" or "made at first start",
          seed.key)
    end
  end
  if cfg.reboot then say("  reboot    the guest may reboot: the VM runs on (no -no-reboot)") end
  if cfg.agent then say("  agent     a virtio-serial port for the QEMU guest agent; vm:run uses it when it answers") end
  local extra = cfg.qemu or {}
  if #extra > 0 then
    local quoted = {}
    for i, arg in ipairs(extra) do quoted[i] = plan.quote(arg) end
    say("  qemu      %s", table.concat(quoted, " "))
    say("            unchecked: vmlua appends these to QEMU's arguments as given")
  end
  local c = cfg.console
  if c.stdio then
    say("  console   this terminal")
  elseif c.log then
    say("  console   log %s", c.log)
  else
    say("  console   log %s (in the runtime directory)", paths.log)
  end
  local b = cfg.backend
  if b then -- libvirt runs it: its domain, and what a remote host would be sent
    if b.hosts and not b.uri then
      say("  backend   libvirt, placed as it starts on %s", use("libvirt.hosts").describe(b))
    else
      say("  backend   libvirt %s%s (%s)", b.uri, b.pool and (", pool " .. b.pool) or "", b.by or "backend")
    end
    local libvirt_uri = use "libvirt.uri"
    if b.uri and not libvirt_uri.is_local(b.uri) then
      for _, item in ipairs(use("libvirt.upload").items(cfg, paths)) do
        say("  upload    %s: %s (%s)", item.field, item.path, item.kind == "content" and "by content, once"
          or item.kind == "overlay" and "an overlay made on the host at each start" or "once, then the host's copy")
      end
    end
    local xml, problem = use("libvirt.domain").xml(cfg, { paths = paths })
    say("  domain    %s", xml and "(libvirt's XML; on a remote host its paths are the uploaded copies)"
      or problem)
    if xml then out[#out + 1] = (xml:gsub("\n$", ""):gsub("([^\n]+)", "    %1")) end
    return table.concat(out, "\n")
  end
  local cmd = command(cfg)
  if cmd then
    say("  command   (quoted for reading only: vmlua runs this argv itself, without a shell)%s",
      #extra > 0 and string.format("; its last %d, from qemu = {...}, are unchecked", #extra) or "")
    out[#out + 1] = command_text(cmd.args, "    ")
  end
  return table.concat(out, "\n")
end

-- core.json_encode writes an empty table as {}; lists use this stand-in,
-- replaced by [] in the text.
local EMPTY = "\0vmlua:empty-list\0"

local function list(t)
  if #t == 0 then return EMPTY end
  return t
end

local function where(w)
  return { file = w.source or w.short, short = w.short, line = w.line }
end

-- The recipe that made the VM and its parameters, each with its value and
-- source ("default", "command line", "environment", "caller"), or nil.
function plan.recipe(cfg)
  local recipe = package.loaded["vmlua.recipe"]
  local origin = recipe and recipe.origin(cfg)
  if not origin then return nil end
  local r, params = origin.recipe, require("vmlua.recipe.params")
  local out = {}
  for i, p in ipairs(origin.params) do
    out[i] = { name = p.name, type = p.type, value = p.value == nil and core.null or p.value, source = p.source,
                env = p.env, text = params.format(r.params[p.name], p.value) }
  end
  return { name = r.name, where = fields.location(r.where), file = r.file or core.null,
           extends = r.base and r.base.name or nil, params = out }
end

-- plan.describe(cfg) -> the VM as plain data (what plan.json writes).
function plan.describe(cfg)
  local accel, why, warning
  if qemu.arches[cfg.arch] then accel, why, warning = qemu.accel(cfg) end
  local boot
  if cfg.boot then
    boot = { kind = cfg.boot.kind, where = where(cfg.boot.where) }
    for _, k in ipairs({ "kernel", "initrd", "firmware", "vars", "template", "own" }) do boot[k] = cfg.boot[k] end
    if cfg.boot.kind == "efi" and cfg.boot.vars then boot.create = core.stat(cfg.boot.vars) == nil end
    if cfg.boot.cmdline then boot.cmdline = list(cfg.boot.cmdline) end
  end
  local disks_out, net = {}, {}
  for i, d in ipairs(cfg.disks) do
    local t = use("disks").intent(d) -- what starting the VM does to it
    disks_out[i] = { path = d.path, format = d.format, readonly = d.readonly, where = where(d.where),
                     size = t.size or core.null, create = t.create or core.null,
                     grow_from = t.grow_from or core.null, base = d.base or core.null,
                     base_format = t.base_format or core.null, ephemeral = t.ephemeral }
  end
  for i, n in ipairs(cfg.net) do
    if n.kind == "lan" then
      local p, sw = use("lan").paths(n.name), use("lan").switch_command(n.name)
      net[i] = { kind = "lan", name = n.name, mac = n.mac, where = where(n.where),
                 switch = { socket = p.switch, hold = p.hold, file = sw.file, argv = sw.args } }
    else
      local fwd = {}
      for j, f in ipairs(n.forward) do
        fwd[j] = { host = f.host, guest = f.guest, address = f.address, protocol = f.protocol or "tcp", auto = f.auto }
      end
      net[i] = { kind = "nat", forward = list(fwd), where = where(n.where) }
    end
  end
  local paths = runtime.paths(cfg.name)
  local shares = {}
  for i, s in ipairs(cfg.shares or {}) do
    shares[i] = { host = s.host, tag = s.tag, readonly = s.readonly, where = where(s.where) }
    if cfg.backend and not s.readonly then -- libvirt runs its daemon (libvirt/domain.lua)
      shares[i].socket, shares[i].daemon = core.null, "libvirt"
    else
      local d = use("qemu.virtiofsd").command(s, i, paths)
      shares[i].socket = d.socket
      shares[i].daemon = { file = d.file, argv = d.args, readonly_view = d.readonly or core.null }
    end
  end
  local cmd = command(cfg)
  local seed = cfg.cloudinit and use("cloudinit").describe(cfg)
  if seed then
    local files = {}
    for _, f in ipairs(seed.files) do files[f.name] = f.text end
    seed = { seed = seed.seed or core.null, built = seed.built == true, label = use("cloudinit").LABEL, files = files,
             key = seed.key or core.null, key_made = seed.key_made, where = where(cfg.cloudinit.where) }
  end
  return {
    name = cfg.name,
    arch = cfg.arch,
    accel = accel or core.null,
    accel_reason = why or core.null,
    warning = warning or core.null,
    cpus = cfg.cpus,
    memory = cfg.memory,
    boot = boot or core.null,
    disks = list(disks_out),
    net = list(net),
    shares = list(shares),
    reboot = cfg.reboot == true,
    agent = cfg.agent == true,
    cloudinit = seed or core.null, -- seed: null until the instance's key is made
    qemu = { args = list(cfg.qemu or {}), checked = false }, -- appended to argv as given
    console = {
      log = cfg.console.log or paths.log,
      stdio = cfg.console.stdio,
      where = where(cfg.console.where),
    },
    where = where(cfg.where),
    recipe = plan.recipe(cfg) or core.null,
    runtime = paths.dir,
    file = cmd and cmd.file or core.null,
    argv = cmd and cmd.args or EMPTY,
    backend = cfg.backend and { kind = "libvirt", uri = cfg.backend.uri or core.null,
                                pool = cfg.backend.pool or core.null, hosts = cfg.backend.hosts,
                                by = cfg.backend.by or "backend",
                                domain = use("libvirt.domain").xml(cfg, { paths = paths }) or core.null }
      or { kind = "qemu" },
  }
end

-- plan.json(cfgs) -> pretty JSON: { host = {...}, vms = [ ... ] }
function plan.json(cfgs)
  local vms = {}
  for i, cfg in ipairs(cfgs) do vms[i] = plan.describe(cfg) end
  local facts = host.facts()
  facts.accels = list(facts.accels)
  local text = core.json_encode({ host = facts, vms = list(vms) }, true)
  local token = core.json_encode(EMPTY)
  return (text:gsub(token:gsub("%p", "%%%0"), "[]"))
end

return plan
